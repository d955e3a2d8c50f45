package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// posSource is a toy source that keeps a position of its own (kind
// "possrc", connectors.Positions): an offset into a log of
// memConnectors.records records. A run plans the records after the
// watermark, at most "max" of them, two per partition, and reaches the
// offset after the last; "fail_plan" fails the plan.
type posSource struct {
	m   *memConnectors
	cfg posConfig
}

type posConfig struct {
	Max      int    `json:"max"`
	FailPlan string `json:"fail_plan"`
}

func newPosSource(raw json.RawMessage, m *memConnectors) (connectors.Source, error) {
	var c posConfig
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, err
	}
	return posSource{m: m, cfg: c}, nil
}

func (s posSource) Plan(_ context.Context, req connectors.PlanRequest) (connectors.Plan, error) {
	s.m.mu.Lock()
	s.m.plans = append(s.m.plans, req)
	records := s.m.records
	s.m.mu.Unlock()
	if s.cfg.FailPlan != "" {
		return connectors.Plan{}, errors.New(s.cfg.FailPlan)
	}
	if req.Window != nil {
		return connectors.Plan{}, connectors.Permanent(fmt.Errorf("possrc reads by position, not window %s", req.Window))
	}
	from := 0
	if req.Watermark != "" {
		n, err := strconv.Atoi(req.Watermark)
		if err != nil {
			return connectors.Plan{}, connectors.Permanent(fmt.Errorf("watermark %q is not an offset", req.Watermark))
		}
		from = n
	}
	to := records
	if s.cfg.Max > 0 {
		to = min(to, from+s.cfg.Max)
	}
	plan := connectors.Plan{Watermark: strconv.Itoa(max(from, to))}
	for lo := from; lo < to; lo += 2 {
		hi := min(lo+2, to)
		plan.Partitions = append(plan.Partitions, protocol.Partition{Key: fmt.Sprintf("offsets[%d:%d]", lo, hi),
			Spec: json.RawMessage(fmt.Sprintf(`{"lo":%d,"hi":%d}`, lo, hi)), Rows: int64(hi - lo)})
	}
	return plan, nil
}

func (posSource) Read(context.Context, protocol.Partition, connectors.Emit) error {
	return errors.New("possrc: Read is not used by the coordinator")
}

func (posSource) Close() error { return nil }

// addRecords appends n records to the log possrc reads.
func (m *memConnectors) addRecords(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.records += n
}

func posSpec(name string, max int) pipeline.Spec {
	return pipeline.Spec{Name: name, Pattern: protocol.PatternIncremental,
		Source:      protocol.Endpoint{Kind: "possrc", Config: json.RawMessage(fmt.Sprintf(`{"max":%d}`, max))},
		Sink:        protocol.Endpoint{Kind: "memsink", Config: json.RawMessage(`{"path":"/out/` + name + `"}`)},
		Incremental: &pipeline.Incremental{By: "offset"},
	}
}

func putPositioned(name string) entry {
	return pipelinePutCmd{Spec: posSpec(name, 0), Time: t0}
}

func createPositioned(p string) entry {
	return runCreateCmd{Pipeline: p, MaxAttempts: 3, Backoff: time.Second, Live: true, Time: t0}
}

// A run by position has no window, one runs at a time, it plans from the
// watermark it was created at, and only its commit moves the watermark to
// where its plan reached; a failed run leaves it.
func TestFSMPositionedRuns(t *testing.T) {
	f := newFSM()
	applyAll(t, f, putPositioned("kf"))
	p := f.st.Pipelines["kf"]
	for _, tt := range []struct {
		name string
		e    entry
		code refusalCode
	}{
		{"a window", createWindow("kf", win(0, 1), true), refusedInvalid},
		{"not live", runCreateCmd{Pipeline: "kf", MaxAttempts: 3, Time: t0}, refusedInvalid},
	} {
		if err, _ := applyAll(t, f, tt.e).(error); !refused(err, tt.code) {
			t.Errorf("run by position with %s: %v, want a %s refusal", tt.name, err, tt.code)
		}
	}
	if res, _ := applyAll(t, f, createPositioned("kf")).(runCreateReply); res.RunID != "kf-000001" {
		t.Fatalf("create: %+v", res)
	}
	r := f.st.Runs["kf-000001"]
	if r.Window != nil || !r.Live || r.Since != "" || !r.positioned() {
		t.Fatalf("run %+v: want no window, live, from no position", r)
	}
	// A second run while the first is in flight would plan from the same
	// position: refused.
	if err, _ := applyAll(t, f, createPositioned("kf")).(error); !refused(err, refusedConflict) {
		t.Fatalf("second run in flight: %v, want a conflict", err)
	}
	log := []entry{planned("kf-000001", 1, "7"), published("kf-000001"), ok("kf-000001", "t00000", 7), committing("kf-000001")}
	applyAll(t, f, log...)
	if r.Watermark != "7" || p.Watermark != "" {
		t.Fatalf("planned: run reaches %q, pipeline at %q; want 7 and no watermark before the commit", r.Watermark, p.Watermark)
	}
	applyAll(t, f, committed("kf-000001", 50))
	if p.Watermark != "7" || len(p.Loaded) != 0 {
		t.Fatalf("after the commit: watermark %q, loaded %v; want 7 and no windows", p.Watermark, p.Loaded)
	}

	// The next run plans from 7; planned again as a new attempt, it plans
	// from 7 still; failed, it leaves the watermark at 7.
	applyAll(t, f, createPositioned("kf"))
	r2 := f.st.Runs["kf-000002"]
	if r2.Since != "7" {
		t.Fatalf("second run from %q, want 7", r2.Since)
	}
	applyAll(t, f, planned("kf-000002", 2, "9"), published("kf-000002"))
	if res, _ := applyAll(t, f, runReplanCmd{Run: "kf-000002", Attempt: 1, Reason: "gone", Limit: 3, Keep: 50, Time: t0}).(runReplanReply); res.Attempt != 2 {
		t.Fatalf("replan: %+v", res)
	}
	if r2.Since != "7" || r2.Watermark != "" {
		t.Fatalf("planned again: from %q reaching %q; want from 7, reaching what the new plan says", r2.Since, r2.Watermark)
	}
	applyAll(t, f, planned("kf-000002", 1, "8"), published("kf-000002"), runFailed("kf-000002", 50))
	if p.Watermark != "7" {
		t.Fatalf("a failed run moved the watermark to %q", p.Watermark)
	}
	applyAll(t, f, createPositioned("kf"))
	if r3 := f.st.Runs["kf-000003"]; r3.Since != "7" {
		t.Fatalf("the run after a failure plans from %q, want 7 (the same data again)", r3.Since)
	}
	// No backfill of a pipeline without windows.
	if err, _ := applyAll(t, f, backfillEntry("kf", 0, 5, 2, false)).(error); !refused(err, refusedInvalid) {
		t.Fatalf("backfill by position: %v, want refused", err)
	}
}

func TestRunWindowPositioned(t *testing.T) {
	p := &pipelineState{Spec: posSpec("kf", 0), Watermark: "7"}
	if w, live, err := runWindow(p, nil, t0); err != nil || !live || w != (protocol.Window{}) {
		t.Fatalf("runWindow = %v live %v err %v; want no window, live", w, live, err)
	}
	if _, _, err := runWindow(p, win(0, 1), t0); !refused(err, refusedInvalid) {
		t.Fatalf("an explicit window by position: %v, want refused", err)
	}
}

// Through a leader: each run plans what is new since the watermark (at
// most max records), its commit appends (ModeAppend without a window) and
// moves the watermark, a run that finds nothing new commits nothing to the
// sink, and a failed run leaves the watermark, so the next run reads the
// same records.
func TestPositionedRunsThroughLeader(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	tracedLeader(t, url, mem)
	fakeWorker(t, url, succeed)
	cl := NewClient(connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := cl.Apply(ctx, posSpec("kf", 5)); err != nil {
		t.Fatal(err)
	}
	watermark := func() string {
		t.Helper()
		stat, err := cl.Status(ctx, protocol.StatusRequest{Pipeline: "kf"})
		if err != nil {
			t.Fatal(err)
		}
		return stat.Pipelines[0].Watermark
	}

	mem.addRecords(7)
	st := commitRun(t, ctx, cl, "kf")
	if st.Since != "" || st.Reaches != "5" || st.Tasks != 3 || st.Window != nil {
		t.Fatalf("first run %+v: want from nothing to 5 (max 5), 3 tasks, no window", st)
	}
	st = commitRun(t, ctx, cl, "kf")
	if st.Since != "5" || st.Reaches != "7" || st.Tasks != 1 {
		t.Fatalf("second run %+v: want from 5 to 7 in 1 task", st)
	}
	commits := mem.committed()
	if len(commits) != 2 {
		t.Fatalf("%d commits, want 2", len(commits))
	}
	for i, c := range commits {
		if c.Mode != connectors.ModeAppend || c.Window != nil || c.DeltaColumn != "" || c.Watermark != []string{"5", "7"}[i] {
			t.Errorf("commit %d: mode %q window %v watermark %q; want an append without a window", i, c.Mode, c.Window, c.Watermark)
		}
	}
	if w := watermark(); w != "7" {
		t.Fatalf("watermark %q, want 7", w)
	}
	// Nothing new: the run commits without asking the sink.
	st = commitRun(t, ctx, cl, "kf")
	if st.Tasks != 0 || st.Since != "7" || st.Reaches != "7" || len(mem.committed()) != 2 {
		t.Fatalf("a run with nothing new: %+v, %d sink commits; want no task and no sink commit", st, len(mem.committed()))
	}
	// A run whose plan fails leaves the watermark: the next reads the
	// same records.
	mem.addRecords(3)
	bad := posSpec("kf", 5)
	bad.Source.Config = json.RawMessage(`{"max":5,"fail_plan":"broker gone"}`)
	if _, err := cl.Apply(ctx, bad); err != nil {
		t.Fatal(err)
	}
	if res, err := cl.Run(ctx, protocol.RunRequest{Pipeline: "kf"}); err != nil {
		t.Fatal(err)
	} else if st, err := cl.WaitRun(ctx, res.RunID, 20*time.Millisecond, nil); err != nil || st.State != protocol.RunFailed {
		t.Fatalf("run with a failing plan: %+v, %v; want failed", st, err)
	}
	if w := watermark(); w != "7" {
		t.Fatalf("watermark %q after a failed run, want 7", w)
	}
	if _, err := cl.Apply(ctx, posSpec("kf", 5)); err != nil {
		t.Fatal(err)
	}
	st = commitRun(t, ctx, cl, "kf")
	if st.Since != "7" || st.Reaches != "10" {
		t.Fatalf("run after the failure %+v: want from 7 to 10", st)
	}
	reqs := mem.planned(st.RunID)
	if len(reqs) != 1 || reqs[0].Watermark != "7" || reqs[0].Window != nil || !reqs[0].ByPosition {
		t.Fatalf("plan requests %+v: want one from watermark 7 without a window", reqs)
	}
	// No window, no backfill.
	if _, err := cl.Run(ctx, protocol.RunRequest{Pipeline: "kf", Window: win(0, 1)}); err == nil {
		t.Fatal("a run by position with a window was accepted")
	}
	if _, err := cl.Backfill(ctx, protocol.BackfillRequest{Pipeline: "kf", From: start, To: start.Add(time.Hour)}); err == nil {
		t.Fatal("a backfill by position was accepted")
	}
}

// The spec is refused at apply when the source keeps no position or the
// sink cannot append without a window.
func TestPositionedApplyChecks(t *testing.T) {
	mem := &memConnectors{}
	reg := mem.registry()
	spec := posSpec("kf", 0)
	if err := checkSpec(spec, reg); err != nil {
		t.Fatalf("a possrc by offset: %v", err)
	}
	spec.Incremental = &pipeline.Incremental{By: "position"}
	if err := checkSpec(spec, reg); err != nil {
		t.Fatalf("a possrc by position: %v", err)
	}
	spec.Incremental = &pipeline.Incremental{By: "modified"}
	if err := checkSpec(spec, reg); err == nil {
		t.Fatal("a possrc by modified was accepted")
	}
	noPos := posSpec("kf", 0)
	noPos.Source = protocol.Endpoint{Kind: "memsrc", Config: json.RawMessage(`{"parts":1}`)}
	if err := checkSpec(noPos, reg); err == nil {
		t.Fatal("a source without a position was accepted by offset")
	}
	reg.Register(connectors.Connector{Kind: "plainsink", Sink: func(context.Context, json.RawMessage) (connectors.Sink, error) { return nil, errors.New("unused") }})
	noAppend := posSpec("kf", 0)
	noAppend.Sink = protocol.Endpoint{Kind: "plainsink", Config: json.RawMessage(`{}`)}
	if err := checkSpec(noAppend, reg); err == nil {
		t.Fatal("a sink that cannot append without a window was accepted")
	}
}
