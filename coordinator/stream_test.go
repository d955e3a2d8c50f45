package coordinator

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

func cdcSpec(name string) pipeline.Spec {
	return pipeline.Spec{Name: name, Pattern: protocol.PatternCDC,
		Source: protocol.Endpoint{Kind: "postgres", Config: json.RawMessage(`{"dsn":"${DSN}","tables":["public.a","public.b"]}`)},
		CDC:    &pipeline.CDC{TargetRows: 500}}
}

func grant(p, w string, epoch uint64) entry {
	return entry{cmdLeaseGrant, leaseGrantCmd{Pipeline: p, Worker: w, Epoch: epoch, Revision: 1, Time: t0}}
}

// The initial snapshot of a cdc pipeline is a run with the derived
// endpoints; only its commit marks the snapshot done, with the position its
// plan reached; leases are fenced by epoch; a streamed pipeline has no
// ordinary runs.
func TestFSMStreamLeaseAndSnapshot(t *testing.T) {
	f := newFSM()
	spec := cdcSpec("shop")
	src, sink, err := snapshotEndpoints(spec)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(src.Config, &cfg); err != nil {
		t.Fatal(err)
	}
	if src.Kind != SnapshotSourceKind || sink.Kind != SnapshotSinkKind || cfg["slot"] != "sluice_shop" || cfg["dsn"] != "${DSN}" || cfg["target_rows"] != 500.0 {
		t.Fatalf("endpoints %s %s", src.Config, sink.Config)
	}
	applyAll(t, f, entry{cmdPipelinePut, pipelinePutCmd{Spec: spec, Time: t0}})

	if err, _ := applyAll(t, f, create("shop", "")).(error); !errors.Is(err, errInvalidCmd) {
		t.Fatalf("ordinary run of a cdc pipeline: %v", err)
	}
	snap := entry{cmdRunCreate, runCreateCmd{Pipeline: "shop", Snapshot: true, Source: &src, Sink: &sink, MaxAttempts: 3, Time: t0}}
	out := applyAll(t, f, snap).(applyResult)
	r, _ := f.run(out.RunID)
	if r.Source.Kind != SnapshotSourceKind || r.Sink.Kind != SnapshotSinkKind {
		t.Fatalf("snapshot run endpoints %+v %+v", r.Source, r.Sink)
	}
	if err, _ := applyAll(t, f, snap).(error); !errors.Is(err, errConflict) {
		t.Fatalf("second snapshot run while one loads: %v", err)
	}
	applyAll(t, f, runFailed(out.RunID, 10))
	p, _ := f.pipeline("shop")
	if p.Stream.SnapshotDone || p.Stream.SnapshotAttempts != 1 {
		t.Fatalf("after a failed snapshot: %+v", p.Stream)
	}
	out = applyAll(t, f, snap).(applyResult)
	applyAll(t, f, planned(out.RunID, 1, "0/16B3748"), simple(cmdRunPublished, out.RunID), ok(out.RunID, "t00000", 10),
		simple(cmdRunCommitting, out.RunID), committed(out.RunID, 10))
	p, _ = f.pipeline("shop")
	if !p.Stream.SnapshotDone || p.Stream.ConsistentLSN != "0/16B3748" || p.Stream.SnapshotAttempts != 2 || p.Stream.SnapshotRun != out.RunID {
		t.Fatalf("after the snapshot committed: %+v", p.Stream)
	}
	if err, _ := applyAll(t, f, snap).(error); !errors.Is(err, errConflict) {
		t.Fatalf("snapshot run after the snapshot is done: %v", err)
	}

	applyAll(t, f, grant("shop", "w1", 1))
	if err, _ := applyAll(t, f, grant("shop", "w2", 1)).(error); !errors.Is(err, errConflict) {
		t.Fatalf("a second grant of epoch 1: %v", err)
	}
	applyAll(t, f, grant("shop", "w2", 2))
	p, _ = f.pipeline("shop")
	if p.Stream.Worker != "w2" || p.Stream.Epoch != 2 || !p.Stream.SnapshotDone {
		t.Fatalf("after two grants: %+v", p.Stream)
	}
	applyAll(t, f, put("plain"))
	if err, _ := applyAll(t, f, grant("plain", "w1", 1)).(error); !errors.Is(err, errInvalidCmd) {
		t.Fatalf("lease of a full_load pipeline: %v", err)
	}
}
