package coordinator

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/contract"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// putTransform is a transform pipeline with a contract that hashes the
// email column, incremental by updated_at when incremental is set.
func putTransform(name string, incremental bool) entry {
	s := testSpec(name)
	s.Pattern = protocol.PatternTransform
	s.Contract = &contract.Spec{Columns: map[string]contract.Column{"email": {Action: contract.Hash}}}
	if incremental {
		s.Incremental = &pipeline.Incremental{DeltaColumn: "updated_at", Window: time.Hour, Lag: 5 * time.Minute, Start: start}
	}
	return pipelinePutCmd{Spec: s, Time: t0}
}

// TestFSMTransformRunsAsLoad: a transform pipeline's runs are those of a
// full load (no window, versions to roll back to) or, with an incremental
// section, of an incremental load (a window, a watermark the commit
// moves, backfills); every run carries the contract its tasks apply.
func TestFSMTransformRunsAsLoad(t *testing.T) {
	f := newFSM()
	applyAll(t, f, putTransform("full", false), putTransform("inc", true))

	if err, _ := applyAll(t, f, createWindow("full", win(0, 1), false)).(error); !refused(err, refusedInvalid) {
		t.Fatalf("a window for a full transform: %v", err)
	}
	applyAll(t, f, create("full", "r1"))
	r := f.st.Runs["full-000001"]
	if r == nil || r.Pattern != protocol.PatternFullLoad || r.Contract == nil || r.Contract.Columns["email"].Action != contract.Hash {
		t.Fatalf("run of a full transform: %+v", r)
	}
	if why := rollbackRefusal(f.st.Pipelines["full"].Spec); why != "" {
		t.Fatalf("a full transform refuses rollback: %s", why)
	}

	if err, _ := applyAll(t, f, createWindow("inc", nil, false)).(error); !refused(err, refusedInvalid) {
		t.Fatalf("an incremental transform's run without a window: %v", err)
	}
	applyAll(t, f, createWindow("inc", win(0, 1), true))
	r = f.st.Runs["inc-000001"]
	if r == nil || r.Pattern != protocol.PatternIncremental || r.Window == nil || r.DeltaColumn != "updated_at" || r.Contract == nil {
		t.Fatalf("run of an incremental transform: %+v", r)
	}
	applyAll(t, f, commitEntries("inc-000001", 5)...)
	if wm := f.st.Pipelines["inc"].Watermark; wm != "2026-01-01T01:00:00Z" {
		t.Fatalf("watermark after the commit = %q", wm)
	}
	if res, ok := applyAll(t, f, backfillEntry("inc", 1, 3, 1, false)).(backfillReply); !ok || res.Backfill == "" {
		t.Fatalf("backfill of an incremental transform: %v", res)
	}
	if err, _ := applyAll(t, f, backfillEntry("full", 1, 3, 1, false)).(error); !refused(err, refusedInvalid) {
		t.Fatalf("backfill of a full transform: %v", err)
	}
}
