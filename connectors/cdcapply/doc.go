// Package cdcapply applies the change events of one CDC pipeline, read from
// the SLUICE_CDC stream, to a target: a PostgreSQL database kept equal to the
// source tables (Postgres) or a change log of JSON lines on disk (Files).
//
// Run reads the events of the upstream pipeline (subjects
// sluice.cdc.<upstream>.>) through the durable pull consumer
// cdc_apply_<pipeline> and hands them to an Applier batch by batch, in stream
// order. A message holds one or more events (protocol.DecodeChangeEvents),
// all carrying the message's stream sequence, and a batch holds whole
// messages: up to Config.BatchSize events, or one message that alone holds
// more. Messages fetched beyond a batch wait, in order, for the next one;
// fetches are bounded by message count and bytes. The Applier is the source
// of truth for progress: it stores the stream sequence of the last message
// it made durable together with the events themselves (Postgres: an upsert
// into sluice_cdc_offsets in the same transaction; Files: an offset file
// renamed into place after the part files), and skips events at or below
// it. At start Run asks the Applier for that sequence and resets the
// consumer to the next one, so a batch applied but not acknowledged is not
// applied again, a message fetched but not applied is delivered again before
// anything after it, and the offset alone decides where applying resumes.
// Within one Run a gap in the consumer's delivery sequence (a message
// delivered to a pull request nobody read) also resets the consumer.
// Together: each event is applied exactly once and in stream order, across
// crashes and restarts at any point. Run acknowledges a batch (AckAll, so one
// ack covers the batch) only after Apply returned nil, and never a message
// still waiting for a later batch; the acknowledgement is bookkeeping, not a
// correctness condition.
//
// A message that does not hold valid change events stops Run with an error
// naming its stream sequence and subject; the messages before it are applied
// first, and nothing of it or after it is. Run does not skip it: an operator
// must remove it from the stream (or fix the build that cannot read it).
//
// PostgreSQL target (Postgres): the source table <schema>.<table> maps to the
// target table <Schema>.<table> (PostgresConfig.Schema, or the source schema
// when empty). One batch is one transaction: its events, collapsed per table
// and key (the last image wins; a truncate discards what came before it in
// the batch), go through one COPY into a staging table and set-based
// statements (DELETE, INSERT ... ON CONFLICT on the key) per table, and the
// offset row of the pipeline in sluice_cdc_offsets (in PostgresConfig.Schema,
// or in public when Schema is empty) is updated in the same transaction. The
// offset row is read under a row lock, so a batch delivered twice is applied
// once. Values arrive in PostgreSQL's text output format and are converted by
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
// Schema changes: a column that appears in events but not in the target
// table is added as text (ALTER TABLE ... ADD COLUMN IF NOT EXISTS) in the
// batch's transaction, and logged. A row image without a column the batch
// knows (an event from before the column existed) keeps the target's value
// of that column, or NULL for a new row; a target column that no event
// carries is left alone (its default for a new row). A missing target table
// is created (columns as text, the event key as primary key) only with
// PostgresConfig.CreateTables; otherwise the batch fails with an error naming
// the table. The target needs a unique index (the primary key) on exactly the
// event's key columns.
//
// Not handled: dropped or renamed source columns (the target column stays and
// is no longer written), column type changes (values must still be valid
// input for the target type), a change of a table's key columns within one
// batch, tables without a primary key or replica identity (an error names the
// table), foreign keys between target tables (tables are applied one after
// the other, not in source order; within a table deletes go before upserts),
// and several Runs of one pipeline at the same time (the offset row lock
// keeps a batch from being applied twice, but two Runs would split the
// stream between them).
//
// Files target: each event becomes one JSON line (the event with the stream
// sequence of its message) in <Path>/<schema>.<table>/date=YYYY-MM-DD/hour=HH/part-<seq>.jsonl
// by its commit time (UTC); see Files for the write protocol and for when an
// hour is closed with a _SUCCESS marker.
package cdcapply
