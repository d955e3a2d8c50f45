package natsauth

import (
	"fmt"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/protocol"
)

// Role is what a NATS user of the cluster does.
type Role string

// The roles of a cluster. Each process connects as one of them.
const (
	// RoleCoordinator runs `sluice coordinator`: it creates the streams,
	// publishes tasks, answers the control API and reads every stream.
	RoleCoordinator Role = "coordinator"
	// RoleWorker runs `sluice worker`: it pulls tasks, publishes results
	// and heartbeats, renews stream leases, writes change events and
	// latest-state rows, and consumes SLUICE_CDC. It cannot publish a
	// task, a trigger or another API request, nor create, update, delete
	// or purge a stream, nor create or delete a consumer (see
	// workerPublish).
	RoleWorker Role = "worker"
	// RoleTrigger publishes trigger events (sluice.trigger.<pipeline>)
	// and nothing else.
	RoleTrigger Role = "trigger"
	// RoleObserver reads: the read-only API verbs, run events and stream
	// information.
	RoleObserver Role = "observer"
	// RoleAdmin runs the client commands that change the cluster (apply,
	// run, delete, rollback, backfill, dlq replay): every API verb but
	// the workers' (lease renewals, stream requests), triggers, and
	// JetStream's API.
	RoleAdmin Role = "admin"
)

// Roles lists every role, in the order a configuration names them.
var Roles = []Role{RoleCoordinator, RoleWorker, RoleTrigger, RoleObserver, RoleAdmin}

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	r := Role(strings.ToLower(strings.TrimSpace(s)))
	if !slices.Contains(Roles, r) {
		return "", fmt.Errorf("unknown role %q (one of coordinator, worker, trigger, observer, admin)", s)
	}
	return r, nil
}

// Permissions are a NATS user's rights, as a nats-server configuration
// writes them.
type Permissions struct {
	PublishAllow, PublishDeny     []string
	SubscribeAllow, SubscribeDeny []string
	// AllowResponses lets the user answer requests it received (to their
	// reply subjects) without a publish right on them.
	AllowResponses bool
}

// ReadOnlyVerbs are the control API verbs that change nothing.
var ReadOnlyVerbs = []string{
	protocol.VerbStatus, protocol.VerbRunStatus, protocol.VerbPipelines,
	protocol.VerbBackfillGet, protocol.VerbBackfills, protocol.VerbPipelineGet, protocol.VerbCDCStatus,
}

// coreStreams are Sluice's own streams, which the coordinator creates.
var coreStreams = []string{
	protocol.StreamTasks, protocol.StreamResults, protocol.StreamTriggers,
	protocol.StreamEvents, protocol.StreamDLQ, protocol.StreamExternal, protocol.StreamCDC,
}

// workerPublish is what a worker publishes: its messages, and the
// JetStream API requests it makes, each on the streams it needs. NATS
// matches whole tokens, so a stream or consumer name of the pattern is
// exact or any ('*'):
//
//   - tasks: the shared consumer's information and pulls, and the acks
//     (ack, nak, in progress, term) of its deliveries;
//   - results, heartbeats, change events (sluice.cdc.>), latest-state
//     rows (sluice.latest.>): plain or JetStream publications;
//   - the control API's lease renewals, and the requests that have the
//     leader do for the holder of a cdc_apply lease what a worker may not:
//     create its consumer on SLUICE_CDC (a consumer's creator chooses
//     where a push consumer delivers: the server would publish there on
//     its behalf, a control API request for one), purge subjects of its
//     target's stream;
//   - cdc_apply: its consumer on SLUICE_CDC looked up, pulled and reset to
//     a sequence, its deliveries acknowledged; SLUICE_CDC's information;
//   - the latest-state applier: a stream's information (it looks its
//     stream up) and the last message of a subject (STREAM.MSG.GET, to
//     which workerDeny denies Sluice's own streams).
//
// Streams are made, changed, purged and deleted by the coordinator.
func workerPublish() []string {
	tasks := protocol.StreamTasks + "." + protocol.ConsumerWorkers
	cdc := protocol.StreamCDC
	return []string{
		protocol.SubjectResultsAll,
		protocol.SubjectHeartbeat,
		protocol.SubjectCDCAll,
		"sluice.latest.>",
		protocol.APISubject(protocol.VerbLeaseRenew),
		protocol.APISubject(protocol.VerbStreamConsumer),
		protocol.APISubject(protocol.VerbStreamPurge),
		"$JS.API.CONSUMER.INFO." + tasks,
		"$JS.API.CONSUMER.MSG.NEXT." + tasks,
		"$JS.ACK." + tasks + ".>",
		"$JS.API.CONSUMER.INFO." + cdc + ".*",
		"$JS.API.CONSUMER.MSG.NEXT." + cdc + ".*",
		"$JS.API.CONSUMER.RESET." + cdc + ".*",
		"$JS.ACK." + cdc + ".>",
		"$JS.API.STREAM.INFO.*",
		"$JS.API.STREAM.MSG.GET.*",
	}
}

// workerDeny narrows workerPublish: no message of a Sluice stream is read
// by its sequence or subject (tasks come through the consumer).
func workerDeny() []string {
	var s []string
	for _, st := range coreStreams {
		s = append(s, "$JS.API.STREAM.MSG.GET."+st)
	}
	return s
}

// noForgery is what no client but the server itself may publish: the
// server's advisories (a forged max-deliveries advisory would make the
// leader dead-letter and delete a task) and system requests.
var noForgery = []string{"$JS.EVENT.>", "$SYS.>"}

// PermissionsOf returns the rights of role. Every role may subscribe to
// _INBOX.> for the replies to its requests.
func PermissionsOf(role Role) Permissions {
	switch role {
	case RoleCoordinator:
		return Permissions{
			PublishAllow: []string{">"}, PublishDeny: noForgery,
			SubscribeAllow: []string{">"},
			AllowResponses: true,
		}
	case RoleWorker:
		return Permissions{
			PublishAllow:   workerPublish(),
			PublishDeny:    append(slices.Clone(noForgery), workerDeny()...),
			SubscribeAllow: []string{"_INBOX.>", "sluice.workers.*.stream"},
			AllowResponses: true,
		}
	case RoleTrigger:
		return Permissions{
			PublishAllow:   []string{protocol.SubjectTriggersAll},
			PublishDeny:    noForgery,
			SubscribeAllow: []string{"_INBOX.>"},
		}
	case RoleObserver:
		pub := []string{"$JS.API.INFO", "$JS.API.STREAM.INFO.*", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST",
			"$JS.API.CONSUMER.INFO.*.*", "$JS.API.CONSUMER.NAMES.*", "$JS.API.CONSUMER.LIST.*"}
		for _, v := range ReadOnlyVerbs {
			pub = append(pub, protocol.APISubject(v))
		}
		return Permissions{
			PublishAllow:   pub,
			PublishDeny:    noForgery,
			SubscribeAllow: []string{"_INBOX.>", protocol.SubjectEventsAll},
		}
	case RoleAdmin:
		return Permissions{
			PublishAllow: []string{
				protocol.SubjectAPIPrefix + ">",
				protocol.SubjectTriggersAll,
				protocol.SubjectExternalAll,
				"$JS.API.>",
				"$JS.ACK.>",
			},
			PublishDeny: append(slices.Clone(noForgery), protocol.APISubject(protocol.VerbLeaseRenew),
				protocol.APISubject(protocol.VerbStreamConsumer), protocol.APISubject(protocol.VerbStreamPurge)),
			SubscribeAllow: []string{"_INBOX.>", protocol.SubjectEventsAll},
		}
	}
	return Permissions{}
}
