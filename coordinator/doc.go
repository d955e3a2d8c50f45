// Package coordinator is the control plane of Sluice. One or three
// coordinator nodes elect a leader with Raft (hashicorp/raft) and keep the
// control state in a replicated FSM: pipelines, runs, task states, dataset
// versions and watermarks. Only the leader plans runs into tasks, publishes
// them to the SLUICE_TASKS stream, consumes SLUICE_RESULTS, commits finished
// runs through their sink and serves the control API on sluice.api.<verb>.
// A new leader continues every unfinished run from the FSM and the durable
// streams, so no run is lost and none is committed twice. The coordinator
// never holds data rows. Client is the control API's client.
//
// # Attempts of a run
//
// A plan may depend on something only the leader that made it holds (a
// PostgreSQL source's exported snapshot: connectors.RunHolder and
// connectors.Plan.Holds, recorded in the run-planned entry). It dies with
// that leader's term. A leader that finds a running run whose plan holds
// what it does not (proactively, as soon as it leads), or one whose task
// reported the hold gone (protocol.ErrorReplan), gives up the run's attempt
// in a run-replan entry and plans the run again as its next attempt, with
// what the run was created with (its window) and task IDs of the new
// attempt's own (a2-t00000), after purging the queued tasks and removing
// the staging of the attempt given up. A late result of an earlier attempt
// names a task the run no longer has and is ignored; a late staging write
// is under a task ID no commit lists. A run fails once runAttempts attempts
// were given up; the initial snapshot of a cdc pipeline fails at the first
// and starts again as a new run on a new slot. See replan.go.
//
// # Incremental runs, watermarks and backfills
//
// A run of an incremental pipeline loads one window [lo, hi) of the
// pipeline's delta column. For a live run (sluice run) the leader computes
// it when it creates the run, with its own clock: lo is the pipeline's
// watermark (incremental.start before the first commit) and hi = min(now -
// lag, lo + window), truncated to the second. The window is recorded in
// the run-create Raft entry, so planning it again (a retry, a new leader)
// reads the same rows: the FSM never reads a clock. When hi <= lo the
// pipeline is up to date: no run is created and the reply says so
// (RunReply.UpToDate). The FSM refuses a live window that does not start
// at the watermark, and a second live run while one is in flight
// (ErrConflict), so live windows are consecutive and never overlap.
//
// The watermark moves to hi only in the Raft entry that commits the live
// run, after the sink's commit succeeded (DESIGN rule 4): a failed run
// leaves it, and the next run loads the same window again. Runs with an
// explicit window (a re-run: RunRequest.Window, sluice run --window) and
// backfill runs never move the watermark, forward or backward.
//
// A backfill (VerbBackfill, sluice backfill) splits [from, to) into windows
// of the pipeline's window, starting at from (the last may be shorter).
// The FSM keeps them queued; the leader creates their runs, the way it
// creates every run (each with a trace of its own), when the backfill
// starts, when one of its runs ends and on every sweep. Each run-create
// entry names the backfill and the window, and the FSM creates the run
// only while the window is queued and fewer than concurrency run, marking
// it running in the same entry: at most concurrency run at once whatever
// the leader or the client does, and a new leader goes on from the queue.
// Every committed window of a pipeline (live, re-run or backfill) is added
// to the pipeline's loaded ranges; a backfill marks the windows those ranges
// cover as skipped unless Replace is set, when they load again and their
// rows are replaced. to must not pass now - lag. One backfill per pipeline
// runs at a time.
//
// # Windows of integer values, lookback, merge and checks
//
// A pipeline whose incremental.window is a number of values (Span) has
// windows of an integer delta column (protocol.Window with Values). The
// leader creates a live run with the window [watermark, watermark + span)
// (or up to the largest integer, with max_rows_per_run only): a cap, not
// a promise, since the values past the greatest one written do not exist
// yet. The run records how its plan must end it (runState.Trim); the
// source ends the window where the column's values end in its snapshot
// (connectors.PlanRequest.Trim) and the run-planned entry records the
// window read, so a new attempt or a new leader reads the same one; the
// commit moves the watermark (an integer) to its end, only forward. With
// incremental.lookback a live window, of values or of time, starts that
// many windows before the watermark (never before incremental.start): the
// FSM checks that start (state.liveStart). A run's commit carries the
// spec's incremental.merge as it was when the run was created
// (runState.Merge), and the sink merges the window's rows by key instead
// of replacing them. `sluice check` (apiCheck) asks the source and the
// sink (connectors.WindowSummer) to count and checksum each window of a
// range below the watermark and, to repair, starts a backfill of exactly
// the windows that differ (backfillCmd.Windows).
//
// # Runs by position
//
// A pipeline with incremental.by reads a source that keeps a position of
// its own (connectors.Positions: Kafka offsets, an Iceberg snapshot, the
// files a directory received). Its runs have no window and are live: the
// run-create entry records the pipeline's watermark as where the run
// starts (runState.Since), the FSM refuses a second run while one is in
// flight, the source's Plan gets that position and returns the one the
// run reaches (recorded by the run-planned entry), and the commit appends
// the run's output (connectors.ModeAppend without a Window: exactly once)
// and moves the watermark in the run-committed entry. A run planned again
// plans from the same position; a failed run leaves the watermark, so the
// next run reads the same data. A run whose plan found nothing new
// commits without asking the sink. Explicit windows and backfills are
// refused.
//
// Sinks make windows idempotent: a commit in connectors.ModeAppend
// replaces exactly the rows of its window. Delta-column loads never see
// hard deletes (a deleted row simply stops appearing); use CDC for them.
//
// # Partition-based runs and waiting
//
// A pipeline without incremental.delta_column reads a source laid out by
// time (the files source's layout): each window is one partition (window
// equals the partition size). A live window is created only whole, once
// lo + window <= now - lag; explicit windows and backfill ranges must lie on
// partition boundaries. Before planning any run, the leader asks a source
// that implements connectors.Readiness whether the run's input is ready
// (a partition's _SUCCESS, or the next partition). While it is not, the run
// is in state "waiting": one Raft entry (cmdRunWaiting) records what it
// waits for (the partition's path) and since when, no task is published
// and no worker slot is held; the leader checks again every
// incremental.ready_check (a timer per waiting run, within the leader's
// term) and plans the run as soon as the input is ready. A run waiting
// longer than incremental.ready_timeout (counted from the recorded start
// of the wait, so a new leader keeps the deadline) fails with an error
// naming the partition; its window is loaded by the next live run. Status
// shows a waiting run with WaitingFor, WaitingSince and ReadyDeadline, and
// a run request replies as soon as its run waits.
//
// # Rollback
//
// A rollback (VerbRollback, sluice rollback) exposes an earlier version a
// full load's sink keeps, through the sink's connectors.Versioned
// capability. The leader runs it under the pipeline's commit lock, so the
// commits and rollbacks of a pipeline reach its sink one at a time, and
// records it in two entries (pipelineRollbackCmd): the intent, before it
// asks the sink, and the outcome, which moves the pipeline's exposed
// version, after. A leader that finds an intent without its outcome (its
// predecessor died in between) finishes it before any commit of the
// pipeline, and on every sweep. A rollback never reuses a version number:
// the next commit gets the next new one.
package coordinator
