package coordinator

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/protocol"
)

func rollbackIntent(p string, to int64, req string) entry {
	return pipelineRollbackCmd{Pipeline: p, To: to, RequestID: req, Time: t0.Add(time.Hour)}
}

func rollbackDone(p string, to int64, errMsg string) entry {
	return pipelineRollbackCmd{Pipeline: p, To: to, Done: true, Error: errMsg, Time: t0.Add(2 * time.Hour)}
}

// twoVersions is the log of pipeline orders committing versions 1 and 2.
func twoVersions() []entry {
	log := []entry{put("orders")}
	log = append(log, committedRun("orders", "orders-000001", "wm1", 50)...)
	return append(log, committedRun("orders", "orders-000002", "wm2", 50)...)
}

// A rollback is recorded in two entries: the intent leaves the exposed
// version as it is and marks the rollback pending; the outcome exposes the
// version; the next commit gets a new version number, never a reused one.
func TestFSMRollback(t *testing.T) {
	f := newFSM()
	applyAll(t, f, twoVersions()...)
	resp := applyAll(t, f, rollbackIntent("orders", 1, "rb1"))
	if resp != (pipelineRollbackReply{From: 2, Version: 2}) {
		t.Fatalf("intent: %+v", resp)
	}
	p, _ := f.pipeline("orders")
	if p.Version != 2 || !p.Rollback.pending() || p.Rollback.To != 1 || p.Rollback.From != 2 || p.Rollback.Sink.Kind != "mem" {
		t.Fatalf("after the intent: version %d, rollback %+v", p.Version, p.Rollback)
	}
	if st := pipelineStatus(p); st.Version != 2 || st.RollbackTo != 1 {
		t.Errorf("status while pending: %+v, want version 2, rolling back to 1", st)
	}
	if got := f.pendingRollbacks(); len(got) != 1 || got[0] != "orders" {
		t.Errorf("pending rollbacks %v", got)
	}
	// The same request again changes nothing; another one waits its turn.
	if resp := applyAll(t, f, rollbackIntent("orders", 1, "rb1")); resp != (pipelineRollbackReply{From: 2, Version: 2, Reused: true}) {
		t.Errorf("intent repeated: %+v", resp)
	}
	if err, _ := applyAll(t, f, rollbackIntent("orders", 2, "rb2")).(error); !refused(err, refusedConflict) || !strings.Contains(err.Error(), "not finished") {
		t.Errorf("a second rollback while one is pending: %v, want a conflict", err)
	}
	if err, _ := applyAll(t, f, del("orders")).(error); !refused(err, refusedConflict) || !strings.Contains(err.Error(), "rollback") {
		t.Errorf("delete while a rollback is pending: %v, want a conflict", err)
	}
	if err, _ := applyAll(t, f, rollbackDone("orders", 2, "")).(error); !refused(err, refusedConflict) {
		t.Errorf("the outcome of another rollback: %v, want a conflict", err)
	}

	if resp := applyAll(t, f, rollbackDone("orders", 1, "")); resp != (pipelineRollbackReply{From: 2, Version: 1}) {
		t.Fatalf("outcome: %+v", resp)
	}
	p, _ = f.pipeline("orders")
	if p.Version != 1 || p.Rollback.pending() || !p.Rollback.Done || p.Rollback.Finished.IsZero() {
		t.Fatalf("after the outcome: version %d, rollback %+v", p.Version, p.Rollback)
	}
	if st := pipelineStatus(p); st.Version != 1 || st.RollbackTo != 0 {
		t.Errorf("status after the rollback: %+v", st)
	}
	if len(f.pendingRollbacks()) != 0 {
		t.Error("a finished rollback is still pending")
	}
	// Still known by its request id: a repeated request finds it.
	if resp := applyAll(t, f, rollbackIntent("orders", 1, "rb1")); resp != (pipelineRollbackReply{From: 2, Version: 1, Reused: true}) {
		t.Errorf("finished intent repeated: %+v", resp)
	}

	// The next run commits as version 3 and is exposed.
	applyAll(t, f, committedRun("orders", "orders-000003", "wm3", 50)...)
	p, _ = f.pipeline("orders")
	if r := f.st.Runs["orders-000003"]; r.Version != 3 || p.Version != 3 {
		t.Fatalf("commit after a rollback: run version %d, exposed %d; want 3 and 3", r.Version, p.Version)
	}
	// Forward and back again, to any version ever assigned.
	applyAll(t, f, rollbackIntent("orders", 2, ""), rollbackDone("orders", 2, ""))
	if p, _ = f.pipeline("orders"); p.Version != 2 {
		t.Errorf("rollback to 2: exposed %d", p.Version)
	}
}

// A rollback the sink refused leaves the exposed version; the FSM refuses
// what no sink could do.
func TestFSMRollbackRefused(t *testing.T) {
	f := newFSM()
	applyAll(t, f, twoVersions()...)
	applyAll(t, f, rollbackIntent("orders", 1, ""))
	if resp := applyAll(t, f, rollbackDone("orders", 1, "version 1 was dropped")); resp != (pipelineRollbackReply{From: 2, Version: 2}) {
		t.Fatalf("refused outcome: %+v", resp)
	}
	p, _ := f.pipeline("orders")
	if p.Version != 2 || p.Rollback.pending() || p.Rollback.Error != "version 1 was dropped" {
		t.Fatalf("after a refused rollback: version %d, rollback %+v", p.Version, p.Rollback)
	}
	if resp := applyAll(t, f, del("orders")); resp != (pipelineDeleteReply{Revision: 2}) {
		t.Errorf("delete once no rollback is pending: %+v", resp)
	}

	applyAll(t, f, put("orders"), putIncremental("ev"), pipelinePutCmd{Spec: cdcSpec("cdc"), Time: t0}, put("fresh"))
	for _, tc := range []struct {
		name string
		e    entry
		code refusalCode
		msg  string
	}{
		{"unknown pipeline", rollbackIntent("nope", 1, ""), refusedNotFound, `"nope" not found`},
		{"a version never committed", rollbackIntent("orders", 3, ""), refusedInvalid, "version 3 was never committed"},
		{"version 0", rollbackIntent("orders", 0, ""), refusedInvalid, "never committed"},
		{"nothing committed", rollbackIntent("fresh", 1, ""), refusedInvalid, "never committed"},
		{"incremental", rollbackIntent("ev", 1, ""), refusedInvalid, "ev is incremental"},
		{"a stream", rollbackIntent("cdc", 1, ""), refusedInvalid, "streams changes continuously"},
		{"an outcome without an intent", rollbackDone("orders", 1, ""), refusedConflict, "no such rollback"},
	} {
		err, _ := applyAll(t, f, tc.e).(error)
		if !refused(err, tc.code) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want a %s refusal saying %q", tc.name, err, tc.code, tc.msg)
		}
	}
	if p, _ := f.pipeline("orders"); p.Version != 2 || p.Rollback.pending() {
		t.Errorf("refused entries changed the pipeline: version %d, rollback %+v", p.Version, p.Rollback)
	}
}

// rollbackRefusal names the pattern and what to do instead.
func TestRollbackRefusal(t *testing.T) {
	if msg := rollbackRefusal(testSpec("a")); msg != "" {
		t.Errorf("full load refused: %s", msg)
	}
	s := testSpec("b")
	s.Pattern = protocol.PatternCDCApply
	if msg := rollbackRefusal(s); !strings.Contains(msg, "cdc_apply") || !strings.Contains(msg, "no versions") {
		t.Errorf("cdc_apply: %q", msg)
	}
}
