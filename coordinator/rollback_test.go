package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// commitRun runs pipeline p to its commit and returns the run's status.
func commitRun(t *testing.T, ctx context.Context, cl *Client, p string) protocol.RunStatus {
	t.Helper()
	res, err := cl.Run(ctx, protocol.RunRequest{Pipeline: p})
	if err != nil {
		t.Fatal(err)
	}
	st, err := cl.WaitRun(ctx, res.RunID, 20*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != protocol.RunCommitted {
		t.Fatalf("run %s %s: %s", st.RunID, st.State, st.Error)
	}
	return st
}

// exposedVersion is the version `sluice status` shows for pipeline p.
func exposedVersion(t *testing.T, ctx context.Context, cl *Client, p string) (version, rollbackTo int64) {
	t.Helper()
	st, err := cl.Status(ctx, protocol.StatusRequest{Pipeline: p})
	if err != nil {
		t.Fatal(err)
	}
	return st.Pipelines[0].Version, st.Pipelines[0].RollbackTo
}

// Rollback through the leader: the sink exposes the version asked for (by
// default the newest older than the exposed one) and the status shows it
// at once; a repeated request rolls back once; the next commit gets a new
// version number; what cannot be rolled back is refused in the user's
// terms.
func TestRollbackThroughLeader(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	tracedLeader(t, url, mem)
	fakeWorker(t, url, succeed)
	cl := NewClient(connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := cl.Apply(ctx, memSpec("orders", 2)); err != nil {
		t.Fatal(err)
	}
	for v := int64(1); v <= 2; v++ {
		if st := commitRun(t, ctx, cl, "orders"); st.Version != v {
			t.Fatalf("run committed as version %d, want %d", st.Version, v)
		}
	}

	reply, err := cl.Rollback(ctx, protocol.RollbackRequest{Pipeline: "orders", RequestID: "rb-1"})
	if err != nil {
		t.Fatal(err)
	}
	if reply.From != 2 || reply.Version != 1 || len(reply.Versions) != 2 || !reply.Versions[0].Exposed || reply.Versions[1].Exposed {
		t.Fatalf("rollback reply %+v; want 2 -> 1 with versions 1 (exposed) and 2 kept", reply)
	}
	if got := mem.exposed("/out/orders"); got != 1 {
		t.Fatalf("the sink exposes version %d after the rollback, want 1", got)
	}
	if v, pending := exposedVersion(t, ctx, cl, "orders"); v != 1 || pending != 0 {
		t.Fatalf("status right after the rollback: version %d (rolling back to %d), want 1", v, pending)
	}
	// The same request again (a lost reply): the same answer, nothing more.
	again, err := cl.Rollback(ctx, protocol.RollbackRequest{Pipeline: "orders", RequestID: "rb-1"})
	if err != nil || again.From != 2 || again.Version != 1 {
		t.Fatalf("repeated request: %+v, %v; want the first one's answer", again, err)
	}
	// Asking for the exposed version changes nothing.
	same, err := cl.Rollback(ctx, protocol.RollbackRequest{Pipeline: "orders", To: 1})
	if err != nil || same.From != 1 || same.Version != 1 {
		t.Fatalf("rollback to the exposed version: %+v, %v", same, err)
	}
	if got, want := mem.sinkEvents(), []string{"commit 1", "commit 2", "expose 1"}; !slices.Equal(got, want) {
		t.Fatalf("sink calls %v, want %v", got, want)
	}

	for _, tc := range []struct {
		to   int64
		want string
	}{
		{0, "no kept version older than the exposed version 1 (kept: 1, 2; exposed: 1)"},
		{9, "version 9 was never committed (newest: 2) (kept: 1, 2; exposed: 1)"},
	} {
		_, err := cl.Rollback(ctx, protocol.RollbackRequest{Pipeline: "orders", To: tc.to})
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("rollback --to %d: %v; want an invalid request saying %q", tc.to, err, tc.want)
		}
	}

	// The next run commits as a new version, 3, exposed.
	if st := commitRun(t, ctx, cl, "orders"); st.Version != 3 {
		t.Fatalf("the run after the rollback committed as version %d, want 3", st.Version)
	}
	if v, _ := exposedVersion(t, ctx, cl, "orders"); v != 3 || mem.exposed("/out/orders") != 3 {
		t.Fatalf("after the next commit: status %d, sink %d; want 3", v, mem.exposed("/out/orders"))
	}
	// Forward again to a kept version.
	if r, err := cl.Rollback(ctx, protocol.RollbackRequest{Pipeline: "orders", To: 2}); err != nil || r.Version != 2 {
		t.Fatalf("rollback to 2: %+v, %v", r, err)
	}

	plain := memSpec("plain", 1)
	plain.Sink.Config = json.RawMessage(`{"path":"/out/plain","unversioned":true}`)
	inc := memSpec("inc", 1)
	inc.Pattern = protocol.PatternIncremental
	inc.Incremental = &pipeline.Incremental{DeltaColumn: "at", Window: time.Hour, Start: start}
	for _, s := range []pipeline.Spec{plain, inc} {
		if _, err := cl.Apply(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	commitRun(t, ctx, cl, "plain")
	for _, tc := range []struct {
		pipeline string
		is       error
		want     string
	}{
		{"plain", ErrInvalid, "pipeline plain: its memsink sink keeps no earlier versions"},
		{"inc", ErrInvalid, "pipeline inc is incremental"},
		{"nope", ErrNotFound, `pipeline "nope" not found`},
	} {
		_, err := cl.Rollback(ctx, protocol.RollbackRequest{Pipeline: tc.pipeline})
		if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("rollback %s: %v; want %v saying %q", tc.pipeline, err, tc.is, tc.want)
		}
	}
}

// pipelines get returns the stored spec, its ${ENV} references as
// written, though the connectors see them expanded.
func TestGetPipelineKeepsReferences(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	tracedLeader(t, url, mem)
	fakeWorker(t, url, succeed)
	cl := NewClient(connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t.Setenv("SLUICE_TEST_SINK_SECRET", "s3cret-value")
	spec := memSpec("orders", 1)
	spec.Sink.Config = json.RawMessage(`{"path":"/out/${SLUICE_TEST_SINK_SECRET}"}`)
	if _, err := cl.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if st := commitRun(t, ctx, cl, "orders"); st.Location != "/out/s3cret-value/v1" {
		t.Fatalf("committed to %q: the sink did not get the expanded path", st.Location)
	}
	got, err := cl.GetPipeline(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	var stored pipeline.Spec
	if err := json.Unmarshal(got.Spec, &stored); err != nil {
		t.Fatal(err)
	}
	if string(stored.Sink.Config) != `{"path":"/out/${SLUICE_TEST_SINK_SECRET}"}` || stored.Source.Kind != "memsrc" || stored.Pattern != protocol.PatternFullLoad {
		t.Errorf("stored spec %+v; want the spec as applied, the reference unexpanded", stored)
	}
	if strings.Contains(string(got.Spec), "s3cret-value") {
		t.Errorf("pipeline get shows the expanded secret: %s", got.Spec)
	}
	if got.Status.Name != "orders" || got.Status.Version != 1 || got.Status.Revision != 1 {
		t.Errorf("status %+v", got.Status)
	}
	if _, err := cl.GetPipeline(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get of an unknown pipeline: %v", err)
	}
}

// Commits and rollbacks of a pipeline reach its sink one at a time, in the
// order of their entries: a run that finishes while a rollback is being
// exposed commits after it, as the next version.
func TestRollbackSerialisedWithCommits(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	tracedLeader(t, url, mem)
	release := make(chan struct{})
	fakeWorker(t, url, func(task protocol.Task, attempt int) protocol.Result {
		if task.RunID == "orders-000003" {
			<-release
		}
		return succeed(task, attempt)
	})
	cl := NewClient(connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := cl.Apply(ctx, memSpec("orders", 1)); err != nil {
		t.Fatal(err)
	}
	commitRun(t, ctx, cl, "orders")
	commitRun(t, ctx, cl, "orders")
	run3, err := cl.Run(ctx, protocol.RunRequest{Pipeline: "orders"})
	if err != nil {
		t.Fatal(err)
	}

	exposing, open := mem.gateExposes()
	done := make(chan error, 1)
	go func() {
		_, err := cl.Rollback(ctx, protocol.RollbackRequest{Pipeline: "orders", To: 1})
		done <- err
	}()
	select {
	case <-exposing:
	case <-ctx.Done():
		t.Fatal("the rollback never reached the sink")
	}
	// Run 3 finishes while the sink exposes version 1: its commit waits.
	close(release)
	eventually(t, 10*time.Second, "run 3 committing", func() bool {
		st, err := cl.GetRun(ctx, run3.RunID)
		return err == nil && st.State == protocol.RunCommitting
	})
	time.Sleep(300 * time.Millisecond)
	if got := mem.sinkEvents(); len(got) != 2 {
		t.Fatalf("sink calls %v while the rollback is exposed: the commit did not wait", got)
	}
	open()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st, err := cl.WaitRun(ctx, run3.RunID, 20*time.Millisecond, nil)
	if err != nil || st.State != protocol.RunCommitted || st.Version != 3 {
		t.Fatalf("run 3: %+v, %v; want committed as version 3", st, err)
	}
	if got, want := mem.sinkEvents(), []string{"commit 1", "commit 2", "expose 1", "commit 3"}; !slices.Equal(got, want) {
		t.Fatalf("sink calls %v, want %v", got, want)
	}
	if v, _ := exposedVersion(t, ctx, cl, "orders"); v != 3 {
		t.Fatalf("status shows version %d, want 3", v)
	}
}

// A leader killed between a rollback's intent and its outcome: the next
// leader finishes the rollback before it commits anything of the
// pipeline, and the client's request, retried there, gets its answer.
func TestRollbackLeaderKilledMidway(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	nodes, trans := cluster(t, url, mem)
	first := leaderOf(t, nodes)
	fakeWorker(t, url, succeed)
	cl := NewClient(connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := cl.Apply(ctx, memSpec("orders", 1)); err != nil {
		t.Fatal(err)
	}
	commitRun(t, ctx, cl, "orders")
	commitRun(t, ctx, cl, "orders")

	exposing, open := mem.gateExposes()
	done := make(chan error, 1)
	var reply protocol.RollbackReply
	go func() {
		var err error
		reply, err = cl.Rollback(ctx, protocol.RollbackRequest{Pipeline: "orders"})
		done <- err
	}()
	select {
	case <-exposing:
	case <-ctx.Done():
		t.Fatal("the rollback never reached the sink")
	}
	if v, pending := exposedVersion(t, ctx, cl, "orders"); v != 2 || pending != 1 {
		t.Fatalf("status between intent and outcome: version %d, rolling back to %d; want 2 and 1", v, pending)
	}
	// Every node holds the intent before the leader dies.
	for i, n := range nodes {
		eventually(t, 10*time.Second, fmt.Sprintf("node %d has the intent", i), func() bool {
			return len(n.fsm.pendingRollbacks()) == 1
		})
	}
	second := killLeader(t, nodes, trans, first)
	open()
	eventually(t, 20*time.Second, "the new leader finishes the rollback", func() bool {
		return len(nodes[second].fsm.pendingRollbacks()) == 0
	})
	if err := <-done; err != nil {
		t.Fatalf("the rollback request across the leader change: %v", err)
	}
	if reply.From != 2 || reply.Version != 1 {
		t.Errorf("reply %+v, want 2 -> 1", reply)
	}
	if v, pending := exposedVersion(t, ctx, cl, "orders"); v != 1 || pending != 0 || mem.exposed("/out/orders") != 1 {
		t.Fatalf("after the new leader: status %d (pending %d), sink %d; want 1", v, pending, mem.exposed("/out/orders"))
	}
	if st := commitRun(t, ctx, cl, "orders"); st.Version != 3 {
		t.Fatalf("the next run committed as version %d, want 3", st.Version)
	}
	events := mem.sinkEvents()
	if want := []string{"commit 1", "commit 2", "expose 1", "commit 3"}; !slices.Equal(events, want) {
		t.Fatalf("sink calls %v, want %v", events, want)
	}
}
