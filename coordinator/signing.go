package coordinator

import (
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/raft"
	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/signing"
)

// Forged counts the messages a coordinator refused as forged.
type Forged struct {
	// Results carried a token their task was not issued with (or none).
	Results int64
	// Advisories claimed a task message reached MaxDeliver with fewer
	// deliveries.
	Advisories int64
}

type forgedCounts struct{ results, advisories atomic.Int64 }

// Forged returns what this coordinator refused as forged so far.
func (c *Coordinator) Forged() Forged {
	return Forged{Results: c.forged.results.Load(), Advisories: c.forged.advisories.Load()}
}

// signTask gives a task its token (the result must carry it back) before
// it is encoded.
func (c *Coordinator) signTask(task *protocol.Task) {
	if s := c.cfg.Signer; s != nil {
		task.Token = s.Token(task.RunID, task.TaskID)
	}
}

// sign sets the signature header of a message only the leader may issue.
func (c *Coordinator) sign(kind string, m *nats.Msg) {
	if s := c.cfg.Signer; s != nil {
		m.Header.Set(protocol.HeaderSignature, s.Sign(kind, m.Subject, m.Data))
	}
}

// resultForged reports whether res lacks its task's token.
func (c *Coordinator) resultForged(res protocol.Result) bool {
	s := c.cfg.Signer
	if s == nil {
		return false
	}
	if res.Attempt < 1 || res.Token != s.Token(res.RunID, res.TaskID) {
		c.forged.results.Add(1)
		return true
	}
	return false
}

// serveLeaseRenew answers a lease renewal, its reply signed over the
// request so that a worker can tell the leader's grant from a forged one.
func (t *leaderTerm) serveLeaseRenew(m *nats.Msg) {
	reply, err := t.apiLeaseRenew(m.Data)
	var b []byte
	if err != nil {
		code := codeInternal
		switch rf := refusalOf(err); {
		case rf != nil:
			code = apiCode(rf.code)
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrRaftShutdown):
			code = codeNotLeader
		}
		b, _ = json.Marshal(protocol.APIError{Error: err.Error(), Code: code})
	} else {
		b, _ = json.Marshal(reply)
	}
	r := nats.NewMsg(m.Reply)
	r.Data = b
	if s := t.c.cfg.Signer; s != nil {
		r.Header.Set(protocol.HeaderSignature, s.Sign(signing.KindLease, signing.LeaseSubject(m.Data), b))
	}
	_ = m.RespondMsg(r)
}

// isLeaseRenew reports whether an API request is a lease renewal.
func isLeaseRenew(subject string) bool {
	return strings.TrimPrefix(subject, protocol.SubjectAPIPrefix) == protocol.VerbLeaseRenew
}
