package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// lakeLog records what "memlake" sinks were asked: commits and
// compactions (and how many ran at once on one dataset), vacuums.
type lakeLog struct {
	mu        sync.Mutex
	inside    map[string]int
	maxInside int
	events    []string
	compacts  []connectors.CompactCommit
	vacuums   []connectors.VacuumRequest
	active    [][]string
}

// enter and exit bracket a change of a dataset, slowly enough for two to
// overlap if the leader let them.
func (l *lakeLog) enter(dataset, event string) func() {
	l.mu.Lock()
	if l.inside == nil {
		l.inside = map[string]int{}
	}
	l.inside[dataset]++
	l.maxInside = max(l.maxInside, l.inside[dataset])
	l.events = append(l.events, event)
	l.mu.Unlock()
	time.Sleep(30 * time.Millisecond)
	return func() {
		l.mu.Lock()
		l.inside[dataset]--
		l.mu.Unlock()
	}
}

// memLake is a sink whose datasets compact: "groups" rewrite groups of
// 3 files each per plan.
type memLake struct {
	l      *lakeLog
	Path   string `json:"path"`
	Groups int    `json:"groups"`
}

func registerLake(reg *connectors.Registry, l *lakeLog) {
	reg.Register(connectors.Connector{
		Kind: "memlake",
		Sink: func(_ context.Context, cfg json.RawMessage) (connectors.Sink, error) {
			s := &memLake{l: l}
			return s, json.Unmarshal(cfg, s)
		},
		ValidateSink:    func(json.RawMessage) error { return nil },
		ValidateDataset: func(json.RawMessage) error { return nil },
	})
}

func (s *memLake) Dataset() string { return "memlake:" + s.Path }

func (s *memLake) PlanCompaction(_ context.Context, req connectors.CompactRequest) (connectors.CompactPlan, error) {
	var p connectors.CompactPlan
	for i := range s.Groups {
		p.Groups = append(p.Groups, protocol.Partition{Key: fmt.Sprintf("g%d", i), Spec: json.RawMessage(`{}`), Bytes: 30})
		p.Files = append(p.Files, 3)
	}
	return p, nil
}

func (*memLake) Rewrite(context.Context, connectors.TaskRef, protocol.Partition) (connectors.TaskOutput, error) {
	return connectors.TaskOutput{}, errors.New("memlake: Rewrite is the workers'")
}

func (s *memLake) CommitCompaction(_ context.Context, req connectors.CompactCommit) (connectors.CompactResult, error) {
	defer s.l.enter(s.Dataset(), "compact "+req.RunID)()
	s.l.mu.Lock()
	s.l.compacts = append(s.l.compacts, req)
	s.l.mu.Unlock()
	return connectors.CompactResult{Location: s.Path, Partitions: 1, FilesBefore: int64(3 * len(req.Groups)), FilesAfter: int64(len(req.Groups))}, nil
}

func (s *memLake) Commit(_ context.Context, req connectors.CommitRequest) (connectors.CommitResult, error) {
	defer s.l.enter(s.Dataset(), fmt.Sprintf("commit %s v%d", req.RunID, req.Version))()
	return connectors.CommitResult{Location: s.Path}, nil
}

func (s *memLake) Vacuum(ctx context.Context, req connectors.VacuumRequest) (connectors.VacuumReport, error) {
	active, err := req.Active(ctx)
	if err != nil {
		return connectors.VacuumReport{}, err
	}
	s.l.mu.Lock()
	s.l.vacuums = append(s.l.vacuums, req)
	s.l.active = append(s.l.active, active)
	s.l.mu.Unlock()
	return connectors.VacuumReport{Removed: []connectors.VacuumItem{{Path: s.Path + "/old", Why: "replaced", Files: 3, Bytes: 30}}}, nil
}

func (*memLake) OpenTask(context.Context, connectors.TaskRef) (connectors.TaskWriter, error) {
	return nil, errors.New("memlake: OpenTask is the workers'")
}
func (*memLake) Abort(context.Context, string) error { return nil }
func (*memLake) Close() error                        { return nil }

// A compaction goes through the leader as a run: a dry run only plans
// it, a compact pipeline's run and a one-off compaction of a loading
// pipeline's dataset (sluice compact <pipeline>) each commit the groups
// the workers rewrote, make no version and start no downstream run, and
// vacuum afterwards; the commits of one dataset never overlap; a vacuum
// goes through the leader too, with the runs in flight.
func TestCompactionThroughLeader(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	lake := &lakeLog{}
	reg := mem.registry()
	registerLake(reg, lake)
	n := startNode(t, Config{NodeID: "n1", InmemStore: true, RaftBind: "127.0.0.1:0", Bootstrap: true}, url, reg, nil)
	eventually(t, 20*time.Second, "n1 leads", n.IsLeader)
	fakeWorker(t, url, succeed)
	cl := NewClient(connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	dataset := protocol.Endpoint{Kind: "memlake", Config: json.RawMessage(`{"path":"/lake/orders","groups":3}`)}
	load := memSpec("orders", 2)
	load.Sink = dataset
	down := memSpec("after-orders", 1)
	down.Trigger = &pipeline.Trigger{After: "orders"}
	off := false
	comp := pipeline.Spec{Name: "orders-compact", Pattern: protocol.PatternCompact, Sink: dataset,
		Compact: &protocol.CompactSettings{TargetFileBytes: 1 << 20, Retention: time.Hour, Vacuum: nil}}
	noVacuum := pipeline.Spec{Name: "quiet-compact", Pattern: protocol.PatternCompact, Sink: dataset,
		Compact: &protocol.CompactSettings{Vacuum: &off}}
	for _, s := range []pipeline.Spec{load, down, comp, noVacuum, memSpec("plain", 1)} {
		if _, err := cl.Apply(ctx, s); err != nil {
			t.Fatal(err)
		}
	}

	dry, err := cl.Compact(ctx, protocol.CompactRequest{Pipeline: "orders-compact", DryRun: true})
	if err != nil || dry.RunID != "" || len(dry.Groups) != 3 || dry.Groups[0].Files != 3 || dry.Dataset != "memlake:/lake/orders" {
		t.Fatalf("dry run: %+v, %v", dry, err)
	}
	if st, _ := cl.Status(ctx, protocol.StatusRequest{Pipeline: "orders-compact"}); len(st.Runs) != 0 {
		t.Errorf("a dry run started %v", st.Runs)
	}

	commitRun(t, ctx, cl, "orders")
	compact := func(p string) protocol.RunStatus {
		t.Helper()
		res, err := cl.Compact(ctx, protocol.CompactRequest{Pipeline: p})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Groups) != 3 {
			t.Errorf("compact %s: %+v", p, res)
		}
		st, err := cl.WaitRun(ctx, res.RunID, 20*time.Millisecond, nil)
		if err != nil || st.State != protocol.RunCommitted || st.Tasks != 3 || st.Version != 0 {
			t.Fatalf("compaction %s: %+v, %v", res.RunID, st, err)
		}
		return st
	}
	compact("orders-compact")
	compact("orders") // the loading pipeline's dataset, with the defaults
	compact("quiet-compact")
	if st := commitRun(t, ctx, cl, "orders"); st.Version != 2 {
		t.Errorf("the load after a compaction of its dataset is version %d, want 2", st.Version)
	}
	for p, want := range map[string]int64{"orders": 2, "orders-compact": 0} {
		if v, _ := exposedVersion(t, ctx, cl, p); v != want {
			t.Errorf("%s exposes version %d, want %d", p, v, want)
		}
	}
	eventually(t, 20*time.Second, "two downstream runs", func() bool {
		st, _ := cl.Status(ctx, protocol.StatusRequest{Pipeline: "after-orders"})
		return len(st.Runs) >= 2
	})
	// Every run of orders announced: the runs after them are started.
	eventually(t, 20*time.Second, "the runs of orders announced", func() bool {
		st, err := cl.Status(ctx, protocol.StatusRequest{Pipeline: "orders"})
		if err != nil {
			return false
		}
		for _, r := range st.Runs {
			if r.State != protocol.RunCommitted && r.State != protocol.RunFailed || !r.Notified {
				return false
			}
		}
		return true
	})
	if st, _ := cl.Status(ctx, protocol.StatusRequest{Pipeline: "after-orders"}); len(st.Runs) != 2 {
		t.Errorf("%d downstream runs after 2 loads and a compaction of their dataset, want 2", len(st.Runs))
	}

	lake.mu.Lock()
	if len(lake.compacts) != 3 {
		t.Fatalf("%d compactions committed", len(lake.compacts))
	}
	for _, c := range lake.compacts {
		if len(c.Groups) != 3 || c.Groups[0].Output.Rows != 10 || c.Groups[2].Group.Key != "g2" {
			t.Errorf("compaction %s committed %+v", c.RunID, c.Groups)
		}
	}
	if got := lake.compacts[0].Settings; got.TargetFileBytes != 1<<20 || got.Retention != time.Hour {
		t.Errorf("settings of the compact pipeline's run: %+v", got)
	}
	if got := lake.compacts[1].Settings; got.TargetFileBytes != protocol.DefaultTargetFileBytes || got.Retention != protocol.DefaultRetention {
		t.Errorf("settings of the one-off compaction: %+v", got)
	}
	if len(lake.vacuums) != 2 || lake.vacuums[0].Settings.Retention != time.Hour || lake.vacuums[0].DryRun {
		t.Errorf("vacuums after compactions: %+v", lake.vacuums)
	}
	lake.mu.Unlock()

	// Loads and compactions of the dataset at once: never two commits
	// of it at the same time.
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { commitRun(t, ctx, cl, "orders") })
		wg.Go(func() { compact("orders-compact") })
	}
	wg.Wait()
	lake.mu.Lock()
	if lake.maxInside != 1 {
		t.Errorf("%d changes of one dataset ran at once: %v", lake.maxInside, lake.events)
	}
	lake.mu.Unlock()

	rep, err := cl.Vacuum(ctx, protocol.VacuumRequest{Pipeline: "orders", DryRun: true})
	if err != nil || !rep.DryRun || len(rep.Removed) != 1 || rep.Files != 3 || rep.Bytes != 30 {
		t.Errorf("vacuum: %+v, %v", rep, err)
	}
	lake.mu.Lock()
	if last := lake.vacuums[len(lake.vacuums)-1]; !last.DryRun || last.Settings.Retention != protocol.DefaultRetention {
		t.Errorf("vacuum request %+v", last)
	}
	lake.mu.Unlock()

	if _, err := cl.Compact(ctx, protocol.CompactRequest{Pipeline: "plain"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("compact a pipeline whose sink does not compact: %v", err)
	}
	if _, err := cl.Vacuum(ctx, protocol.VacuumRequest{Pipeline: "plain"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("vacuum a sink that has nothing to vacuum: %v", err)
	}
	if _, err := cl.Rollback(ctx, protocol.RollbackRequest{Pipeline: "orders-compact"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("roll back a compact pipeline: %v", err)
	}
	if _, err := cl.Compact(ctx, protocol.CompactRequest{Pipeline: "nope"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("compact an unknown pipeline: %v", err)
	}
}
