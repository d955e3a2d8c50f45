package protocol

import (
	"encoding/json"
	"time"
)

// Streams are the long-running parts of the cdc and cdc_apply pipelines:
// a slot streamed into SLUICE_CDC, or SLUICE_CDC applied to a target. Each
// runs on exactly one worker at a time, under a lease the coordinator
// leader grants in Raft: the leader sends the worker a StreamAssignment on
// WorkerStreamSubject, the worker renews it with a LeaseRenewRequest on the
// control API every third of the lease and stops when a renewal is refused
// or none succeeded for a whole lease. The leader grants the stream to
// another worker only after a whole lease without a renewal.

// VerbLeaseRenew renews a stream lease; VerbCDCStatus reports every
// stream (`sluice cdc status`).
const (
	VerbLeaseRenew = "lease.renew"
	VerbCDCStatus  = "cdc.status"
	// VerbCDCResnapshot asks for an incremental snapshot of a table of a
	// cdc pipeline (`sluice cdc resnapshot`).
	VerbCDCResnapshot = "cdc.resnapshot"
	// VerbStreamPurge asks the leader to purge subjects of the JetStream
	// stream a cdc_apply pipeline's target keeps (StreamPurgeRequest);
	// VerbStreamConsumer to create a cdc_apply pipeline's consumer on
	// SLUICE_CDC (StreamConsumerRequest). Workers may neither purge a
	// stream nor create a consumer themselves.
	VerbStreamPurge    = "stream.purge"
	VerbStreamConsumer = "stream.consumer"
)

// ResnapshotRequest asks for an incremental snapshot of Table, one of the
// tables of the cdc pipeline Pipeline.
type ResnapshotRequest struct {
	Pipeline string `json:"pipeline"`
	Table    string `json:"table"`
}

// ResnapshotReply is the snapshot queued (or the one pending already for
// the table).
type ResnapshotReply struct {
	Pipeline string        `json:"pipeline"`
	Table    string        `json:"table"`
	Snapshot TableSnapshot `json:"snapshot"`
}

// WorkerStreamSubject is the core NATS subject a worker receives stream
// assignments on.
func WorkerStreamSubject(worker string) string { return "sluice.workers." + worker + ".stream" }

// StreamAssignment gives a stream to a worker. It carries what the
// worker needs to open the stream, not the whole pipeline spec: the
// pipeline's connectors and the settings of its cdc section.
type StreamAssignment struct {
	V        int     `json:"v"`
	Pipeline string  `json:"pipeline"`
	Pattern  Pattern `json:"pattern"`
	// Epoch fences the lease: a renewal of an older epoch is refused.
	Epoch uint64 `json:"epoch"`
	// Revision is the pipeline's revision the endpoints and settings are
	// of.
	Revision int64 `json:"revision"`
	// Source and Sink are the pipeline's connectors, their configurations
	// as the spec holds them (${ENV} references are expanded by the worker
	// that opens them). A cdc pipeline has no Sink: its events go to
	// SLUICE_CDC.
	Source Endpoint `json:"source"`
	Sink   Endpoint `json:"sink,omitzero"`
	// Settings are the stream's settings beside its connectors'.
	Settings StreamSettings `json:"settings,omitzero"`
	Lease    time.Duration  `json:"lease"`
	// Contract is the pipeline's data contract (JSON of contract.Spec, its
	// key a ${NAME} reference), applied by the worker to every event
	// before it is published (cdc) or applied (cdc_apply); empty when it
	// has none.
	Contract json.RawMessage `json:"contract,omitempty"`
	// Trace is the W3C trace context of the snapshot run of the cdc
	// pipeline (for a cdc_apply pipeline, of its upstream's), which the
	// spans of the stream's batches link to; empty when there is none.
	Trace map[string]string `json:"trace,omitempty"`
}

// StreamSettings are the settings of a streamed pipeline that are not the
// configuration of one of its connectors: those of its spec's cdc section,
// and the upstream of a cdc_apply pipeline. Zero values mean the
// connector's defaults.
type StreamSettings struct {
	// Slot and Publication name a cdc pipeline's replication slot and
	// publication (the spec's cdc.slot and cdc.publication, defaulting to
	// sluice_<name>).
	Slot        string `json:"slot,omitempty"`
	Publication string `json:"publication,omitempty"`
	// Heartbeat is the interval of the heartbeat that lets an idle slot
	// advance (cdc.heartbeat).
	Heartbeat time.Duration `json:"heartbeat,omitempty"`
	// MessageEvents is the most events packed into one SLUICE_CDC message
	// (cdc.message_events).
	MessageEvents int `json:"message_events,omitempty"`
	// TargetRows bounds the rows of one task of the initial snapshot
	// (cdc.target_rows).
	TargetRows int64 `json:"target_rows,omitempty"`
	// Upstream is the cdc pipeline whose events a cdc_apply pipeline
	// applies (its source.pipeline).
	Upstream string `json:"upstream,omitempty"`
	// Snapshots are the incremental snapshots a cdc pipeline's reader is
	// to take, in order, interleaved with the stream: of tables added to
	// the pipeline since it streams, and those asked for by `sluice cdc
	// resnapshot`. The leader keeps them until the reader reports each
	// done.
	Snapshots []TableSnapshot `json:"snapshots,omitempty"`
	// SnapshotChunkRows is the most rows of one chunk of an incremental
	// snapshot (cdc.snapshot_chunk_rows).
	SnapshotChunkRows int `json:"snapshot_chunk_rows,omitempty"`
	// MaxLagBytes bounds the WAL a cdc pipeline's slot may retain while
	// its reader takes an incremental snapshot: past it, the next chunk
	// waits until the slot caught up (cdc.max_lag).
	MaxLagBytes int64 `json:"max_lag_bytes,omitempty"`
}

// TableSnapshot asks a cdc pipeline's reader for an incremental snapshot
// of one table.
type TableSnapshot struct {
	// ID names the request; the reader reports its progress under it.
	ID string `json:"id"`
	// Table is the table, "schema.table".
	Table string `json:"table"`
	// Reason is "added" (the table was added to the pipeline) or
	// "resnapshot" (asked for).
	Reason    string    `json:"reason,omitempty"`
	Requested time.Time `json:"requested,omitzero"`
}

// Reasons of a TableSnapshot.
const (
	SnapshotAdded      = "added"
	SnapshotResnapshot = "resnapshot"
)

// AssignReply is a worker's answer to a StreamAssignment.
type AssignReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// LeaseRenewRequest renews a stream lease and reports the stream's progress.
type LeaseRenewRequest struct {
	Pipeline string       `json:"pipeline"`
	Worker   string       `json:"worker"`
	Epoch    uint64       `json:"epoch"`
	Status   StreamStatus `json:"status"`
}

// LeaseRenewReply answers a renewal. A refused renewal (OK false) means the
// worker must stop the stream now.
type LeaseRenewReply struct {
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
}

// StreamPurgeRequest asks the leader to purge the messages on Subject (a
// subject filter) from the stream the target of cdc_apply pipeline
// Pipeline keeps. The leader purges only for the holder of the pipeline's
// lease (Worker at Epoch) and only subjects of that stream.
type StreamPurgeRequest struct {
	Pipeline string `json:"pipeline"`
	Worker   string `json:"worker"`
	Epoch    uint64 `json:"epoch"`
	Subject  string `json:"subject"`
}

// StreamConsumerRequest asks the leader to create the durable consumer on
// SLUICE_CDC of cdc_apply pipeline Pipeline, holding at most MaxAckPending
// messages unacknowledged, after deleting it when Recreate is set. The
// leader does it only for the holder of the pipeline's lease (Worker at
// Epoch), and chooses the rest of the consumer's configuration.
type StreamConsumerRequest struct {
	Pipeline      string `json:"pipeline"`
	Worker        string `json:"worker"`
	Epoch         uint64 `json:"epoch"`
	MaxAckPending int    `json:"max_ack_pending"`
	Recreate      bool   `json:"recreate,omitempty"`
}

// StreamOpReply answers a StreamPurgeRequest or a StreamConsumerRequest:
// OK once it is done, or why it was not.
type StreamOpReply struct {
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
}

// Stream states reported by the worker holding a stream.
const (
	StreamStarting  = "starting"
	StreamStreaming = "streaming"
	StreamRetrying  = "retrying"
)

// StreamStatus is a stream's progress, as its worker last reported it.
type StreamStatus struct {
	State string `json:"state"`
	// ConfirmedLSN, ReceivedLSN and LagBytes describe a cdc pipeline's
	// slot: the position confirmed to the server (everything before it is
	// in SLUICE_CDC), the last position received, and the WAL the server
	// retains for the slot beyond ConfirmedLSN.
	ConfirmedLSN string `json:"confirmed_lsn,omitempty"`
	ReceivedLSN  string `json:"received_lsn,omitempty"`
	LagBytes     int64  `json:"lag_bytes"`
	// SourceLSN is the source's WAL position when LagBytes was measured,
	// at LagAt (the worker's clock): once ConfirmedLSN reaches it, every
	// change committed before LagAt is in SLUICE_CDC.
	SourceLSN string    `json:"source_lsn,omitempty"`
	LagAt     time.Time `json:"lag_at,omitzero"`
	// LagTime is how far behind the source the stream is: for a slot,
	// the age of the oldest transaction received but not yet confirmed
	// (0 when everything received is confirmed); for an apply, the age of
	// the last event applied while events are pending.
	LagTime time.Duration `json:"lag_time"`
	// LastCommit is the commit time of the last transaction confirmed
	// (cdc) or applied (cdc_apply).
	LastCommit time.Time `json:"last_commit,omitzero"`
	// Events counts events published (cdc) or applied (cdc_apply) by this
	// holder of the lease; Applied is the stream sequence applied last and
	// Pending the messages (of one or more events) not yet applied
	// (cdc_apply).
	Events  int64  `json:"events"`
	Applied uint64 `json:"applied,omitempty"`
	Pending uint64 `json:"pending,omitempty"`
	// Error is the last error, while State is retrying.
	Error string    `json:"error,omitempty"`
	Time  time.Time `json:"time"`
	// Tables lists the tables of the stream that are not simply
	// streaming: stopped by a permanent error (cdc_apply), or being
	// snapshotted (cdc).
	Tables []TableStatus `json:"tables,omitempty"`
}

// Table states of a TableStatus.
const (
	// TableStopped: a cdc_apply pipeline no longer applies the table's
	// events, after a permanent error; the other tables go on.
	TableStopped = "stopped"
	// TableSnapshotPending, TableSnapshotting and TableSnapshotted: a cdc
	// pipeline's reader is to take, takes or took an incremental snapshot
	// of the table (TableStatus.Snapshot).
	TableSnapshotPending = "snapshot pending"
	TableSnapshotting    = "snapshotting"
	TableSnapshotted     = "snapshotted"
	// TableSnapshotFailed: the reader cannot take the table's snapshot
	// (TableStatus.Error says why); it streams the other tables.
	TableSnapshotFailed = "snapshot failed"
)

// TableStatus is the state of one source table of a stream.
type TableStatus struct {
	// Table is the source table, "schema.table".
	Table string `json:"table"`
	State string `json:"state"`
	// Error says why the table stopped.
	Error string `json:"error,omitempty"`
	// Seq is, for a stopped table, the stream sequence of its first event
	// not applied.
	Seq uint64 `json:"seq,omitempty"`
	// Since is when the table entered its state.
	Since time.Time `json:"since,omitzero"`
	// Snapshot is the ID of the incremental snapshot (TableSnapshot.ID)
	// of a table in a snapshot state; Rows the rows it published so far.
	Snapshot string `json:"snapshot,omitempty"`
	Rows     int64  `json:"rows,omitempty"`
	// Throttled counts the times the snapshot waited for the slot's lag
	// to fall under cdc.max_lag; LastThrottled is when it last did,
	// ThrottledSeconds how long it waited in all, and Throttling reports
	// that it waits now.
	Throttled        int       `json:"throttled,omitempty"`
	LastThrottled    time.Time `json:"last_throttled,omitzero"`
	ThrottledSeconds float64   `json:"throttled_seconds,omitempty"`
	Throttling       bool      `json:"throttling,omitempty"`
}

// CDCStatusReply lists the streams of every cdc and cdc_apply pipeline.
type CDCStatusReply struct {
	Streams []StreamInfo `json:"streams"`
	// Cleanups are what deleted cdc and cdc_apply pipelines left behind
	// and the leader has yet to remove.
	Cleanups []CleanupInfo `json:"cleanups,omitempty"`
}

// CleanupInfo is what a deleted pipeline left behind, pending removal.
type CleanupInfo struct {
	Pipeline string    `json:"pipeline"`
	What     string    `json:"what"`
	Deleted  time.Time `json:"deleted"`
}

// StreamInfo is one stream as the leader knows it.
type StreamInfo struct {
	Pipeline string  `json:"pipeline"`
	Pattern  Pattern `json:"pattern"`
	// Phase is "snapshot" while a cdc pipeline's initial snapshot runs,
	// else "streaming".
	Phase string `json:"phase"`
	// SnapshotRun is the run that loaded (or loads) the initial snapshot;
	// ConsistentLSN the slot position the snapshot is consistent with.
	SnapshotRun   string `json:"snapshot_run,omitempty"`
	ConsistentLSN string `json:"consistent_lsn,omitempty"`
	Slot          string `json:"slot,omitempty"`
	// Worker holds the lease of Epoch; Renewed is when it last renewed.
	Worker  string       `json:"worker,omitempty"`
	Epoch   uint64       `json:"epoch"`
	Renewed time.Time    `json:"renewed,omitzero"`
	Status  StreamStatus `json:"status"`
	// Snapshots are a cdc pipeline's incremental snapshots still to take
	// (its holder reports their progress in Status.Tables); Snapshotted
	// the last ones taken (or given up), the latest last.
	Snapshots   []TableSnapshot `json:"snapshots,omitempty"`
	Snapshotted []TableStatus   `json:"snapshotted,omitempty"`
	// Snapshot is the progress of the initial snapshot run (SnapshotRun),
	// while it runs and after; nil without one.
	Snapshot *SnapshotProgress `json:"snapshot,omitempty"`
	// Upstream is the cdc pipeline a cdc_apply pipeline applies.
	Upstream string `json:"upstream,omitempty"`
}

// SnapshotProgress is how far a cdc pipeline's initial snapshot run got:
// its tables (a table is done when all its chunks are), chunk tasks and
// the rows they published.
type SnapshotProgress struct {
	Run        string `json:"run"`
	State      string `json:"state"`
	Tables     int    `json:"tables"`
	TablesDone int    `json:"tables_done"`
	Chunks     int    `json:"chunks"`
	ChunksDone int    `json:"chunks_done"`
	Rows       int64  `json:"rows"`
}
