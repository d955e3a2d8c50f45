package worker

import (
	"fmt"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/signing"
)

// Forged counts the messages a worker refused because the cluster's key
// did not sign them.
type Forged struct {
	// Tasks were terminated unread.
	Tasks int64
	// Assignments were refused: no stream was opened.
	Assignments int64
	// Leases are renewal replies (grants or refusals) not signed over the
	// worker's request.
	Leases int64
}

type forgedCounts struct{ tasks, assignments, leases atomic.Int64 }

// Forged returns what this worker refused as forged so far.
func (w *Worker) Forged() Forged {
	return Forged{Tasks: w.forged.tasks.Load(), Assignments: w.forged.assignments.Load(), Leases: w.forged.leases.Load()}
}

// verify checks the leader's signature of a message of kind, counting a
// failure in n; with no verifier configured everything passes.
func (w *Worker) verify(kind, subject string, data []byte, h nats.Header, n *atomic.Int64) error {
	v := w.cfg.Verifier
	if v == nil {
		return nil
	}
	var sig string
	if h != nil {
		sig = h.Get(protocol.HeaderSignature)
	}
	if err := v.Verify(kind, subject, data, sig); err != nil {
		n.Add(1)
		return err
	}
	return nil
}

// verifyLease checks that a renewal's reply was signed over the request.
func (w *Worker) verifyLease(request []byte, reply *nats.Msg) error {
	if err := w.verify(signing.KindLease, signing.LeaseSubject(request), reply.Data, reply.Header, &w.forged.leases); err != nil {
		return fmt.Errorf("lease reply: %w", err)
	}
	return nil
}
