package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// registerPass adds the passthrough kinds of the coordinator's tests:
// "passsrc" (a connectors.UnitSource planning {"parts": n} partitions,
// failing its plan with "fail_plan") and "passsink" (a connectors.UnitSink
// that records what its target holds: its inventory is the watermark it
// was asked for, and a commit of run r records "inv-r").
func (m *memConnectors) registerPass(reg *connectors.Registry) {
	reg.Register(connectors.Connector{
		Kind: "passsrc",
		Source: func(_ context.Context, cfg json.RawMessage) (connectors.Source, error) {
			var c memConfig
			if err := json.Unmarshal(cfg, &c); err != nil {
				return nil, err
			}
			return passSource{memSource{c, m}}, nil
		},
		Passthrough: &connectors.Passthrough{Units: "toys", Noun: "toys", Source: true},
	})
	reg.Register(connectors.Connector{
		Kind: "passsink",
		Sink: func(_ context.Context, cfg json.RawMessage) (connectors.Sink, error) {
			var c memConfig
			if err := json.Unmarshal(cfg, &c); err != nil {
				return nil, err
			}
			return passSink{&memSink{m: m, path: c.Path}}, nil
		},
		Passthrough: &connectors.Passthrough{Units: "toys", Sink: true},
	})
}

type passSource struct{ memSource }

func (s passSource) Plan(context.Context, connectors.PlanRequest) (connectors.Plan, error) {
	return connectors.Plan{}, errors.New("passsrc: a passthrough run is planned with PlanUnits")
}

func (s passSource) PlanUnits(ctx context.Context, req connectors.PlanRequest) (connectors.Plan, error) {
	p, err := s.memSource.Plan(ctx, req)
	p.Watermark = "" // what the sink's commit records
	return p, err
}

func (passSource) ReadUnits(context.Context, protocol.Partition, connectors.EmitUnit) error {
	return errors.New("passsrc: ReadUnits is not used by the coordinator")
}

type passSink struct{ *memSink }

// toyInventory holds one name: the watermark it was asked for.
type toyInventory struct{ watermark string }

func (i toyInventory) Lookup(name string) (connectors.Held, bool) {
	return connectors.Held{Version: i.watermark}, name == i.watermark
}

func (toyInventory) Removable() iter.Seq[string] { return func(func(string) bool) {} }

func (s passSink) Inventory(_ context.Context, req connectors.InventoryRequest) (connectors.Inventory, string, error) {
	return toyInventory{req.Watermark}, "inv-" + req.RunID, nil
}

func (s passSink) Commit(context.Context, connectors.CommitRequest) (connectors.CommitResult, error) {
	return connectors.CommitResult{}, connectors.Permanent(errors.New("passsink: a passthrough run commits with CommitUnits"))
}

func (s passSink) Abort(context.Context, string) error {
	return errors.New("passsink: a passthrough run aborts with AbortUnits")
}

func (s passSink) OpenUnits(context.Context, connectors.TaskRef) (connectors.UnitWriter, error) {
	return nil, errors.New("passsink: OpenUnits is not used by the coordinator")
}

func (s passSink) CommitUnits(ctx context.Context, req connectors.CommitRequest) (connectors.CommitResult, error) {
	return s.memSink.Commit(ctx, req)
}

func (s passSink) AbortUnits(ctx context.Context, runID string) error {
	return s.memSink.Abort(ctx, runID)
}

func passSpec(name string, parts int) pipeline.Spec {
	return pipeline.Spec{Name: name, Pattern: protocol.PatternPassthrough,
		Source: protocol.Endpoint{Kind: "passsrc", Config: json.RawMessage(fmt.Sprintf(`{"parts":%d}`, parts))},
		Sink:   protocol.Endpoint{Kind: "passsink", Config: json.RawMessage(`{"path":"/out/` + name + `"}`)},
	}
}

// Passthrough runs go one at a time, each live and planned from the
// watermark it was created at; only a commit moves the watermark.
func TestFSMPassthroughRuns(t *testing.T) {
	f := newFSM()
	applyAll(t, f, pipelinePutCmd{Spec: passSpec("cp", 1), Time: t0})
	p := f.st.Pipelines["cp"]
	create := runCreateCmd{Pipeline: "cp", MaxAttempts: 3, Time: t0}
	if res, _ := applyAll(t, f, create).(runCreateReply); res.RunID != "cp-000001" {
		t.Fatalf("create: %+v", res)
	}
	r := f.st.Runs["cp-000001"]
	if !r.Live || r.Since != "" || !r.passthrough() {
		t.Fatalf("run %+v: want live, from no position", r)
	}
	if err, _ := applyAll(t, f, create).(error); !refused(err, refusedConflict) {
		t.Fatalf("second run in flight: %v, want a conflict", err)
	}
	applyAll(t, f, planned("cp-000001", 1, "inv-1"), published("cp-000001"), ok("cp-000001", "t00000", 3), committing("cp-000001"))
	if p.Watermark != "" {
		t.Fatalf("the watermark moved to %q before the commit", p.Watermark)
	}
	applyAll(t, f, committed("cp-000001", 50))
	if p.Watermark != "inv-1" {
		t.Fatalf("after the commit the watermark is %q, want inv-1", p.Watermark)
	}
	applyAll(t, f, create)
	r2 := f.st.Runs["cp-000002"]
	if r2.Since != "inv-1" {
		t.Fatalf("second run from %q, want inv-1", r2.Since)
	}
	applyAll(t, f, planned("cp-000002", 1, "inv-2"), published("cp-000002"), runFailed("cp-000002", 50))
	if p.Watermark != "inv-1" {
		t.Fatalf("a failed run moved the watermark to %q", p.Watermark)
	}
}

// Through a leader: a passthrough run is planned with PlanUnits, given
// what the sink says its target holds, committed with CommitUnits (from
// the watermark it started at, to the one the sink named), and a failed
// one is aborted with AbortUnits; the watermark moves with each commit.
func TestPassthroughRunsThroughLeader(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	tracedLeader(t, url, mem)
	fakeWorker(t, url, func(task protocol.Task, attempt int) protocol.Result {
		if strings.Contains(string(task.Source.Config), "refuse") {
			return protocol.Result{Worker: "w1", ErrorClass: protocol.ErrorPermanent, Error: "bad data"}
		}
		return succeed(task, attempt)
	})
	cl := NewClient(connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := cl.Apply(ctx, passSpec("cp", 3)); err != nil {
		t.Fatal(err)
	}
	st := commitRun(t, ctx, cl, "cp")
	if st.Since != "" || st.Reaches != "inv-"+st.RunID || st.Tasks != 3 || st.Unit != "toys" {
		t.Fatalf("first run %+v: want from nothing to inv-<run>, 3 tasks, counting toys", st)
	}
	st2 := commitRun(t, ctx, cl, "cp")
	if st2.Since != "inv-"+st.RunID || st2.Reaches != "inv-"+st2.RunID {
		t.Fatalf("second run %+v: want from the first's watermark to its own", st2)
	}
	reqs := mem.planned(st2.RunID)
	if len(reqs) != 1 || reqs[0].Watermark != st.Reaches || reqs[0].Target == nil {
		t.Fatalf("plan requests %+v: want one from %s, with the target's inventory", reqs, st.Reaches)
	}
	if _, ok := reqs[0].Target.Lookup(st.Reaches); !ok {
		t.Errorf("the plan's inventory is not the one the sink gave for watermark %s", st.Reaches)
	}
	commits := mem.committed()
	if len(commits) != 2 || commits[1].Since != st.Reaches || commits[1].Watermark != st2.Reaches || commits[1].RunID != st2.RunID {
		t.Fatalf("commits %+v: want the second from %s to %s", commits, st.Reaches, st2.Reaches)
	}
	stat, err := cl.Status(ctx, protocol.StatusRequest{Pipeline: "cp"})
	if err != nil || stat.Pipelines[0].Watermark != st2.Reaches {
		t.Fatalf("status %+v, %v: want the watermark %s", stat, err, st2.Reaches)
	}
	// A run whose tasks fail is aborted through the passthrough sink.
	bad := passSpec("cp", 3)
	bad.Source.Config = json.RawMessage(`{"parts":3,"refuse":"tasks"}`)
	if _, err := cl.Apply(ctx, bad); err != nil {
		t.Fatal(err)
	}
	res, err := cl.Run(ctx, protocol.RunRequest{Pipeline: "cp"})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := cl.WaitRun(ctx, res.RunID, 20*time.Millisecond, nil); err != nil || st.State != protocol.RunFailed {
		t.Fatalf("run with failing tasks: %+v, %v; want failed", st, err)
	}
	eventually(t, 10*time.Second, "the failed run aborted through AbortUnits", func() bool {
		for _, id := range mem.aborted() {
			if id == res.RunID {
				return true
			}
		}
		return false
	})
	if stat, _ := cl.Status(ctx, protocol.StatusRequest{Pipeline: "cp"}); stat.Pipelines[0].Watermark != st2.Reaches {
		t.Errorf("a failed run moved the watermark to %q", stat.Pipelines[0].Watermark)
	}
}
