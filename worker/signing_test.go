package worker

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/signing"
)

// A lease reply counts only when the cluster's key signed it over the
// worker's own request: an unsigned grant, one signed by another key and
// one signed over another request are refused and counted.
func TestForgedLeaseReplyRefused(t *testing.T) {
	key, _ := signing.Generate()
	other, _ := signing.Generate()
	w := &Worker{cfg: Config{Verifier: key.Verifier()}}
	req := []byte(`{"pipeline":"cdc","worker":"w1","epoch":3}`)
	grant := []byte(`{"ok":true}`)
	reply := func(s *signing.Signer, over []byte) *nats.Msg {
		m := nats.NewMsg("_INBOX.x")
		m.Data = grant
		if s != nil {
			m.Header.Set(protocol.HeaderSignature, s.Sign(signing.KindLease, signing.LeaseSubject(over), grant))
		}
		return m
	}
	if err := w.verifyLease(req, reply(key, req)); err != nil {
		t.Fatalf("the leader's grant refused: %v", err)
	}
	for name, m := range map[string]*nats.Msg{
		"unsigned":         reply(nil, nil),
		"other key":        reply(other, req),
		"other request":    reply(key, []byte(`{"pipeline":"cdc","worker":"w2","epoch":3}`)),
		"no header at all": {Subject: "_INBOX.x", Data: grant},
	} {
		if err := w.verifyLease(req, m); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if got := w.Forged().Leases; got != 4 {
		t.Errorf("forged leases counted %d, want 4", got)
	}
}
