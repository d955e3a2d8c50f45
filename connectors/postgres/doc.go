// Package postgres is the "postgres" connector: a source that reads a table
// (whole, or one delta-column window of it) in bounded, parallel chunks of
// one consistent snapshot, and a sink that exposes each full load as a new
// version behind a view, or appends incremental windows idempotently to one
// table; as the sink of a cdc_apply pipeline, an Applier keeping replica
// tables equal to a cdc pipeline's sources. (The source of cdc pipelines,
// logical replication, is connectors/pgcdc's.)
//
// # Source
//
// Plan (on the coordinator leader) counts the table's rows (exactly below
// 500k estimated rows, or before the first ANALYZE, or with a filter below
// 5M; from pg_class.reltuples otherwise) and
// splits it into chunks of about Partitioning.TargetRows rows (250000 by
// default): ctid block ranges (`ctid >= '(a,0)'::tid AND ctid <
// '(b,0)'::tid`, a TID range scan) over the table's blocks for a full load
// on an exported snapshot from PostgreSQL 14 on, unless a key is
// configured; else integer key ranges [lo, hi) when the configured key or
// the single-column integer primary key allows it (even ranges over
// min..max, or the keys' percentiles when the keys are sparse), else block
// ranges. Block ranges are sequential reads, cheaper for the server than
// index range scans, and exact on one snapshot (the row versions it sees
// stay in their blocks while it is held); without a snapshot, or for an
// incremental window, key ranges are used when there is a key. The first and last chunks are open-ended, so
// rows with a NULL key or in blocks added later are read once too.
//
// With snapshot "export" (the default), Plan opens a REPEATABLE READ
// transaction, calls pg_export_snapshot() and writes the snapshot id in
// every chunk's spec; that transaction stays open on the planning Source
// until ReleaseRun(runID) or Close (or snapshot_timeout, enforced by the
// server through idle_in_transaction_session_timeout). Read imports the
// snapshot (SET TRANSACTION SNAPSHOT) before its COPY, so every chunk, and
// every retry of a chunk, sees the same rows; once the snapshot is gone a
// Read fails with a connectors.Replan error wrapping ErrSnapshotGone, and
// the run must be planned again (the coordinator does so, as a new attempt
// of the run). The coordinator therefore keeps the planning Source open for
// the run's lifetime and releases it when the run ends; the plan says so
// with Holds. Snapshot "none" reads each chunk in its own, later snapshot
// instead, and its plan holds nothing.
//
// Read runs `COPY (SELECT cols FROM t WHERE <bounds> [AND (where)]) TO
// STDOUT WITH (FORMAT csv)` through pgconn's CopyTo and emits whole CSV
// records, undecoded, as Raw batches of about 1 MiB (Format csv, Columns
// set, no header): the splitter tracks double quotes, so records with
// quoted newlines are never cut. A chunk with no rows emits one empty batch
// carrying the columns.
//
// # Rendering
//
// Every session of the package starts with TimeZone UTC, DateStyle ISO,
// IntervalStyle postgres, extra_float_digits 1 and bytea_output hex, so
// values render the same text whatever the server's defaults; TableChecksum
// uses the same settings.
//
// # Sink
//
// For a sink table "orders" (optionally schema-qualified) the sink keeps,
// in the same schema:
//
//	orders                       the view readers query
//	orders_v7, orders_v6, ...    one table per committed version (keep_versions)
//	orders__stg_<hash>           the staging table of a running run (hash of the run ID)
//	orders__stg_<hash>_t         the tasks staged in it: rows, bytes, checksum
//	sluice_versions              table_name, version, run, rows, checksum, created, current, dropped
//
// Version tables take their columns from the configured columns, else from
// the definition of a table orders_template (LIKE, with defaults,
// constraints and indexes), else from the run's schema (the source's
// description of its columns: typed DDL, see CreateTableSQL, with the
// source's types, NOT NULL and defaults, and no primary key), else from the
// first batch's column names, all as text (CSV text round-trips exactly
// through text columns).
//
// A task attempt writes in one transaction: it takes an advisory lock for
// its task (so concurrent attempts of one task run one after the other),
// deletes the rows an earlier attempt staged, COPYs its batches FROM STDIN
// (CSV bytes pass straight through; Arrow records are rendered as CSV, see
// arrowCSV) and records itself in the task list with its transaction ID
// (txid_current()). The staged rows carry no mark of their task: the rows
// of an attempt are those its transaction inserted, so a retry deletes the
// rows whose xmin is the ID its task's earlier attempt recorded (a per-row
// marker column with a DEFAULT cost up to 0.9 s of server time per 2M
// rows). A retried task thus replaces exactly its own rows; an aborted
// attempt leaves the earlier one. (A staging table made by an earlier
// release, with a hidden _sluice_task column, is still staged that way.)
//
// Commit runs in one transaction, serialized per table by an advisory
// lock: it locks the staging tables against task writers, removes the
// rows of every task its request does not list (a late attempt of a task
// of an earlier attempt of the run, which the coordinator planned again
// with new task IDs), checks every listed task's staged row count against
// its TaskOutput, drops the _sluice_task column if any, renames the staging table to
// orders_v<N> (no rows are copied), points the view at it (CREATE OR
// REPLACE VIEW, or DROP and CREATE when the columns changed), records the
// version as current in sluice_versions and drops versions beyond
// keep_versions (never the current one). Readers see the old version or
// the new one, never a part. A commit repeated for the same run and version
// finds it recorded and does nothing. Abort drops the run's staging tables.
// Expose (rollback, connectors.Versioned) points the view at another kept
// version in the same kind of transaction; Versions lists them.
//
// # Incremental (delta-column) loads
//
// For a run of an incremental pipeline the leader passes the run's window
// [from, to) and the delta column in the PlanRequest. The delta column must
// be timestamptz, timestamp or date (timestamp and date values are taken as
// UTC wall-clock times); Plan counts the rows inside the window exactly and
// splits them by key ranges (or ctid ranges) as for a full load, every
// chunk AND-ed with `delta_column >= from AND delta_column < to` (the bounds
// written as literals of the column's type, so an index on it serves the
// query), all chunks on the run's exported snapshot. Rows whose delta
// column is NULL are never read.
//
// The sink commits such a run (connectors.ModeAppend) into ONE table,
// <table>, with no versions or view: in one transaction it deletes the
// table's rows whose delta column lies in the window, inserts the staged
// rows (each column cast to the table's type; staging tables take the
// table's shape when it exists), drops the staging tables and records the
// run in sluice_windows (table_name, run, lo, hi, rows, deleted, checksum,
// committed). A window committed again (a re-run, a backfill --replace)
// thus holds its rows once; a commit repeated for the same run finds it
// recorded and does nothing. A missing table is created like a version
// table (configured columns, <table>_template, the run's schema, or text
// columns). Windows
// lists what was committed.
//
// Limits of delta-column loads: a row deleted on the source is never seen
// (nothing carries it: use the CDC pattern to capture deletes); a row
// updated after its window was loaded appears again in a later window
// with its new delta value, while its earlier version stays in the target
// (append keeps both: do not put a unique key on the target, or dedupe
// downstream); rows whose delta value is written more than lag after the
// fact (a long transaction, a skewed clock) may land behind the watermark
// and are missed until that window is re-run.
//
// # Applying change events (cdc_apply)
//
// Applier is the sink of cdc_apply pipelines (registered as the postgres
// kind's connectors.CDCTarget): it keeps target tables equal to the source
// tables of a cdc pipeline. The source table <schema>.<table> maps to the
// target table <Schema>.<table> (ApplierConfig.Schema, or the source schema
// when empty). One batch is one transaction: its events, collapsed per table
// and key (the last image wins; a truncate discards what came before it in
// the batch), go through one COPY into a staging table and set-based
// statements (DELETE, INSERT ... ON CONFLICT on the key) per table, and the
// offset row of the pipeline in sluice_cdc_offsets (in ApplierConfig.Schema,
// or in public when Schema is empty) is updated in the same transaction. The
// offset row is read under a row lock, so a batch delivered twice is applied
// once. A permanent error on one source table (see isPermanentApply: a
// value the target refuses, a target without the key, a missing target
// table, an inconsistent stream of the table) stops that table alone: the
// batch is applied again without its events, the table's stop (the
// sequence of its first event not applied, and the error) is recorded in
// sluice_cdc_tables in the same transaction, its later events are
// skipped, and Applier.TableStatus reports it (connectors.TableReporter).
// With ApplierConfig.Parallel "tables" a batch is split by source table
// and each table is applied on a connection of its own (a lane: at most
// ApplierConfig.Connections, tables sharing them beyond), each lane in one
// transaction that locks its tables' rows of sluice_cdc_tables, skips each
// table's events at or below its applied_seq (or the pipeline's offset,
// when further) and stores the batch's last sequence as their applied_seq;
// the offset row moves once every lane committed (see apply_parallel.go).
// Each table's events are applied once and in order; the tables of a
// batch are not applied in one transaction.
// Values arrive in PostgreSQL's text output format and are converted by
// the target column type's input function (a cast of text to the type), so
// numeric, jsonb, arrays, bytea and timestamptz round-trip exactly.
//
// TOAST: a value the source marks unchanged (an update that did not touch a
// TOASTed column) keeps the value the row had: from an earlier image of the
// row in the same batch, from the event's old row (REPLICA IDENTITY FULL), or
// else from the target row, read before the batch changes it (for an update
// that changed the key, the row under the old key). It is never written as
// NULL: when the target has no such row the batch fails with an error.
//
// Snapshots: a snapshot event of a table (protocol.OpSnapshot) of a later
// position than the last one applied starts the table over: the target is
// emptied and a stopped table goes on, in the batch's transaction, and the
// position is kept in sluice_cdc_tables; read events of an earlier position
// (an earlier, failed attempt's) are left out, and a snapshot event at or
// before it changes nothing. From a snapshot event to its snapshot_done
// event (an incremental snapshot's chunks come between changes), an update
// whose unchanged TOAST value has no target row is left out: the row's
// chunk brings it later. An initial snapshot has no snapshot_done event
// (its rows all come first): such a table keeps that rule.
//
// Typed replicas: events carry, on the first event of a table after each
// change of its shape, the source's description of the table
// (protocol.ChangeEvent.Relation). A missing target table is created, only
// with ApplierConfig.CreateTables (otherwise the batch fails with an error
// naming the table), from that description (typed DDL: the source's types,
// NOT NULL, defaults and generated columns, the event key as primary key),
// or with text columns when the events carry none. The description last
// applied to each source table is kept in sluice_cdc_tables, in the batch's
// transaction.
//
// Schema changes: a batch's events of one table are applied in parts, one
// per shape of the table; before a part whose description differs from the
// one last applied, the target follows it (see alterTarget): dropped
// columns are dropped, renamed ones (the same column ID) renamed, retyped
// ones altered with a cast of their values, NOT NULL and defaults changed
// (NOT NULL once the target's rows allow it), added ones added with their
// type and default, the rows the target already has taking the column's
// Backfill (the value the source's rows took: a constant default, even if
// the default changed since). Each change is logged once its transaction
// committed. A column that appears
// in events without a description of it is added as text. A row image
// without a column the batch knows (an event from before the column
// existed) keeps the target's value of that column, or NULL for a new row;
// a target column that no event carries is left alone (its default for a
// new row). The target needs a unique index (the primary key) on exactly
// the event's key columns.
//
// Not handled: a change of a table's key columns (the target's key stays),
// tables without a primary key or replica identity (an error names the
// table), foreign keys between target tables (tables are applied one after
// the other, not in source order; within a table deletes go before upserts),
// and several Runners of one pipeline at the same time (the offset row lock
// keeps a batch from being applied twice, but two Runners would split the
// stream between them).
//
// # Checksums
//
// Checksums are connectors.Checksum over each CSV record line as
// PostgreSQL's COPY wrote it (without the newline): the sink sums what it
// loads, and TableChecksum sums a query's COPY output the same way, so a
// target can be compared with its source, or with a files dataset the same
// CSV bytes were written to.
package postgres
