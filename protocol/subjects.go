package protocol

import (
	"fmt"
	"regexp"
	"time"
)

// Stream names. Each stream captures the subjects listed beside it.
const (
	// StreamTasks is a work-queue stream of tasks; all workers pull from one
	// shared durable consumer.
	StreamTasks = "SLUICE_TASKS"
	// StreamResults carries task results back to the coordinator leader.
	StreamResults = "SLUICE_RESULTS"
	// StreamTriggers captures trigger events that start runs.
	StreamTriggers = "SLUICE_TRIGGERS"
	// StreamEvents captures run events (committed, failed).
	StreamEvents = "SLUICE_EVENTS"
	// StreamDLQ keeps every task or trigger that could not be processed.
	StreamDLQ = "SLUICE_DLQ"
	// StreamCDC is the central change stream.
	StreamCDC = "SLUICE_CDC"
	// StreamExternal captures the foreign subjects that pipelines'
	// triggers name (those no other stream captures) and
	// sluice.external.<pipeline>, where the dead-lettered events of a
	// trigger feed are replayed.
	StreamExternal = "SLUICE_EXTERNAL"
)

// CDCDuplicateWindow is the SLUICE_CDC dedupe window: a reader restarted
// within it re-publishes the unconfirmed tail of its slot without
// duplicates. CDCRetention is how long SLUICE_CDC keeps an event: a
// cdc_apply pipeline stopped for longer misses what expired.
// CDCMaxBytes is the default cap of SLUICE_CDC: full, it refuses new
// events (its readers stop and the sources keep the changes) rather than
// drop events an applier has not read.
const (
	CDCDuplicateWindow       = 2 * time.Minute
	CDCRetention             = 7 * 24 * time.Hour
	CDCMaxBytes        int64 = 4 << 30
)

// Subject wildcards captured by the streams.
const (
	SubjectTasksAll    = "sluice.tasks.>"
	SubjectResultsAll  = "sluice.results.>"
	SubjectTriggersAll = "sluice.trigger.>"
	SubjectEventsAll   = "sluice.events.>"
	SubjectDLQAll      = "sluice.dlq.>"
	SubjectCDCAll      = "sluice.cdc.>"
	// SubjectHeartbeat is a core NATS subject (no stream) on which workers
	// announce themselves.
	SubjectHeartbeat = "sluice.workers.heartbeat"
	// SubjectAPIPrefix prefixes the request/reply control API served by the
	// coordinator leader: sluice.api.<verb>.
	SubjectAPIPrefix = "sluice.api."
)

// SubjectExternalAll is the subject of the events replayed to pipelines
// triggered from outside Sluice.
const SubjectExternalAll = "sluice.external.>"

// ExternalSubject is where an event of a pipeline's external trigger is
// published again (a dead letter replayed): the leader treats it as an
// event of the pipeline's trigger.
func ExternalSubject(pipeline string) string { return "sluice.external." + pipeline }

// ExternalConsumer is the leader's durable consumer of the events of a
// pipeline's external trigger on the stream that captures its subject;
// the consumer of its replayed events adds "-replay".
func ExternalConsumer(pipeline string) string { return "sluice-ext-" + pipeline }

// CDCApplyConsumer is the durable SLUICE_CDC consumer of a cdc_apply
// pipeline.
func CDCApplyConsumer(pipeline string) string { return "cdc_apply_" + pipeline }

// Durable consumer names.
const (
	ConsumerWorkers = "sluice-workers"
	ConsumerLeader  = "sluice-leader"
	// ConsumerTriggers is the leader's durable consumer of SLUICE_TRIGGERS.
	ConsumerTriggers = "sluice-triggers"
	// QueueLeader is the queue group the leader's API subscription joins.
	QueueLeader = "sluice-leader"
)

// Header names set on messages in addition to the W3C trace context.
const (
	HeaderMsgID   = "Nats-Msg-Id"
	HeaderRun     = "Sluice-Run"
	HeaderTask    = "Sluice-Task"
	HeaderVersion = "Sluice-Version"
	// Dead letters carry why they died, after how many attempts, and the
	// trace of their run.
	HeaderReason   = "Sluice-Reason"
	HeaderAttempts = "Sluice-Attempts"
	HeaderTraceID  = "Sluice-Trace-Id"
	// A dead trigger also names the subject, stream sequence and message
	// id it had in SLUICE_TRIGGERS.
	HeaderOrigSubject = "Sluice-Orig-Subject"
	HeaderOrigSeq     = "Sluice-Orig-Seq"
	HeaderOrigMsgID   = "Sluice-Orig-Msg-Id"
	// HeaderEvents is the number of change events a SLUICE_CDC message
	// holds (see DecodeChangeEvents).
	HeaderEvents = "Sluice-Events"
	// HeaderSignature is the leader's signature of a task, stream
	// assignment or lease grant (package signing).
	HeaderSignature = "Sluice-Sig"
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ValidName reports whether s can be used as a pipeline name: it becomes a
// single subject token, so it holds only lower-case letters, digits, '_' and
// '-', starts with a letter or digit and is at most 63 characters long.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// TaskSubject is the subject the tasks of one run are published on; a run's
// tasks that are still queued can be purged by this subject when it fails.
func TaskSubject(pipeline, runID string) string { return "sluice.tasks." + pipeline + "." + runID }

// ResultSubject is the subject a result of a task of pipeline is published on.
func ResultSubject(pipeline string) string { return "sluice.results." + pipeline }

// TriggerSubject is the subject that starts a run of pipeline.
func TriggerSubject(pipeline string) string { return "sluice.trigger." + pipeline }

// TriggerPipeline returns the pipeline a trigger subject names; false when
// subject is not sluice.trigger.<valid pipeline name>.
func TriggerPipeline(subject string) (string, bool) {
	const prefix = "sluice.trigger."
	if len(subject) <= len(prefix) || subject[:len(prefix)] != prefix {
		return "", false
	}
	name := subject[len(prefix):]
	return name, ValidName(name)
}

// DLQKind returns the kind ("task" or "trigger") and the pipeline of a
// dead-letter subject.
func DLQKind(subject string) (kind, pipeline string, ok bool) {
	const prefix = "sluice.dlq."
	if len(subject) <= len(prefix) || subject[:len(prefix)] != prefix {
		return "", "", false
	}
	rest := subject[len(prefix):]
	for i := 0; i < len(rest); i++ {
		if rest[i] == '.' {
			return rest[:i], rest[i+1:], true
		}
	}
	return "", "", false
}

// RunEventSubject is the subject of a run event with the given outcome
// ("committed" or "failed").
func RunEventSubject(pipeline, outcome string) string {
	return "sluice.events.run." + pipeline + "." + outcome
}

// ReadyEventSubject is the subject of the ready events of a readiness
// pipeline: one per partition it found complete.
func ReadyEventSubject(pipeline string) string { return "sluice.events.ready." + pipeline }

// DLQSubject is the subject a dead letter from the named origin stream goes to.
func DLQSubject(kind, pipeline string) string { return "sluice.dlq." + kind + "." + pipeline }

// APISubject is the subject of one control API verb.
func APISubject(verb string) string { return SubjectAPIPrefix + verb }

// TaskMsgID is the Nats-Msg-Id of a task publication; JetStream drops a
// second publication with the same id inside its duplicate window.
func TaskMsgID(runID, taskID string, enqueue int) string {
	return fmt.Sprintf("task:%s:%s:%d", runID, taskID, enqueue)
}

// ResultMsgID is the Nats-Msg-Id of a result publication.
func ResultMsgID(runID, taskID string, attempt int) string {
	return fmt.Sprintf("result:%s:%s:%d", runID, taskID, attempt)
}
