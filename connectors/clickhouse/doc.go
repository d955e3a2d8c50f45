// Package clickhouse is the "clickhouse" connector: a sink that exposes
// each full load as a new version under one table name, swapped in
// atomically, and replaces the rows of an incremental window exactly; and
// the Applier of cdc_apply pipelines, which keeps every version of the
// source's rows with a view of their current state (see CDC apply). It
// speaks ClickHouse's HTTP interface itself (Client): the Go driver
// (clickhouse-go/v2 v2.51.0) cannot talk to the 18.16 server Debian ships
// (its HTTP mode sends settings 18.16 does not know; its native mode
// inserts only with an explicit column list), while the HTTP interface is
// the same from 18.x to 25.x and lets rows stream as text.
//
// # Tables
//
// For a sink table "db.orders" the sink keeps, in database db:
//
//	orders                         the table readers query: the current version
//	orders_v6, orders_v5, ...      the kept earlier versions (keep_versions)
//	orders__s_<run>_<task>         a task's staged rows, while its run is open
//	orders__s_<run>_<task>_a<N>_<rand>  one task attempt's rows, until it closes
//	orders__b_<run>                a run's version being assembled
//	sluice_versions                the event log of versions: pending, committed, rollback, dropped
//	sluice_windows                 the windows committed into incremental tables
//
// Every table is a MergeTree, ordered by the source's primary key when it
// has one of plain columns, else not sorted (ORDER BY tuple()).
//
// # Types
//
// Columns take their types from the run's schema (TaskRef.Schema) and the
// server's version (SELECT version()): bool as Bool (21.12+) or UInt8 0/1;
// int16/32/64 as Int16/32/64; float32/64 as Float32/64 (NaN and infinities
// kept); decimal(p,s) as Decimal(p, s) up to 38 digits (76 from 22.1),
// refused above; a bare numeric as String (its exact text); string, JSON,
// time of day and every type without a lossless match as String; bytes as
// String holding the bytes; uuid as UUID; date as Date32 (21.9+) or Date,
// a value outside its range (1970 to 2105 on 18.x) refused with its row;
// timestamp and timestamptz as DateTime64(6, 'UTC') (20.1+) or, without
// it, Int64 microseconds since 1970-01-01 UTC (infinity and -infinity as
// the largest and smallest Int64, as PostgreSQL stores them); a list as
// Array(Nullable(T)). A column that may be NULL is Nullable(T), except an
// array, which ClickHouse cannot make Nullable: such a column is refused
// at plan time unless null_arrays is "empty" (a NULL array stored as []).
// CheckSchema refuses, at plan time and naming the column and its type,
// what the server cannot hold. Without a schema every column is
// Nullable(String), named from the batch, holding the source's text.
//
// Rows arrive as PostgreSQL COPY CSV and are re-encoded into TabSeparated
// (NULL as \N, values converted as above, every date and timestamp checked
// against the column's range: 18.16 would store an out-of-range date as
// 0000-00-00 without a word). The task checksum is that of the CSV records
// received (the source's own when it sends one), so a run's checksum
// equals the source table's.
//
// # Staging and commit of a full load
//
// A task attempt creates a table of its own and streams its rows into it
// with one INSERT; Close checks the row count and swaps the table in as
// the task's staging table, dropping an earlier attempt's. An attempt
// that dies, or one still running somewhere after its task was given to
// another worker, never touches another attempt's rows. Commit assembles
// the task tables into orders__b_<run> with ALTER TABLE ... ATTACH
// PARTITION tuple() FROM (hard links, no copy), checks every count,
// records the version as pending, then swaps it in under the table's
// name, the previous version moving to orders_v<N>: in one RENAME TABLE of
// both tables on servers whose databases are Ordinary (18.x to 20.x; the
// server runs a RENAME of several tables under its global lock, so no
// reader sees the table missing), or with EXCHANGE TABLES on an Atomic
// database (20.10+). It then records the version as committed and drops
// the staging tables and the versions beyond keep_versions. A commit
// repeated after a crash goes on from the last recorded step: a pending
// version whose build table is gone was swapped in. Expose (rollback,
// connectors.Versioned) swaps a kept version back the same way; Versions
// lists them.
//
// # Incremental windows
//
// A run of an incremental pipeline (ModeAppend) commits into the one
// table orders, created on the first commit and partitioned by the day
// (UTC) of the delta column, which is never Nullable there. For each day
// the window touches, the commit builds the day anew (the table's rows of
// that day outside the window, then the run's staged rows of that day)
// and swaps it in with ALTER TABLE ... REPLACE PARTITION: a window inside
// one day is replaced atomically, a longer one a day at a time. The
// table's merges are stopped around each swap (SYSTEM STOP MERGES, then
// waiting for running ones to end): on 18.x a merge running in the
// partition would bring the replaced rows back. The run is recorded in
// sluice_windows last; a commit repeated before gives the same table
// again, one repeated after only tidies up.
//
// # CDC apply
//
// As the sink of a cdc_apply pipeline ({url, database, settings}), the
// Applier keeps, for each source table orders, in database (or in the
// database named after the source schema):
//
//	orders             every version of every row: the source's columns, then
//	                   _sluice_version UInt64 (the change's commit LSN),
//	                   _sluice_index UInt32 (its index in its transaction) and
//	                   _sluice_deleted UInt8 (1: the key was deleted);
//	                   ReplacingMergeTree(_sluice_version) ORDER BY the source's key
//	orders_current     a view of the current state:
//	                   SELECT <columns> FROM orders FINAL WHERE _sluice_deleted = 0
//	sluice_cdc_offsets (in database, or default) one row per batch: the
//	                   pipeline, the batch's last stream sequence, its staging tables
//	sluice_cdc_<h>_<seq>_<r>_<i>  a batch's rows of one table, until moved in
//
// A batch is folded per table and key (the last state of each key it
// touched, with the version of that key's last change); values an update
// left unchanged (TOAST) come from an earlier change in the batch or from
// the target's current row. Tables are created from the events' columns,
// the key String and the others Nullable(String) holding PostgreSQL's text,
// since the events carry text only; cdcColumns maps a protocol.Schema to
// typed columns (those of full loads) for events that describe their
// table. A column that appears in the events is added (Nullable(String))
// and the view replaced in one RENAME; a column the events no longer carry
// is NULL in the rows written after.
//
// Exactly once without transactions. The server has no transaction across
// tables or statements; what it does atomically is one INSERT of one
// block into an unpartitioned MergeTree table (one part, renamed into
// place) and one ALTER TABLE ... ATTACH PARTITION ... FROM (the parts of
// one table added together). So Apply (1) inserts each table's rows into a
// staging table of its own, (2) inserts one row into sluice_cdc_offsets
// holding the batch's last sequence and its staging tables: this one-row
// insert is the commit, before which nothing of the batch counts and after
// which all of it does, then (3) attaches each staging table to its target
// and drops it. The record is written only if the last record is still
// the one the batch follows (INSERT ... SELECT ... WHERE max(seq) = the
// applied sequence), so an Applier that lost the stream's lease cannot
// record over the new holder's records. Applied is the sequence of the last row. The first call of
// an Applier, a call after a failed one, and a call that finds a record it
// did not write (an Applier of a worker that lost the stream's lease,
// finishing its batch) first attach the staging tables of the last batch
// recorded that are still there (a crash in step 3). Other staging tables
// of the pipeline are dropped once a record reaches past their batch (a
// crash before step 2), never before: another Applier may record them yet.
// An attach repeated after a crash adds the same rows twice, equal in key
// and version, which FINAL and the merges collapse; and every row is a
// version some change gave its key, so a batch applied twice under two
// batchings, by two Appliers, leaves the same FINAL state. A target table therefore only ever holds rows of
// recorded batches, and a context cancelled after step 1 lets steps 2 and
// 3 finish. A failure while recording leaves it unknown whether the row
// was written: the next Applied reads which. Durable means as durable as
// the server makes an insert (18.x does not fsync parts).
//
// A truncate is staged as the deletion, at the truncate's version, of every
// key the target holds and the batch does not write again after it (one
// INSERT ... SELECT ... FINAL into the staging table): a row per key, like
// a DELETE of every row. Swapping the table's rows out with REPLACE
// PARTITION would be one step, but on 18.x it does not stop a merge running
// in the table, whose result then brings the replaced rows back.
//
// A snapshot of a table (protocol.OpSnapshot at position L, sent again by
// each of its chunks) is staged as the deletion, at version L, of every key
// the target holds at a version below L that the batch does not write: the
// rows from before the snapshot, which it reads again at version L. Its
// repeats delete nothing more (the rows it read are of version L), and
// read events of an earlier snapshot are left out of the batch that
// starts a later one. An incremental snapshot (pgcdc's, of a table added to
// a streaming pipeline or taken again) sends its marker once, before any
// change of the table the reader streams (so before its first chunk, also
// while it waits its turn behind another table's), and reads its chunks at
// later positions, between the table's changes: a change of a row
// no chunk read yet is applied as it comes, and the chunk's row of a later
// version replaces it; its snapshot_done event ends the snapshot. An
// update leaving a TOAST value unchanged of a row the target lacks (the
// marker deleted it, or the table was added) while the snapshot is under
// way is left out: the chunk brings the row. The Applier knows a snapshot
// under way from having applied its marker and not its snapshot_done
// event, in memory only: one opened since (or after a failed Apply) fails
// the batch on such an update, the target having no row to keep the value
// from, as it does outside a snapshot.
// One of an earlier snapshot arriving in a later batch
// (a task of a failed snapshot still publishing) would be applied: the
// applier keeps no record of the table's last snapshot, as the PostgreSQL
// applier does.
//
// Reading. A batch becomes visible a table at a time during step 3; there
// is no snapshot across tables. ReplacingMergeTree keeps the row of greatest
// version per key; 18.x takes one unsigned integer as version, so it is the
// commit LSN, and rows of one key with equal versions (changes of one
// transaction applied in different batches) keep the last inserted, which
// is the later change: batches go in stream order and write one row per
// key. argMax(column, (_sluice_version, _sluice_index)) grouped by the key
// gives the same state without FINAL. Deletions stay as rows with
// _sluice_deleted = 1: removing one before the older versions of its key
// are merged away would show them again. The condition on _sluice_deleted
// must apply after FINAL (18.16 never moves it into PREWHERE when FINAL is
// used). A server of 23.2 or later would declare
// ReplacingMergeTree(_sluice_version, _sluice_deleted): FINAL then hides
// deleted keys by itself, and OPTIMIZE TABLE ... FINAL CLEANUP removes them.
//
// # Limits
//
// Only CSV batches (the postgres source's) are loaded; Arrow and JSONL
// batches are refused. Two pipelines must not load the same table (the
// leader serializes the commits of one pipeline only). One Applier applies
// a pipeline at a time (the stream's lease).
package clickhouse
