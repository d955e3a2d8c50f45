package connectors

import (
	"context"
	"encoding/json"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/sluicehq/sluice/protocol"
)

// Format names an encoding of rows.
type Format string

// The formats rows may be passed in.
const (
	FormatArrow   Format = "arrow"
	FormatJSONL   Format = "jsonl"
	FormatCSV     Format = "csv"
	FormatParquet Format = "parquet"
)

// Batch is a bounded group of whole rows handed from a Source to a Sink.
// Exactly one of Record and Raw is set.
type Batch struct {
	// Record holds typed rows. The sink does not retain it after Write
	// returns; the source releases it after emit returns.
	Record arrow.RecordBatch
	// Raw holds whole rows encoded in Format: for JSONL one object per line,
	// each line ending in '\n'; for CSV data rows only (no header), RFC 4180.
	// The sink does not retain it after Write returns: a writer may reuse
	// its memory for the next batch.
	Raw    []byte
	Format Format
	// Columns names the columns of a CSV Raw batch, in order.
	Columns []string
	// Rows is the number of rows in the batch.
	Rows int64
	// Position tells where the batch starts in the source, for error
	// messages: "in/part-0003.jsonl:1201" (file and line), an LSN, an offset.
	Position string
	// Checksum, optional, is the checksum of the rows of a Raw batch,
	// computed by the source over exactly the bytes of Raw the way the sink
	// would compute it (one Checksum.Add per record, without its line
	// ending), with Checksum.Rows == Rows. A sink that writes Raw as it is
	// may add it to its task checksum instead of scanning Raw again; a sink
	// that re-encodes the rows ignores it. Nil when the source did not
	// compute it.
	Checksum *Checksum
}

// Emit receives the batches of one partition, in source order. A returned
// error stops the read and is returned by Read, wrapped.
type Emit func(ctx context.Context, b Batch) error

// PlanRequest describes the run a Source plans.
type PlanRequest struct {
	RunID    string
	Pipeline string
	// Params are the run's parameters (from a trigger or the command line).
	Params map[string]string
	// LogicalTime is the run's logical time; zero when the pattern has none.
	LogicalTime time.Time
	// Watermark is the position the previous committed run reached, opaque
	// to everyone but the source; empty for a first run. For a run by
	// position (ByPosition) it is where the run starts: the source plans
	// what is new since it.
	Watermark string
	// ByPosition is set for a run by position, of a pipeline read by the
	// source's own position (incremental.by; see Positions): Window is
	// nil, and the source plans what is new since Watermark. Unset for
	// every other run (a full load reads everything, whatever Watermark
	// holds).
	ByPosition bool
	// Partitioning holds the pipeline's partitioning settings.
	Partitioning Partitioning
	// Window is set for a run of an incremental pipeline. With a
	// DeltaColumn the source reads exactly the rows whose DeltaColumn lies
	// in [Window.From, Window.To); without one (a partition-based
	// pipeline) the source reads the one time partition Window is, such as
	// the hour directory date=2026-11-25/hour=07. The leader computed the
	// window when it created the run and recorded it in Raft, so a plan
	// repeated on another leader reads the same window. Nil for every
	// other run, and for an incremental run by position (see Positions).
	Window *Window
	// DeltaColumn is the column Window bounds (the spec's
	// incremental.delta_column); empty when Window is nil or the source is
	// partition-based.
	DeltaColumn string
	// Target is, for a run of a passthrough pipeline whose sink records
	// what its target holds (Inventoried), what that is as of Watermark;
	// nil otherwise. See UnitSource.PlanUnits.
	Target Inventory
	// Transform is set for a run of a transform pipeline planned in units
	// (Registry.TransformsUnits) whose contract changes the rows: the
	// workers transform the units, so the source plans them in the form
	// a contract reads (Passthrough.Rows), not an undecodable binary one.
	Transform bool
	// Binary is set for a Transform whose contract takes rows in a
	// source's binary form (contract.Spec.TextColumns): a source that can
	// read the columns TextColumns names in their text form and the
	// others in their binary one plans its units so, sparing the decoding
	// and encoding of every kept column; one that cannot plans them as
	// for a Transform without it.
	Binary      bool
	TextColumns []string
	// Trim is set for a live run of integer values (Window.Values): the
	// window's high bound only caps the run. The source ends the window
	// after the greatest value DeltaColumn holds when it plans, so a run
	// never passes a value not written yet, and, when Trim.MaxRows is set,
	// after at most that many rows from Trim.From (rows a lookback reads
	// again, below it, do not count; the rows of one value stay together,
	// so a value with more rows than that makes a window of its own), and
	// a window that would hold no value past Trim.From is ended at Trim.From
	// (or left empty, planning no partition). It returns the window it
	// reads in Plan.Window (same
	// low bound, high bound at most the cap), which the run's commit moves
	// the watermark to. A source that cannot trim fails the plan.
	Trim *Trim
}

// Trim says how a source ends the capped window of a live run of integer
// values (PlanRequest.Trim).
type Trim struct {
	// From is where the values new to the pipeline start: its watermark.
	From int64
	// MaxRows, when positive, bounds the rows from From the window holds.
	MaxRows int64
}

// Readiness is implemented by sources whose input for a run may not be
// complete when the run is created: a time partition a producer is still
// writing, complete once it holds a _SUCCESS marker or the next partition
// exists. The coordinator leader calls Ready before Plan, and again every
// incremental.ready_check while it reports not ready; meanwhile the run is
// "waiting": no task is published and no worker slot is held. Once Ready
// reports ready the leader calls Plan with the same request. Ready only
// looks (no writes); it may be called concurrently for different runs, and
// ctx bounds the one check.
type Readiness interface {
	// Ready reports whether the input of the run req describes is complete.
	// what names the input the run waits for (a partition's path), for the
	// run's status and errors, whether it is ready or not. An error marked
	// permanent (a window that is not one partition) fails the run; any
	// other error is logged and the check repeated later.
	Ready(ctx context.Context, req PlanRequest) (ready bool, what string, err error)
}

// Snapshots is implemented by sources of tables whose commits make their
// data visible at once, so that each commit is a readiness marker (an
// Iceberg table's snapshots); the kind says so when it registers
// (Connector.SourceSnapshots). The coordinator leader of a readiness
// pipeline on such a source calls SnapshotsAfter every readiness.check
// and announces each snapshot it returns, in order. It only looks (no
// writes); ctx bounds the one call.
type Snapshots interface {
	// SnapshotsAfter returns the snapshots of the table's current lineage
	// (the current snapshot and its ancestors) committed after the
	// snapshot last, oldest first: walking back from the current
	// snapshot, it stops at last, or at the first snapshot committed
	// before since (last is empty before the first announced; a last
	// that is no longer an ancestor, after a rollback or an expiry, stops
	// the walk by since, the time of last). At most limit, the oldest.
	SnapshotsAfter(ctx context.Context, last string, since time.Time, limit int) ([]Snapshot, error)
}

// Snapshot is one commit of a table: its id, when it was committed, and
// the table format's summary of it (operation, files and rows added).
type Snapshot struct {
	ID      string
	Time    time.Time
	Summary map[string]string
}

// Window is a half-open range of an incremental run's delta column: of
// time [From, To), or of integer values [Lo, Hi) (Values).
type Window = protocol.Window

// Positions is the capability of a source kind that keeps a position of
// its own instead of being read by windows of a delta column: Kafka's
// per-partition offsets, an Iceberg table's last snapshot read, the
// names, sizes and modification times of the files a landing directory
// received. A kind declares it when it registers (Connector.Positions);
// a pipeline of pattern incremental with incremental.by set to
// "position" (or to Name) is refused at apply unless its source declares
// it and its sink appends (Connector.SinkAppends).
//
// A run by position has no window. The coordinator leader creates at
// most one run at a time per pipeline (the Raft state refuses a second
// while one is in flight, so two runs never plan from the same
// position), and calls Plan with PlanRequest.ByPosition set,
// PlanRequest.Watermark set to the pipeline's watermark (empty before the
// first commit) and Window nil.
// Plan returns the bounded partitions of what is new since that position
// (bounded per run, as the source's configuration says) and, in
// Plan.Watermark, the position the run reaches; it must not move
// anything another run plans from (consumer group offsets, markers): the
// position moves in the Raft entry that commits the run, after the sink
// appended its output (CommitRequest, ModeAppend without Window). A
// position too large for a Raft entry is kept by the source outside the
// cluster, written immutably at planning (a manifest named by its
// content, say), the watermark naming it. A run that fails
// leaves the watermark, so the next run plans from the same position and
// reads the same data again. A run planned again (a new attempt) is
// planned from the same watermark.
type Positions struct {
	// Name is how a spec may name the position in incremental.by besides
	// "position" ("modified" for files by arrival), for the reader of the
	// spec; empty when "position" is the only spelling.
	Name string
	// Check says whether a source configuration can be read by position
	// (a files source laid out by time partitions is read by windows),
	// with an error saying why not; nil accepts every configuration. It
	// does no I/O and sees the configuration with ${ENV} unexpanded.
	Check func(config json.RawMessage) error
	// Only, when set, says whether a source configuration can be read
	// only by position (an Iceberg source's read: appended, which reads
	// what was appended since the watermark): a *FieldError naming the
	// field, which a pipeline whose runs do not go by position (a full
	// load, windows) refuses at apply; nil when the configuration reads
	// whole. It does no I/O and sees the configuration with ${ENV}
	// unexpanded.
	Only func(config json.RawMessage) *FieldError
	// Lag, when set, counts what a source of the configuration holds past
	// the position watermark (all it holds for an empty one): the records
	// the next runs have to read. ctx bounds the call, which asks the
	// source; sluice status shows the count.
	Lag func(ctx context.Context, config json.RawMessage, watermark string) (int64, error)
}

// PositionBy is the generic spelling of incremental.by for every source
// that keeps a position of its own (Positions).
const PositionBy = "position"

// Partitioning bounds each task of a run. Zero values mean the source's
// defaults.
type Partitioning struct {
	// TargetBytes is the input size a task should read, roughly.
	TargetBytes int64 `json:"target_bytes,omitempty"`
	// TargetRows is the number of rows a task should read, roughly.
	TargetRows int64 `json:"target_rows,omitempty"`
	// MaxFiles caps the number of files in one task.
	MaxFiles int `json:"max_files,omitempty"`
}

// Plan is what a Source returns for a run: its bounded partitions and the
// watermark the run reaches once committed.
type Plan struct {
	Partitions []protocol.Partition
	// Watermark is stored with the commit of the run; empty for sources
	// without one. For a run by position it is the position the run
	// reaches: the pipeline's watermark moves to it in the Raft entry that
	// commits the run, and the next run starts there. Empty leaves the
	// watermark where it is.
	Watermark string
	// Schema describes the columns every partition's batches carry, as the
	// source's catalog declares them; nil when the source does not know
	// them (a sink then takes the columns from the batches). It reaches
	// every task (TaskRef.Schema) and the commit (CommitRequest.Schema).
	Schema *Schema
	// Window is the window the plan reads when the request's was capped
	// (PlanRequest.Trim); nil otherwise.
	Window *Window
	// Holds is set by a RunHolder whose partitions can only be read while
	// it holds what it planned them on (an exported snapshot). The leader
	// records it with the plan: a leader that did not plan the run holds
	// nothing for it, so it plans the run again, as a new attempt, rather
	// than publish tasks that would fail. A RunHolder that holds nothing
	// for this run (a configuration without a snapshot) leaves it unset.
	Holds bool
}

// Schema describes the columns of a dataset as its source declares them.
type Schema = protocol.Schema

// Column is one column of a Schema.
type Column = protocol.Column

// SchemaChecker is implemented by sinks that need typed columns. The
// coordinator leader calls CheckSchema once a run is planned, before any
// task is published, with the plan's schema (nil when the source gave
// none); an error fails the run before anything is read, and should name
// the column and its type (a type the sink cannot hold, a column missing
// from an existing target). ctx bounds the check; it may do I/O.
type SchemaChecker interface {
	CheckSchema(ctx context.Context, s *Schema) error
}

// CheckRequest says what a pipeline asks of one of its connectors, for a
// Checker.
type CheckRequest struct {
	// Pipeline is the pipeline's name and Pattern its pattern.
	Pipeline string
	Pattern  protocol.Pattern
	// Role is what the connector is in the pipeline.
	Role Role
	// DeltaColumn is the column an incremental pipeline's windows bound;
	// empty for every other pipeline and for a partition-based one. A
	// problem with it is a *FieldError of Field FieldDeltaColumn.
	DeltaColumn string
	// DeltaValues says the windows are ranges of integer values
	// (incremental.window a number of values): the delta column is then
	// an integer column, not a time.
	DeltaValues bool
	// Settings are a streamed pipeline's settings (its slot, publication).
	Settings StreamSettings
}

// FieldDeltaColumn is the Field of a Checker's *FieldError about the
// pipeline's delta column, which the spec sets outside the connector's
// configuration.
const FieldDeltaColumn = "incremental.delta_column"

// Checker is implemented by sources and sinks that can check, before a
// pipeline is stored, that what their configuration names is there and
// fits the pipeline: a table with its columns and key, a replica
// identity, a directory. The coordinator leader calls Check for `sluice
// apply --check`, on a connector opened for the check (its `${ENV}`
// references expanded from the leader's environment) and closed after it;
// checks of different pipelines may run concurrently. Check only looks: it
// creates and changes nothing. ctx bounds the whole check.
//
// found says what was found, in a line for people ("table public.orders:
// 3 columns, key id, about 300000 rows"). Each problem with the
// configuration is a *FieldError naming its field ("table",
// "columns[2]"), several joined with errors.Join; any other error means
// the check could not be made (the server did not answer) and is shown as
// it is.
type Checker interface {
	Check(ctx context.Context, req CheckRequest) (found string, err error)
}

// CheckFunc checks a configuration of a capability registered without an
// opened connector (CDCSource, CDCTarget), as Checker.Check does; config
// has its `${ENV}` references expanded.
type CheckFunc func(ctx context.Context, config json.RawMessage, req CheckRequest) (found string, err error)

// Source reads a system. Plan is called by the coordinator leader only,
// once per run; Read is called by workers, concurrently for different
// partitions of the same run, and more than once for one partition when a
// task is retried: it must read exactly the same rows each time.
type Source interface {
	// Plan splits the run's input into bounded partitions. ctx bounds the
	// planning only.
	Plan(ctx context.Context, req PlanRequest) (Plan, error)
	// Read reads one partition and hands its rows to emit in order. ctx
	// bounds the whole read; Read returns ctx.Err() when it is cancelled.
	Read(ctx context.Context, p protocol.Partition, emit Emit) error
	// Close releases what the source holds (connections, snapshots).
	Close() error
}

// RunHolder is implemented by sources that hold something for a planned
// run until it ends, such as a database snapshot that every task of the run
// reads. The leader keeps such a source open after Plan and calls
// ReleaseRun, then Close, once the run is committed or failed, before it
// plans the run again, or when it loses leadership. What a plan holds
// (Plan.Holds) dies with the leader that planned it: the next leader plans
// the run again as a new attempt, and a task that finds the hold gone
// fails with a Replan error, which does the same.
type RunHolder interface {
	ReleaseRun(runID string) error
}

// TaskRef identifies one attempt of one task.
type TaskRef struct {
	RunID    string
	TaskID   string
	Pipeline string
	Attempt  int
	// Schema is the run's plan's schema; nil when the source gave none.
	// With a data contract it is the schema of the rows the contract
	// makes (columns dropped, hashed ones text).
	Schema *Schema
	// Contract is the pipeline's data contract (see package contract, its
	// JSON form, the key a ${NAME} reference), given only to a sink
	// registered with Connector.SinkAppliesContract, which applies it to
	// every row itself; nil for every other sink, whose batches the worker
	// transforms before they reach it.
	Contract json.RawMessage
}

// TaskOutput describes what a TaskWriter staged.
type TaskOutput struct {
	Rows     int64
	Bytes    int64
	Checksum Checksum
	// Location is where the output lies in the staging place; the sink's
	// Commit receives it back.
	Location string
}

// TaskWriter writes the output of one task attempt. It is used by one
// goroutine. Either Close or Abort is called, once.
type TaskWriter interface {
	// Write writes one batch. A partial write returns an error.
	Write(ctx context.Context, b Batch) error
	// Close makes the output durable in staging, replacing the output of any
	// earlier attempt of the same task, and reports it.
	Close(ctx context.Context) (TaskOutput, error)
	// Abort discards what this attempt wrote; the output of an earlier
	// attempt that closed stays.
	Abort(ctx context.Context) error
}

// CommitRequest asks a sink to publish the outputs of all tasks of a run.
type CommitRequest struct {
	RunID    string
	Pipeline string
	// Version is the dataset version this run becomes; assigned by the
	// leader and recorded in Raft before Commit is called, so a repeated
	// commit uses the same version.
	Version int64
	// Tasks are the outputs of every task of the run, in task order.
	Tasks []TaskOutput
	// Watermark is the position the run reaches, for sinks that record it.
	Watermark string
	// Since is, for a run of a passthrough pipeline, the position it was
	// planned from: the watermark of the last committed run (empty before
	// the first), for a sink that records what its target holds
	// (Inventoried) and builds the new record on the last one.
	Since string
	// Mode says how the run's output joins the dataset. ModeReplace (the
	// zero value, full loads): the run becomes a new version that replaces
	// the whole dataset. ModeAppend (incremental runs) with a Window: the
	// run's output replaces exactly the rows of Window, by DeltaColumn, and
	// leaves every other row as it is, so a window committed twice (a
	// re-run, a backfill with --replace) holds its rows once. ModeAppend
	// without a Window (a run by position, see Positions): the run's output
	// is appended to the dataset exactly once, beside every row committed
	// before; a commit repeated with the same RunID (after a crash, by a
	// new leader) appends nothing more. Only sinks registered with
	// Connector.SinkAppends are asked for it.
	Mode CommitMode
	// Window is the run's window in ModeAppend; nil otherwise, and nil for
	// a run by position.
	Window *Window
	// DeltaColumn is the column Window bounds, in ModeAppend; empty for a
	// partition-based pipeline, whose rows carry no column the window
	// bounds: a sink then replaces what it committed for Window before (the
	// files sink's window=<from>_<to>/ directory), or refuses the commit.
	DeltaColumn string
	// Schema is the run's plan's schema; nil when the source gave none.
	Schema *Schema
	// Merge, in ModeAppend with a Window, merges the run's rows into the
	// dataset by key instead of replacing the window's rows: for each key
	// the row with the greatest DeltaColumn wins (the newest version, of
	// the run's rows and the dataset's), a row whose Merge.Deleted column
	// is true deletes its key instead, rows of other keys stay. A commit
	// repeated with the same RunID changes nothing more. Only sinks
	// registered with Connector.SinkMerges are asked for it.
	Merge *Merge
}

// Merge configures the merge of an incremental pipeline's windows by key
// (the spec's incremental.merge).
type Merge struct {
	// Key are the columns that identify a row.
	Key []string `json:"key"`
	// Deleted, when set, names a boolean column: a row whose value is
	// true deletes its key from the target instead of being written.
	Deleted string `json:"deleted,omitempty"`
}

// CommitMode tells a sink how a run's output joins the dataset.
type CommitMode string

// The commit modes.
const (
	ModeReplace CommitMode = ""
	ModeAppend  CommitMode = "append"
)

// CommitResult tells where a committed run is visible.
type CommitResult struct {
	// Location is where readers find the dataset.
	Location string
	// Marker is the readiness marker written after the commit, if any.
	Marker string
}

// Sink writes a system. OpenTask is called by workers, concurrently for
// different tasks, and again for a retried task; Commit and Abort are
// called by the coordinator leader only.
type Sink interface {
	// OpenTask starts the output of one task attempt in the run's staging
	// place. ctx bounds the opening only.
	OpenTask(ctx context.Context, t TaskRef) (TaskWriter, error)
	// Commit publishes all task outputs of a run atomically: readers see the
	// whole run or the previous version. A commit repeated after a crash,
	// with the same request, must succeed and change nothing more. The
	// readiness marker, if any, is written last.
	Commit(ctx context.Context, req CommitRequest) (CommitResult, error)
	// Abort removes the staging output of a failed run; the previous
	// version stays exposed.
	Abort(ctx context.Context, runID string) error
	// Close releases what the sink holds.
	Close() error
}

// Versioned is implemented by sinks that keep earlier versions of a full
// load beside the one readers see (a directory per version behind a
// current symlink, a table per version behind a view), so that a kept
// version can be exposed again: a rollback. Only the coordinator leader
// calls it, and it serialises these calls with the commits of the
// pipeline: no Commit of the same dataset runs meanwhile, and a rollback
// is recorded in Raft before Expose and after it. ctx bounds the one call.
type Versioned interface {
	// Versions lists the kept versions, oldest first: every version whose
	// commit completed and that keep_versions has not pruned, the one
	// readers see marked Exposed. A dataset nothing was committed to has
	// none, without an error.
	Versions(ctx context.Context) ([]Version, error)
	// Expose makes kept version v the one readers see, atomically: a
	// reader sees the version exposed before or v, never a part of either
	// and never nothing. Exposing the exposed version changes nothing.
	// Versions newer than v stay kept (exposing one of them goes forward
	// again) until a commit prunes them. A version that is not kept (never
	// committed, pruned, incomplete) is refused with a permanent error
	// naming the kept versions (VersionNotKept); the exposed version stays.
	Expose(ctx context.Context, v int64) error
}

// WindowSummer is implemented by sources and sinks that can count and
// checksum their rows of one window of an incremental pipeline, for
// `sluice check`: the coordinator leader asks the source, then the sink,
// for each window of the range checked, and lists (or loads again) the
// windows where they differ. It reads only; ctx bounds the one call; calls
// may run concurrently.
type WindowSummer interface {
	// SumWindow returns the count and checksum of the rows whose
	// req.DeltaColumn lies in req.Window (leaving out, with req.Deleted,
	// the rows whose column of that name is true: the deleted marker of
	// a merge). A source sums the columns it reads and says which; a sink
	// sums req.Columns, in that order, and an error names a column it
	// lacks.
	SumWindow(ctx context.Context, req SumRequest) (WindowSum, error)
}

// SumRequest asks for the sum of one window's rows (WindowSummer).
type SumRequest struct {
	Window      Window
	DeltaColumn string
	// Deleted names the merge's deleted marker column, if any.
	Deleted string
	// Columns, for a sink, are the columns the source summed.
	Columns []string
}

// WindowSum is the count and checksum of one window's rows.
type WindowSum struct {
	Checksum Checksum
	// Form names how each row was hashed ("csv": the row as PostgreSQL's
	// COPY CSV text, "jsonl": as the canonical JSON line, "count": not
	// hashed, the count alone): checksums of one form compare, of two
	// forms only their counts do.
	Form string
	// Columns are the columns summed, in order.
	Columns []string
}

// Version is one kept version of a dataset.
type Version = protocol.DatasetVersion

// SourceFactory opens a source from its JSON configuration; the `${ENV}`
// references in the configuration are already expanded. Configuration
// errors are returned as *FieldError so the spec parser can name the line.
type SourceFactory func(ctx context.Context, config json.RawMessage) (Source, error)

// SinkFactory opens a sink from its JSON configuration.
type SinkFactory func(ctx context.Context, config json.RawMessage) (Sink, error)

// Validator checks a connector configuration without I/O.
type Validator func(config json.RawMessage) error
