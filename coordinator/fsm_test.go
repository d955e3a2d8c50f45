package coordinator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// entry is one log entry of a test: a command body.
type entry = commandBody

func put(name string) entry {
	return pipelinePutCmd{Spec: testSpec(name), Time: t0}
}

func testSpec(name string) pipeline.Spec {
	return pipeline.Spec{Name: name, Pattern: protocol.PatternFullLoad,
		Source: protocol.Endpoint{Kind: "mem", Config: json.RawMessage(`{"parts":2}`)},
		Sink:   protocol.Endpoint{Kind: "mem", Config: json.RawMessage(`{"path":"/out"}`)}}
}

func create(p, req string) entry {
	return runCreateCmd{Pipeline: p, RequestID: req, MaxAttempts: 3, Backoff: time.Second,
		Trace: map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, Time: t0}
}

func planned(run string, n int, wm string) entry {
	var parts []protocol.Partition
	for i := range n {
		parts = append(parts, protocol.Partition{Key: fmt.Sprintf("p%d", i), Spec: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
	}
	return runPlannedCmd{Run: run, Partitions: parts, Watermark: wm, Time: t0}
}

func ok(run, task string, rows int64) entry {
	return taskResultCmd{Run: run, Task: task, Attempt: 1, Worker: "w1", Rows: rows, Bytes: rows * 10,
		Checksum: 0xff, Location: "stage/" + task, Time: t0}
}

func failed(run, task string, class protocol.ErrorClass, attempt int) entry {
	return taskResultCmd{Run: run, Task: task, Attempt: attempt, Worker: "w1", ErrorClass: class, Error: "boom", Time: t0}
}

func published(run string) entry  { return runPublishedCmd{Run: run, Time: t0} }
func committing(run string) entry { return runCommittingCmd{Run: run, Time: t0} }
func notified(run string) entry   { return runNotifiedCmd{Run: run, Time: t0} }

func committed(run string, keep int) entry {
	return runCommittedCmd{Run: run, Location: "/out/v", Marker: "/out/_SUCCESS", Keep: keep, Time: t0.Add(time.Minute)}
}

func runFailed(run string, keep int) entry {
	return runFailedCmd{Run: run, Error: "plan: no input", Keep: keep, Time: t0.Add(time.Minute)}
}

// committedRun is the log of one whole committed run of pipeline p.
func committedRun(p, run, wm string, keep int) []entry {
	return []entry{create(p, ""), planned(run, 2, wm), published(run), ok(run, "t00000", 1), ok(run, "t00001", 2),
		committing(run), committed(run, keep)}
}

// applyAll applies entries to f from log index 1 and returns the last
// response.
func applyAll(t *testing.T, f *fsm, entries ...entry) any {
	t.Helper()
	var resp any
	for i, e := range entries {
		b, err := encodeCmd(e)
		if err != nil {
			t.Fatal(err)
		}
		resp = f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: b})
	}
	return resp
}

func TestFSMCommands(t *testing.T) {
	const run = "orders-000001"
	tests := []struct {
		name  string
		log   []entry
		check func(t *testing.T, st *state, resp any)
	}{
		{"pipeline put creates", []entry{put("users")}, func(t *testing.T, st *state, resp any) {
			if got, want := resp, (pipelinePutReply{Revision: 1, Created: true}); got != want {
				t.Errorf("response %+v, want %+v", got, want)
			}
			if st.Pipelines["users"].Spec.Source.Kind != "mem" {
				t.Errorf("spec not stored: %+v", st.Pipelines["users"])
			}
		}},
		{"pipeline put again bumps revision", []entry{put("users"), put("users")}, func(t *testing.T, st *state, resp any) {
			if got, want := resp, (pipelinePutReply{Revision: 2}); got != want {
				t.Errorf("response %+v, want %+v", got, want)
			}
		}},
		{"run create of unknown pipeline", []entry{create("nope", "")}, func(t *testing.T, st *state, resp any) {
			if err, _ := resp.(error); !refused(err, refusedNotFound) {
				t.Errorf("response %v, want a not-found refusal", resp)
			}
		}},
		{"run create numbers runs per pipeline", []entry{put("orders"), put("users"), create("orders", ""), create("users", ""), create("orders", "")},
			func(t *testing.T, st *state, resp any) {
				if got := resp.(runCreateReply).RunID; got != "orders-000002" {
					t.Errorf("run id %q, want orders-000002", got)
				}
				r := st.Runs["orders-000002"]
				if r.State != protocol.RunPlanning || r.MaxAttempts != 3 || r.Backoff != time.Second || r.Source.Kind != "mem" {
					t.Errorf("run %+v", r)
				}
				if _, ok := st.Runs["users-000001"]; !ok {
					t.Error("users-000001 missing")
				}
				if st.Pipelines["orders"].LastRun != "orders-000002" {
					t.Errorf("last run %q", st.Pipelines["orders"].LastRun)
				}
			}},
		{"run create with a known request id reuses the run", []entry{put("orders"), create("orders", "req1"), create("orders", "req1")},
			func(t *testing.T, st *state, resp any) {
				if got, want := resp, (runCreateReply{RunID: run, Reused: true}); got != want {
					t.Errorf("response %+v, want %+v", got, want)
				}
				if len(st.Runs) != 1 || st.Requests["req1"] != run {
					t.Errorf("runs %d, requests %v", len(st.Runs), st.Requests)
				}
			}},
		{"spec retry overrides the defaults", []entry{
			pipelinePutCmd{Spec: func() pipeline.Spec {
				s := testSpec("orders")
				s.Retry = pipeline.Retry{MaxAttempts: 7, Backoff: 5 * time.Second}
				return s
			}()}, create("orders", "")},
			func(t *testing.T, st *state, resp any) {
				if r := st.Runs[run]; r.MaxAttempts != 7 || r.Backoff != 5*time.Second {
					t.Errorf("attempts %d backoff %v, want 7 5s", r.MaxAttempts, r.Backoff)
				}
			}},
		{"run planned records tasks in order", []entry{put("orders"), create("orders", ""), planned(run, 3, "wm1")},
			func(t *testing.T, st *state, resp any) {
				r := st.Runs[run]
				if r.State != protocol.RunRunning || !r.Planned || r.Watermark != "wm1" || len(r.Tasks) != 3 {
					t.Fatalf("run %+v", r)
				}
				for i, ts := range r.Tasks {
					if want := fmt.Sprintf("t%05d", i); ts.ID != want || ts.State != protocol.TaskPending || ts.Enqueue != 1 || ts.Partition.Key != fmt.Sprintf("p%d", i) {
						t.Errorf("task %d = %+v", i, ts)
					}
				}
			}},
		{"run planned twice is refused", []entry{put("orders"), create("orders", ""), planned(run, 1, ""), planned(run, 1, "")},
			func(t *testing.T, st *state, resp any) {
				if err, _ := resp.(error); !refused(err, refusedRunState) {
					t.Errorf("response %v, want a run-state refusal", resp)
				}
			}},
		{"run published", []entry{put("orders"), create("orders", ""), planned(run, 1, ""), published(run)},
			func(t *testing.T, st *state, resp any) {
				if !st.Runs[run].Published {
					t.Error("not published")
				}
			}},
		{"task success", []entry{put("orders"), create("orders", ""), planned(run, 2, ""), ok(run, "t00001", 5)},
			func(t *testing.T, st *state, resp any) {
				ts := st.Runs[run].Tasks[1]
				if ts.State != protocol.TaskSucceeded || ts.Rows != 5 || ts.Bytes != 50 || ts.Location != "stage/t00001" || ts.Worker != "w1" || ts.Attempts != 1 {
					t.Errorf("task %+v", ts)
				}
				if resp.(taskResultReply).Changed != true {
					t.Error("not changed")
				}
			}},
		{"a result for a succeeded task is ignored", []entry{put("orders"), create("orders", ""), planned(run, 1, ""), ok(run, "t00000", 5), failed(run, "t00000", protocol.ErrorPermanent, 2)},
			func(t *testing.T, st *state, resp any) {
				if resp != (taskResultReply{}) || st.Runs[run].Tasks[0].State != protocol.TaskSucceeded || st.Runs[run].State != protocol.RunRunning {
					t.Errorf("response %+v, run %+v", resp, st.Runs[run])
				}
			}},
		{"a result for an unknown run is ignored", []entry{ok("x-000001", "t00000", 1)},
			func(t *testing.T, st *state, resp any) {
				if resp != (taskResultReply{}) {
					t.Errorf("response %+v", resp)
				}
			}},
		{"a retryable failure before the last attempt keeps the task pending", []entry{put("orders"), create("orders", ""), planned(run, 1, ""), failed(run, "t00000", protocol.ErrorRetryable, 2)},
			func(t *testing.T, st *state, resp any) {
				r := st.Runs[run]
				if ts := r.Tasks[0]; ts.State != protocol.TaskPending || ts.Attempts != 2 || ts.Error != "boom" || r.State != protocol.RunRunning {
					t.Errorf("run %+v", r)
				}
			}},
		{"a retryable failure on the last attempt fails the run", []entry{put("orders"), create("orders", ""), planned(run, 1, ""), failed(run, "t00000", protocol.ErrorRetryable, 3)},
			func(t *testing.T, st *state, resp any) {
				r := st.Runs[run]
				if r.Tasks[0].State != protocol.TaskFailed || r.State != protocol.RunFailed || !strings.Contains(r.Error, "boom") || r.Finished != t0 {
					t.Errorf("run %+v", r)
				}
				if !resp.(taskResultReply).RunFailed {
					t.Error("RunFailed not reported")
				}
			}},
		{"a permanent failure fails the run at once", []entry{put("orders"), create("orders", ""), planned(run, 2, ""), failed(run, "t00001", protocol.ErrorPermanent, 1)},
			func(t *testing.T, st *state, resp any) {
				if r := st.Runs[run]; r.State != protocol.RunFailed || r.Tasks[1].State != protocol.TaskFailed || r.Tasks[0].State != protocol.TaskPending {
					t.Errorf("run %+v", r)
				}
			}},
		{"max deliveries fails the task", []entry{put("orders"), create("orders", ""), planned(run, 1, ""),
			taskResultCmd{Run: run, Task: "t00000", Attempt: 10, Final: true, ErrorClass: protocol.ErrorRetryable, Error: "delivered 10 times without a result"}},
			func(t *testing.T, st *state, resp any) {
				if r := st.Runs[run]; r.State != protocol.RunFailed || !strings.Contains(r.Error, "delivered 10 times") {
					t.Errorf("run %+v", r)
				}
			}},
		{"committing before all tasks succeeded is refused", []entry{put("orders"), create("orders", ""), planned(run, 2, ""), ok(run, "t00000", 1), committing(run)},
			func(t *testing.T, st *state, resp any) {
				if err, _ := resp.(error); !refused(err, refusedRunState) || st.Runs[run].State != protocol.RunRunning {
					t.Errorf("response %v", resp)
				}
			}},
		{"committing assigns the next version", append(committedRun("orders", run, "wm1", 50)[:6:6], create("orders", ""), planned("orders-000002", 0, ""), committing("orders-000002")),
			func(t *testing.T, st *state, resp any) {
				if got, _ := resp.(runCommittingReply); got.Version != 2 {
					t.Fatalf("response %v, want version 2", resp)
				}
				if got := resp.(runCommittingReply).Version; got != 2 {
					t.Errorf("version %d, want 2", got)
				}
				if st.Runs[run].Version != 1 || st.Runs[run].State != protocol.RunCommitting {
					t.Errorf("first run %+v", st.Runs[run])
				}
				if st.Pipelines["orders"].Version != 0 {
					t.Errorf("exposed version %d before any commit", st.Pipelines["orders"].Version)
				}
			}},
		{"committing again keeps the version", append(committedRun("orders", run, "", 50)[:6:6], committing(run)),
			func(t *testing.T, st *state, resp any) {
				if got := resp.(runCommittingReply).Version; got != 1 || st.Pipelines["orders"].VersionSeq != 1 {
					t.Errorf("version %d, seq %d, want 1 1", got, st.Pipelines["orders"].VersionSeq)
				}
			}},
		{"committed exposes the version and moves the watermark", committedRun("orders", run, "wm1", 50),
			func(t *testing.T, st *state, resp any) {
				p, r := st.Pipelines["orders"], st.Runs[run]
				if p.Version != 1 || p.Watermark != "wm1" || len(p.Versions) != 1 || p.Versions[0].Run != run {
					t.Errorf("pipeline %+v", p)
				}
				if r.State != protocol.RunCommitted || r.Location != "/out/v" || r.Marker != "/out/_SUCCESS" || r.Finished.IsZero() {
					t.Errorf("run %+v", r)
				}
			}},
		{"a failed run leaves the version and watermark", append(committedRun("orders", run, "wm1", 50), create("orders", ""), planned("orders-000002", 1, "wm2"), runFailed("orders-000002", 50)),
			func(t *testing.T, st *state, resp any) {
				p, r := st.Pipelines["orders"], st.Runs["orders-000002"]
				if p.Version != 1 || p.Watermark != "wm1" {
					t.Errorf("pipeline version %d watermark %q, want 1 wm1", p.Version, p.Watermark)
				}
				if r.State != protocol.RunFailed || r.Error != "plan: no input" {
					t.Errorf("run %+v", r)
				}
			}},
		{"a finished run cannot fail", append(committedRun("orders", run, "", 50), runFailed(run, 50)),
			func(t *testing.T, st *state, resp any) {
				if st.Runs[run].State != protocol.RunCommitted || resp != (noReply{}) {
					t.Errorf("run %+v, response %+v", st.Runs[run], resp)
				}
			}},
		{"results after the run failed are ignored", []entry{put("orders"), create("orders", ""), planned(run, 2, ""), failed(run, "t00000", protocol.ErrorPermanent, 1), ok(run, "t00001", 1)},
			func(t *testing.T, st *state, resp any) {
				if resp != (taskResultReply{}) || st.Runs[run].Tasks[1].State != protocol.TaskPending {
					t.Errorf("response %+v, task %+v", resp, st.Runs[run].Tasks[1])
				}
			}},
		{"notified", append(committedRun("orders", run, "", 50), notified(run)),
			func(t *testing.T, st *state, resp any) {
				if !st.Runs[run].Notified {
					t.Error("not notified")
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFSM()
			// Every case starts with pipeline "orders" stored.
			resp := applyAll(t, f, append([]entry{put("orders")}, tt.log...)...)
			tt.check(t, f.st, resp)
		})
	}
}

func TestFSMPrunesOldestFinishedRuns(t *testing.T) {
	f := newFSM()
	log := []entry{put("orders"), put("users"), create("users", "")}
	for i := 1; i <= 4; i++ {
		run := fmt.Sprintf("orders-%06d", i)
		e := committedRun("orders", run, "", 2)
		e[0] = create("orders", fmt.Sprintf("req%d", i))
		log = append(log, e...)
	}
	log = append(log, create("orders", "req5")) // unfinished: never pruned
	applyAll(t, f, log...)
	var got []string
	for id := range f.st.Runs {
		got = append(got, id)
	}
	want := []string{"orders-000003", "orders-000004", "orders-000005", "users-000001"}
	if !equalSet(got, want) {
		t.Errorf("runs %v, want %v", got, want)
	}
	if _, ok := f.st.Requests["req1"]; ok {
		t.Error("request id of a pruned run kept")
	}
	if f.st.Requests["req4"] != "orders-000004" || f.st.Requests["req5"] != "orders-000005" {
		t.Errorf("requests %v", f.st.Requests)
	}
	if p := f.st.Pipelines["orders"]; p.Version != 4 || len(p.Versions) != 2 || p.Versions[0].Version != 3 {
		t.Errorf("pipeline version %d, history %+v", p.Version, p.Versions)
	}
}

func equalSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		m[s]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return true
}

// fullLog exercises every command type.
func fullLog() []entry {
	log := []entry{put("orders"), put("users")}
	log = append(log, committedRun("orders", "orders-000001", "wm1", 50)...)
	log = append(log, notified("orders-000001"))
	log = append(log, create("orders", "r2"), planned("orders-000002", 3, "wm2"), published("orders-000002"),
		ok("orders-000002", "t00000", 4), failed("orders-000002", "t00001", protocol.ErrorRetryable, 1))
	log = append(log, create("users", ""), runFailed("users-000001", 50))
	// a run planned again, a task of its second attempt finding the hold
	// gone
	log = append(log, create("users", ""), heldPlan("users-000002", 2, "wm"), published("users-000002"),
		replanCmd("users-000002", 1, "gone"), heldPlan("users-000002", 2, "wm"), published("users-000002"),
		taskResultCmd{Run: "users-000002", Task: "a2-t00001", Attempt: 1, ErrorClass: protocol.ErrorReplan, Error: "gone", Time: t0})
	// a deleted cdc pipeline, its cleanup pending
	log = append(log, pipelinePutCmd{Spec: cdcSpec("gone"), Time: t0}, del("gone"))
	// a rollback of orders recorded, not finished
	log = append(log, rollbackIntent("orders", 1, "rb1"))
	return log
}

type bufSink struct{ bytes.Buffer }

func (s *bufSink) ID() string    { return "test" }
func (s *bufSink) Cancel() error { return nil }
func (s *bufSink) Close() error  { return nil }

func TestFSMSnapshotRestoreRoundTrip(t *testing.T) {
	f := newFSM()
	applyAll(t, f, fullLog()...)
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// The snapshot is a copy: later entries do not change it.
	applyAll(t, f, put("late"))
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM()
	applyAll(t, g, put("stale")) // Restore replaces, it does not merge.
	if err := g.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	want := newFSM()
	applyAll(t, want, fullLog()...)
	if !reflect.DeepEqual(g.st, want.st) {
		a, _ := json.MarshalIndent(g.st, "", " ")
		b, _ := json.MarshalIndent(want.st, "", " ")
		t.Fatalf("restored state differs:\n got %s\nwant %s", a, b)
	}
	// A restored FSM goes on applying like the original.
	applyAll(t, g, ok("orders-000002", "t00002", 1))
	applyAll(t, want, ok("orders-000002", "t00002", 1))
	if !reflect.DeepEqual(g.st, want.st) {
		t.Fatal("states differ after an entry applied to both")
	}
}

func TestFSMDeterministic(t *testing.T) {
	a, b := newFSM(), newFSM()
	applyAll(t, a, fullLog()...)
	applyAll(t, b, fullLog()...)
	ja, _ := json.Marshal(a.st)
	jb, _ := json.Marshal(b.st)
	if !bytes.Equal(ja, jb) || !reflect.DeepEqual(a.st, b.st) {
		t.Fatalf("same log, different states:\n%s\n%s", ja, jb)
	}
}

func TestFSMUnknownCommandPanics(t *testing.T) {
	for _, data := range [][]byte{{99, '{', '}'}, {byte(cmdRunCreate), 'x'}, {}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Apply(%q) did not panic", data)
				}
			}()
			newFSM().Apply(&raft.Log{Index: 7, Type: raft.LogCommand, Data: data})
		}()
	}
}

// allCommands holds a body of every command type.
var allCommands = []commandBody{
	pipelinePutCmd{}, runCreateCmd{}, runPlannedCmd{}, runPublishedCmd{}, taskResultCmd{}, runCommittingCmd{},
	runCommittedCmd{}, runFailedCmd{}, runNotifiedCmd{}, backfillCmd{}, runWaitingCmd{}, scheduleTickCmd{},
	leaseGrantCmd{}, pipelineDeleteCmd{}, cleanupDoneCmd{}, pipelineRollbackCmd{}, runReplanCmd{},
	streamTablesCmd{}, snapshotDoneCmd{}, stateTrimCmd{}, readyFoundCmd{}, readyAnnouncedCmd{},
}

// Every command body has its own type byte, with a name; the bytes of
// this tree's first commands run from 1 to cmdRunReplan without a gap (the
// later ones are in ranges given to branches); Apply dispatches each byte to the body that
// carries it (a case that decoded another body would panic).
func TestFSMDispatchesEveryCommand(t *testing.T) {
	seen := map[cmdType]bool{}
	for _, c := range allCommands {
		ct := c.cmdType()
		if seen[ct] {
			t.Errorf("%T: type byte %d is taken", c, byte(ct))
		}
		seen[ct] = true
		if strings.HasPrefix(ct.String(), "command ") {
			t.Errorf("%T: type byte %d has no name", c, byte(ct))
		}
		b, err := encodeCmd(c)
		if err != nil {
			t.Fatal(err)
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%T: Apply panicked: %v", c, r)
				}
			}()
			newFSM().Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: b})
		}()
	}
	for ct := cmdType(1); ct <= cmdRunReplan; ct++ {
		if !seen[ct] {
			t.Errorf("type byte %d has no command", byte(ct))
		}
	}
}
