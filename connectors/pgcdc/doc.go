// Package pgcdc captures changes from PostgreSQL logical replication
// (pgoutput) into the central SLUICE_CDC JetStream stream, after an initial
// snapshot consistent with the slot.
//
// A Reader streams one replication slot. Every change of the published
// tables becomes a protocol.ChangeEvent on
// sluice.cdc.<pipeline>.<schema>.<table>, published asynchronously in commit
// order. Consecutive events of one table in one transaction are packed into
// one message (one event per line, see protocol.DecodeChangeEvents), ended
// by a change of table, the commit, Config.MessageEvents events or
// MaxMessageBytes; its Nats-Msg-Id is <slot>:<commit LSN>:<index in
// transaction of its first event> and its Sluice-Events header the count.
// The packing depends only on the WAL and those two bounds, so a
// transaction published again gets the same messages and ids. One message
// at a time awaits its ack, the next being decoded meanwhile: a message is
// published only once every earlier one of the slot is stored, so a
// failover of the stream's leader, which loses what was in flight to it,
// can never leave a later message stored before an earlier one published
// again; per slot (and so per key) the stream holds the changes in WAL
// order. On a replicated SLUICE_CDC, where each publish waits for a round
// trip between its servers, the messages packed while one publish is in
// flight are sent together, when it is acknowledged, as one JetStream
// atomic batch (stored whole or not at all), so a slot of many small
// transactions is not held to one message per round trip; after a restart
// the Reader publishes one message at a time until JetStream stores one
// that it did not hold yet (an atomic batch holding a duplicate would be
// refused whole). The slot's confirmed flush LSN advances only to the end
// of a transaction whose every event JetStream acknowledged (or to a
// heartbeat message that follows only acknowledged transactions), so a
// Reader stopped at any point and started again on the same slot
// re-publishes the unconfirmed tail, and JetStream's duplicate window drops
// what it already stored.
//
// A table joins the publication only if it has a primary key or a replica
// identity (FULL, or USING INDEX): PostgreSQL refuses UPDATE and DELETE on
// a published table that has neither, so the Reader and the snapshot
// refuse such a table first, with a permanent error wrapping
// ErrNoReplicaIdentity that names it and the fix, and leave the
// publication as it was.
//
// Old values: with REPLICA IDENTITY DEFAULT PostgreSQL sends only the key
// columns of the old row, on delete and on an update that changed the key;
// with FULL it sends the whole old row on every update and delete. A TOASTed
// value an update did not change is not sent: the event marks it
// protocol.UnchangedValue, never NULL. Values are rendered as text under the
// postgres package's session settings (postgres.SessionParams: UTC, ISO
// dates, hex bytea), the same as the snapshot's.
//
// # Snapshot, then stream
//
// The initial snapshot of a pipeline is a run of two connectors: the
// SnapshotKind source plans it (creating the slot with an exported snapshot,
// CreateSlotWithSnapshot, and splitting every table into chunk tasks on that
// snapshot) and reads one chunk per task; the EventsKind sink publishes each
// row as a protocol.ChangeEvent with Op read, LSN and CommitLSN the slot's
// consistent LSN, on the same subjects as the Reader, packed into messages
// of consecutive rows of one chunk with the Nats-Msg-Id
// <slot>:snapshot:<consistent LSN>:<schema>.<table>:<chunk>:<first row in
// chunk> (SnapshotMsgID).
// The snapshot holds exactly the transactions committed before the
// consistent LSN and the slot streams exactly those committed after it, so
// when the Reader starts on the slot once the snapshot run has committed,
// the stream holds, per table:
//
//   - every row of the snapshot as one read event, all of them before any
//     change event of that table;
//   - then every change committed after the snapshot, in commit order (each
//     with a commit LSN past the consistent LSN).
//
// Applying the events in stream order (read, insert and update as upserts
// by key, delete as a delete) rebuilds each table. A chunk retried within
// the 2-minute duplicate window (DuplicateWindow) publishes nothing twice; a
// chunk retried after it repeats identical read events, still before any
// change event, which an upsert absorbs. Every chunk starts with its
// table's Begin line, which the sink publishes as the table's snapshot
// event (protocol.OpSnapshot, at the consistent LSN) under one id per table
// and slot position (SnapshotBeginMsgID): JetStream keeps the first, so it
// precedes every read event of the table. A failed snapshot run leaves the
// read events it published in the stream (the sink's Commit and Abort do
// nothing) and its slot behind: a snapshot starts only with its slot, so
// the next attempt replaces the slot, and its snapshot events, of a later
// position, tell a consumer to start the tables over and to leave out the
// earlier attempt's read events.
//
// # Tables added, resnapshots
//
// A table added to a streaming pipeline, or asked to be read again, is
// snapshotted by the Reader itself, interleaved with the stream on the same
// slot (Config.Snapshots; see incremental.go for the watermarks): its
// snapshot event, before any change of the table (at a begin mark the
// Reader writes into the WAL before the table joins the publication),
// read events in key order chunk by chunk, then its snapshot_done event
// (protocol.OpSnapshotDone). Config.MaxLagBytes holds a
// chunk back while the slot lags. Reader.Status reports each snapshot.
//
// # The source of cdc pipelines
//
// Register adds the Reader to the postgres kind as its
// connectors.CDCSource. A worker holding a cdc pipeline's lease opens it
// through the registry with the pipeline's source configuration
// (SourceConfig: dsn and tables) and stream settings (slot, publication,
// heartbeat, message events); its Status reports the slot's position and
// lag. The coordinator leader asks the same capability how the initial
// snapshot run is made: from the SnapshotKind source into the EventsKind
// sink, both registered by Register too.
package pgcdc
