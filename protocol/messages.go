package protocol

import (
	"cmp"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Version is the wire version this build speaks.
const Version = 1

// Pattern names the ingestion pattern a pipeline implements.
type Pattern string

// The ingestion patterns.
const (
	PatternFullLoad    Pattern = "full_load"
	PatternIncremental Pattern = "incremental"
	PatternCDC         Pattern = "cdc"
	// PatternCDCApply applies the change events of a cdc pipeline to a
	// target (a PostgreSQL replica, a change log of files).
	PatternCDCApply    Pattern = "cdc_apply"
	PatternPassthrough Pattern = "passthrough"
	PatternTransform   Pattern = "transform"
	PatternCompact     Pattern = "compact"
	PatternReadiness   Pattern = "readiness"
	PatternTrigger     Pattern = "trigger"
)

// Endpoint names a connector kind and carries its configuration as JSON.
// The configuration is the one from the pipeline spec before `${ENV}`
// expansion: secrets are expanded where the connector is opened, so they
// never travel on the wire or sit in the coordinator's state.
type Endpoint struct {
	Kind   string          `json:"kind"`
	Config json.RawMessage `json:"config,omitempty"`
}

// Window is a half-open range of an incremental run's delta column: the
// run reads the rows whose delta column is >= the window's low bound and
// < its high bound. A window of a time column is [From, To); a window of
// an integer column (an id, a sequence, a version counter) has Values set
// and is [Lo, Hi), From and To zero.
type Window struct {
	From time.Time `json:"from,omitzero"`
	To   time.Time `json:"to,omitzero"`
	// Values marks a window of integer values [Lo, Hi).
	Values bool  `json:"values,omitempty"`
	Lo     int64 `json:"lo,omitempty"`
	Hi     int64 `json:"hi,omitempty"`
}

// ValueWindow returns the window [lo, hi) of an integer delta column.
func ValueWindow(lo, hi int64) Window { return Window{Values: true, Lo: lo, Hi: hi} }

// Empty reports whether the window holds no value.
func (w Window) Empty() bool {
	if w.Values {
		return w.Lo >= w.Hi
	}
	return !w.From.Before(w.To)
}

// String renders the window as "[from, to)": times in RFC 3339, UTC.
func (w Window) String() string {
	if w.Values {
		return "[" + strconv.FormatInt(w.Lo, 10) + ", " + strconv.FormatInt(w.Hi, 10) + ")"
	}
	return "[" + w.From.UTC().Format(time.RFC3339Nano) + ", " + w.To.UTC().Format(time.RFC3339Nano) + ")"
}

// Equal reports whether w and o are the same range.
func (w Window) Equal(o Window) bool {
	if w.Values || o.Values {
		return w.Values == o.Values && w.Lo == o.Lo && w.Hi == o.Hi
	}
	return w.From.Equal(o.From) && w.To.Equal(o.To)
}

// Compare orders windows of one kind by their low bounds, then their high
// bounds; a time window comes before a window of values.
func (w Window) Compare(o Window) int {
	switch {
	case w.Values != o.Values:
		if w.Values {
			return 1
		}
		return -1
	case w.Values:
		return cmp.Or(cmp.Compare(w.Lo, o.Lo), cmp.Compare(w.Hi, o.Hi))
	}
	return cmp.Or(w.From.Compare(o.From), w.To.Compare(o.To))
}

// Covers reports whether w holds every value of o (of the same kind).
func (w Window) Covers(o Window) bool {
	if w.Values != o.Values {
		return false
	}
	if w.Values {
		return w.Lo <= o.Lo && o.Hi <= w.Hi
	}
	return !w.From.After(o.From) && !w.To.Before(o.To)
}

// Touches reports whether w and o (of the same kind) overlap or meet, so
// that their union is one range.
func (w Window) Touches(o Window) bool {
	if w.Values != o.Values {
		return false
	}
	if w.Values {
		return w.Lo <= o.Hi && o.Lo <= w.Hi
	}
	return !w.To.Before(o.From) && !o.To.Before(w.From)
}

// Overlaps reports whether w and o (of the same kind) share a value.
func (w Window) Overlaps(o Window) bool {
	if w.Values != o.Values {
		return false
	}
	if w.Values {
		return w.Lo < o.Hi && o.Lo < w.Hi
	}
	return w.From.Before(o.To) && o.From.Before(w.To)
}

// Union returns the smallest range holding w and o (of the same kind).
func (w Window) Union(o Window) Window {
	if w.Values {
		return ValueWindow(min(w.Lo, o.Lo), max(w.Hi, o.Hi))
	}
	if o.From.Before(w.From) {
		w.From = o.From
	}
	if o.To.After(w.To) {
		w.To = o.To
	}
	return w
}

// Partition is one bounded piece of a run's input: a file set, a byte range,
// a key range, a time window or an offset range. Spec is opaque to everyone
// but the source connector that planned it.
type Partition struct {
	// Key identifies the partition within its run, for people: "files[0:4]".
	Key string `json:"key"`
	// Group names the part of the run's input the partition belongs to
	// when a run reads several (the table of a cdc snapshot's chunk), for
	// progress by part; empty otherwise.
	Group string `json:"group,omitempty"`
	// Spec is the connector-specific description of the bounds.
	Spec json.RawMessage `json:"spec"`
	// Rows and Bytes are the planner's estimates; zero when unknown.
	Rows  int64 `json:"rows,omitempty"`
	Bytes int64 `json:"bytes,omitempty"`
}

// Task is one bounded unit of work of a run, pulled by one worker.
type Task struct {
	V         int       `json:"v"`
	RunID     string    `json:"run"`
	TaskID    string    `json:"task"`
	Pipeline  string    `json:"pipeline"`
	Pattern   Pattern   `json:"pattern"`
	Source    Endpoint  `json:"source"`
	Sink      Endpoint  `json:"sink"`
	Partition Partition `json:"partition"`
	// Enqueue counts how many times the coordinator published this task
	// (delivery attempts within one publication are counted by JetStream).
	Enqueue int `json:"enqueue"`
	// Trace holds the W3C trace context of the run (traceparent, tracestate).
	Trace map[string]string `json:"trace,omitempty"`
	// Params are the run's parameters (from a trigger or the command line).
	Params map[string]string `json:"params,omitempty"`
	// LogicalTime is the run's logical time, when the pattern has one.
	LogicalTime time.Time `json:"logical_time,omitzero"`
	// MaxAttempts is how many deliveries a retryable failure gets before the
	// worker reports the task dead; Backoff is the delay before the first
	// retry, doubled for each later one.
	MaxAttempts int           `json:"max_attempts,omitempty"`
	Backoff     time.Duration `json:"backoff,omitempty"`
	// Schema is the run's plan's schema, for the sink; nil when the source
	// gave none.
	Schema *Schema `json:"schema,omitempty"`
	// Contract is the pipeline's data contract (JSON of contract.Spec, its
	// key a ${NAME} reference), which the worker applies to the rows
	// between the read and the write; empty when it has none.
	Contract json.RawMessage `json:"contract,omitempty"`
	// Units is set for a task of a run planned in units (a passthrough's,
	// and a transform's whose source and sink exchange units of rows a
	// contract can transform): the worker reads and writes its partition
	// as units, applying Contract to them.
	Units bool `json:"units,omitempty"`
	// Token is the task's token from the cluster's key, which its result
	// carries back; empty when the cluster signs nothing.
	Token string `json:"token,omitempty"`
}

// ErrorClass tells how a failed task should be handled.
type ErrorClass string

// The error classes.
const (
	// ErrorNone marks a success.
	ErrorNone ErrorClass = ""
	// ErrorRetryable is a failure that may pass on another attempt (I/O, network).
	ErrorRetryable ErrorClass = "retryable"
	// ErrorPermanent is a failure that will fail again (bad data, bad config).
	ErrorPermanent ErrorClass = "permanent"
	// ErrorReplan is a failure no attempt of the task can cure but a new
	// plan of its run can: what the run was planned on is gone (the
	// snapshot a source exported, held by the leader that planned the run).
	// The coordinator plans the run again as a new attempt.
	ErrorReplan ErrorClass = "replan"
)

// Result reports the outcome of one task attempt to the coordinator.
type Result struct {
	V        int    `json:"v"`
	RunID    string `json:"run"`
	TaskID   string `json:"task"`
	Pipeline string `json:"pipeline"`
	// Attempt is the JetStream delivery count of the task message.
	Attempt int    `json:"attempt"`
	Worker  string `json:"worker"`
	Rows    int64  `json:"rows"`
	Bytes   int64  `json:"bytes"`
	// Checksum is the order-independent checksum of the rows written (the
	// sum of connectors.Checksum; its row count is Rows).
	Checksum Sum `json:"checksum,omitempty"`
	// Location is where the task's staged output lies, for the sink's commit.
	Location   string     `json:"location,omitempty"`
	ErrorClass ErrorClass `json:"error_class,omitempty"`
	Error      string     `json:"error,omitempty"`
	Started    time.Time  `json:"started,omitzero"`
	Finished   time.Time  `json:"finished,omitzero"`
	// Token is the token of the task (Task.Token).
	Token string `json:"token,omitempty"`
}

// Sum is the sum of an order-independent checksum of rows: the sum,
// modulo 2^64, of one 64-bit hash per row (connectors.Checksum.Sum). Its
// text and JSON form is 16 lower-case hex digits, the form it had as a
// string: a result, log entry or snapshot written with the string still
// decodes, and "" decodes as 0.
type Sum uint64

// String formats s as 16 hex digits.
func (s Sum) String() string { return fmt.Sprintf("%016x", uint64(s)) }

// MarshalText formats s as 16 hex digits.
func (s Sum) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses up to 16 hex digits; an empty text is 0.
func (s *Sum) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*s = 0
		return nil
	}
	v, err := strconv.ParseUint(string(b), 16, 64)
	if err != nil {
		return fmt.Errorf("checksum %q: want up to 16 hex digits", b)
	}
	*s = Sum(v)
	return nil
}

// Failed reports whether the result is a failure.
func (r Result) Failed() bool { return r.ErrorClass != ErrorNone || r.Error != "" }

// Trigger is the envelope of an event that asks for a run of a pipeline.
type Trigger struct {
	V         int               `json:"v"`
	Pipeline  string            `json:"pipeline"`
	Params    map[string]string `json:"params,omitempty"`
	EventTime time.Time         `json:"event_time,omitzero"`
	// LogicalTime is the run's logical time, for windowed and partitioned
	// patterns; zero means "now" on the leader.
	LogicalTime time.Time `json:"logical_time,omitzero"`
	// Source names who published the trigger, for people.
	Source string `json:"source,omitempty"`
}

// TriggerContext is what a run keeps of the trigger that started it.
type TriggerContext struct {
	// Subject is the subject the trigger was published on; MsgID its
	// Nats-Msg-Id (empty when it had none) and StreamSeq its sequence in
	// SLUICE_TRIGGERS.
	Subject   string `json:"subject"`
	MsgID     string `json:"msg_id,omitempty"`
	StreamSeq uint64 `json:"stream_seq,omitempty"`
	// Headers is the envelope: the message's headers, first value of each.
	Headers map[string]string `json:"headers,omitempty"`
	// Source is who published the trigger, from its payload.
	Source string `json:"source,omitempty"`
	// EventTime is when the event happened, from its payload (zero when it
	// gave none); PublishTime is when JetStream stored it; ProcessingTime
	// is when the leader created the run.
	EventTime      time.Time `json:"event_time,omitzero"`
	PublishTime    time.Time `json:"publish_time,omitzero"`
	ProcessingTime time.Time `json:"processing_time"`
	// HandlerVersion names the code and the pipeline revision that
	// handled the trigger.
	HandlerVersion string `json:"handler_version"`
	// Trace is the W3C trace context the trigger carried (traceparent,
	// tracestate), if any.
	Trace map[string]string `json:"trace,omitempty"`
	// Deliveries is the JetStream delivery count when the run was created.
	Deliveries int `json:"deliveries,omitempty"`
	// After is the upstream run whose commit started this run (spec
	// trigger.after); Subject and MsgID are then those of its run event.
	After *UpstreamRun `json:"after,omitempty"`
	// Schedule is the schedule that started the run; EventTime is then
	// the schedule's tick, which is also the run's logical time.
	Schedule string `json:"schedule,omitempty"`
}

// UpstreamRun is the committed run of an upstream pipeline that started a
// downstream run: where its dataset is and which version it exposed.
type UpstreamRun struct {
	Pipeline string `json:"pipeline"`
	RunID    string `json:"run"`
	Location string `json:"location,omitempty"`
	Version  int64  `json:"version"`
}

// RunEvent is published by the leader when a run ends.
type RunEvent struct {
	V              int       `json:"v"`
	RunID          string    `json:"run"`
	Pipeline       string    `json:"pipeline"`
	Outcome        string    `json:"outcome"`
	Location       string    `json:"location,omitempty"`
	DatasetVersion int64     `json:"dataset_version,omitempty"`
	Rows           int64     `json:"rows"`
	Bytes          int64     `json:"bytes"`
	Checksum       string    `json:"checksum,omitempty"`
	Error          string    `json:"error,omitempty"`
	Time           time.Time `json:"time"`
	TraceID        string    `json:"trace_id,omitempty"`
	// Trigger is the context of the trigger that started the run, if one did.
	Trigger *TriggerContext `json:"trigger,omitempty"`
}

// ReadyEvent is published by the leader on ReadyEventSubject once per
// partition a readiness pipeline finds complete, in partition order. Its
// JetStream message id is ReadyMsgID: a leader that takes over between
// finding a partition and recording its announcement publishes the same
// event again, which the stream drops as a duplicate.
type ReadyEvent struct {
	V        int    `json:"v"`
	Pipeline string `json:"pipeline"`
	// Partition names the partition as its source shows it: its directory
	// or S3 prefix; for a table's snapshot, the snapshot id.
	Partition string `json:"partition"`
	// Window is the time range the partition holds; for a snapshot, From
	// and To are both when it was committed.
	Window Window `json:"window"`
	// Snapshot, for a readiness pipeline watching a table's snapshots, is
	// the id of the snapshot announced, and Summary the table format's
	// summary of it (its "operation", files and rows added).
	Snapshot string            `json:"snapshot,omitempty"`
	Summary  map[string]string `json:"summary,omitempty"`
	// Source is the kind of the source watched.
	Source string `json:"source"`
	// Seq numbers the pipeline's ready events from 1.
	Seq int64 `json:"seq"`
	// Time is when the leader found the partition complete.
	Time time.Time `json:"time"`
}

// ReadyMsgID is the JetStream message id of the ready event of the
// partition of pipeline starting at from.
func ReadyMsgID(pipeline string, from time.Time) string {
	return "ready:" + pipeline + ":" + from.UTC().Format(time.RFC3339Nano)
}

// ReadySnapshotMsgID is the JetStream message id of the ready event of
// snapshot id of the table pipeline watches.
func ReadySnapshotMsgID(pipeline, id string) string {
	return "ready:" + pipeline + ":snapshot:" + id
}

// Heartbeat is published by each worker every few seconds on
// SubjectHeartbeat so that `sluice status` can list the live workers.
type Heartbeat struct {
	V       int       `json:"v"`
	Worker  string    `json:"worker"`
	Host    string    `json:"host,omitempty"`
	Slots   int       `json:"slots"`
	Busy    int       `json:"busy"`
	Tasks   []string  `json:"tasks,omitempty"`
	Done    int64     `json:"done"`
	Failed  int64     `json:"failed"`
	Started time.Time `json:"started"`
	Time    time.Time `json:"time"`
}
