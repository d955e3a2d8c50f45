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
	// and heartbeats, renews stream leases and writes change events. It
	// cannot publish a task, a trigger or any other API request.
	RoleWorker Role = "worker"
	// RoleTrigger publishes trigger events (sluice.trigger.<pipeline>)
	// and nothing else.
	RoleTrigger Role = "trigger"
	// RoleObserver reads: the read-only API verbs, run events and stream
	// information.
	RoleObserver Role = "observer"
	// RoleAdmin runs the client commands that change the cluster (apply,
	// run, delete, rollback, backfill, dlq replay): every API verb but
	// the workers' lease renewals, triggers, and JetStream's API.
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

// coreStreams are the streams only the coordinator may delete, purge,
// update or delete messages of.
var coreStreams = []string{
	protocol.StreamTasks, protocol.StreamResults, protocol.StreamTriggers,
	protocol.StreamEvents, protocol.StreamDLQ, protocol.StreamExternal, protocol.StreamCDC,
}

// jsDestructive are the JetStream API subjects that delete or rewrite a
// core stream or the workers' task consumer.
func jsDestructive() []string {
	var s []string
	for _, st := range coreStreams {
		s = append(s,
			"$JS.API.STREAM.DELETE."+st,
			"$JS.API.STREAM.PURGE."+st,
			"$JS.API.STREAM.UPDATE."+st,
			"$JS.API.STREAM.MSG.DELETE."+st,
		)
	}
	return append(s,
		"$JS.API.CONSUMER.DELETE."+protocol.StreamTasks+".>",
		"$JS.API.CONSUMER.DELETE."+protocol.StreamResults+".>",
		"$JS.API.CONSUMER.DELETE."+protocol.StreamTriggers+".>",
	)
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
			PublishAllow: []string{
				protocol.SubjectResultsAll,
				protocol.SubjectHeartbeat,
				protocol.APISubject(protocol.VerbLeaseRenew),
				protocol.SubjectCDCAll,
				"sluice.latest.>",
				"$JS.API.>",
				"$JS.ACK.>",
				"$JS.FC.>",
			},
			PublishDeny:    append(slices.Clone(noForgery), jsDestructive()...),
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
			PublishDeny:    append(slices.Clone(noForgery), protocol.APISubject(protocol.VerbLeaseRenew)),
			SubscribeAllow: []string{"_INBOX.>", protocol.SubjectEventsAll},
		}
	}
	return Permissions{}
}
