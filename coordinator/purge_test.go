package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// A cdc_apply target that keeps a stream: the leader creates it before it
// grants the pipeline's lease, and purges subjects of it for the lease's
// holder only, only subjects of that stream.
func TestTargetStreamMadeAndPurged(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	reg := mem.registry()
	reg.Register(connectors.Connector{Kind: "memstream", CDCTarget: &connectors.CDCTarget{
		Open: func(context.Context, connectors.StreamRequest) (connectors.Applier, error) {
			return nil, errors.New("memstream does not apply")
		},
		Stream: func(req connectors.StreamRequest) (jetstream.StreamConfig, error) {
			up := req.Settings.Upstream
			return jetstream.StreamConfig{Name: "MEM_" + strings.ToUpper(up), Subjects: []string{"mem." + up + ".>"}}, nil
		},
	}})
	startNode(t, Config{NodeID: "n1", InmemStore: true, RaftBind: "127.0.0.1:0", Bootstrap: true}, url, reg, nil)
	cl := NewClient(connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js, err := jetstream.New(connect(t, url))
	if err != nil {
		t.Fatal(err)
	}

	up := cdcSpec("shop")
	up.CDC = &pipeline.CDC{Snapshot: pipeline.SnapshotNever, Lease: time.Hour}
	if _, err := cl.Apply(ctx, up); err != nil {
		t.Fatal(err)
	}
	w := newSimWorker(t, url, "wa")
	spec := pipeline.Spec{Name: "replica", Pattern: protocol.PatternCDCApply,
		Source: protocol.Endpoint{Kind: pipeline.ApplySourceKind, Config: json.RawMessage(`{"pipeline":"shop"}`)},
		Sink:   protocol.Endpoint{Kind: "memstream", Config: json.RawMessage(`{}`)},
		CDC:    &pipeline.CDC{Lease: time.Hour}}
	if _, err := cl.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the stream assigned to wa", func() bool { return len(w.assignments()) == 1 })
	s, err := js.Stream(ctx, "MEM_SHOP")
	if err != nil {
		t.Fatalf("the target's stream when its lease is granted: %v", err)
	}
	for _, subj := range []string{"mem.shop.a.1", "mem.shop.a.2", "mem.shop.b.1"} {
		if _, err := js.Publish(ctx, subj, nil); err != nil {
			t.Fatal(err)
		}
	}
	purge := func(worker string, epoch uint64, subject string) protocol.StreamOpReply {
		t.Helper()
		data, _ := json.Marshal(protocol.StreamPurgeRequest{Pipeline: "replica", Worker: worker, Epoch: epoch, Subject: subject})
		m, err := w.nc.Request(protocol.APISubject(protocol.VerbStreamPurge), data, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var r protocol.StreamOpReply
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatalf("%s: %v", m.Data, err)
		}
		return r
	}
	msgs := func() uint64 {
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	for _, c := range []struct {
		worker  string
		epoch   uint64
		subject string
	}{{"wb", 1, "mem.shop.a.>"}, {"wa", 2, "mem.shop.a.>"}, {"wa", 1, "mem.>"}, {"wa", 1, "mem.other.a.>"}, {"wa", 1, ">"}} {
		if r := purge(c.worker, c.epoch, c.subject); r.OK || r.Reason == "" {
			t.Errorf("purge %+v: %+v", c, r)
		}
	}
	if n := msgs(); n != 3 {
		t.Fatalf("refused purges left %d messages, want 3", n)
	}
	if r := purge("wa", 1, "mem.shop.a.>"); !r.OK {
		t.Fatalf("the holder's purge: %+v", r)
	}
	if n := msgs(); n != 1 {
		t.Fatalf("after purging a's subjects %d messages, want b's 1", n)
	}
}

// A worker's purge request names a subject filter; the leader purges it
// only when every subject it matches is one of the target's stream.
func TestSubjectWithin(t *testing.T) {
	for _, c := range []struct {
		filter, pattern string
		want            bool
	}{
		{"sluice.latest.up.s.t.>", "sluice.latest.up.>", true},
		{"sluice.latest.up.s.t.1", "sluice.latest.up.>", true},
		{"sluice.latest.up.*.t.>", "sluice.latest.up.>", true},
		{"sluice.latest.up.>", "sluice.latest.up.>", true},
		{"sluice.latest.up", "sluice.latest.up.>", false},
		{"sluice.latest.other.s.t.>", "sluice.latest.up.>", false},
		{"sluice.latest.*.s.t.>", "sluice.latest.up.>", false},
		{"sluice.latest.>", "sluice.latest.up.>", false},
		{">", "sluice.latest.up.>", false},
		{"sluice.tasks.p.1", "sluice.latest.up.>", false},
		{"a.b", "a.*", true},
		{"a.*", "a.*", true},
		{"a.>", "a.*", false},
		{"a.b.c", "a.*", false},
		{"", "a.>", false},
	} {
		if got := subjectWithin(c.filter, c.pattern); got != c.want {
			t.Errorf("subjectWithin(%q, %q) = %v, want %v", c.filter, c.pattern, got, c.want)
		}
	}
}
