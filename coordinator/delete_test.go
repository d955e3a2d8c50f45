package coordinator

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

func del(name string) entry {
	return pipelineDeleteCmd{Name: name, Time: t0.Add(time.Hour)}
}

func applySpecOf(name, upstream string) pipeline.Spec {
	return pipeline.Spec{Name: name, Pattern: protocol.PatternCDCApply,
		Source: protocol.Endpoint{Kind: pipeline.ApplySourceKind, Config: json.RawMessage(`{"pipeline":"` + upstream + `"}`)},
		Sink:   protocol.Endpoint{Kind: "memsink", Config: json.RawMessage(`{"path":"${SLUICE_OUT}"}`)}}
}

// A pipeline is deleted only when nothing of it is in progress; a deleted
// one is gone for every command and listing, and applying it again goes on
// from its run numbers.
func TestFSMPipelineDelete(t *testing.T) {
	f := newFSM()
	applyAll(t, f, put("orders"))
	applyAll(t, f, committedRun("orders", "orders-000001", "wm1", 10)...)
	applyAll(t, f, create("orders", ""))
	err, _ := applyAll(t, f, del("orders")).(error)
	if !refused(err, refusedConflict) || !strings.Contains(err.Error(), "orders-000002") {
		t.Fatalf("delete with a run in progress: %v, want a conflict naming the run", err)
	}
	applyAll(t, f, runFailed("orders-000002", 10))
	if resp := applyAll(t, f, del("orders")); resp != (pipelineDeleteReply{Revision: 2}) {
		t.Fatalf("delete: %+v", resp)
	}
	if _, ok := f.pipeline("orders"); ok || len(f.pipelines()) != 0 {
		t.Fatal("a deleted pipeline is still listed")
	}
	for _, e := range []entry{del("orders"), create("orders", ""), grant("orders", "w1", 1)} {
		if err, _ := applyAll(t, f, e).(error); !refused(err, refusedNotFound) {
			t.Errorf("%s of a deleted pipeline: %v, want not found", e.cmdType(), err)
		}
	}
	if len(f.cleanups()) != 0 {
		t.Errorf("a full-load pipeline left cleanups %+v", f.cleanups())
	}
	if resp := applyAll(t, f, put("orders")); resp != (pipelinePutReply{Revision: 3, Created: true}) {
		t.Fatalf("apply after delete: %+v", resp)
	}
	if id := applyAll(t, f, create("orders", "")).(runCreateReply).RunID; id != "orders-000003" {
		t.Errorf("first run after the delete is %s, want orders-000003 (no run name reused)", id)
	}
}

// Deleting a cdc pipeline waits for its appliers; each streamed pipeline
// leaves a cleanup (slot and publication, consumer) with its lease.
func TestFSMDeleteStreamedPipelines(t *testing.T) {
	f := newFSM()
	shop := cdcSpec("shop")
	shop.CDC.Lease = 7 * time.Second
	applyAll(t, f, pipelinePutCmd{Spec: shop, Time: t0},
		pipelinePutCmd{Spec: applySpecOf("replica", "shop"), Time: t0}, grant("shop", "w1", 1))
	err, _ := applyAll(t, f, del("shop")).(error)
	if !refused(err, refusedConflict) || !strings.Contains(err.Error(), "replica") {
		t.Fatalf("delete of a cdc pipeline with an applier: %v", err)
	}
	applyAll(t, f, del("replica"))
	applyAll(t, f, del("shop"))
	cls := f.cleanups()
	if len(cls) != 2 {
		t.Fatalf("cleanups %+v, want 2", cls)
	}
	if c := cls[0]; c.Pipeline != "replica" || c.Pattern != protocol.PatternCDCApply || c.Lease != pipeline.DefaultLease || c.Slot != "" {
		t.Errorf("replica cleanup %+v", c)
	}
	if c := cls[1]; c.Pipeline != "shop" || c.Slot != "sluice_shop" || c.Publication != "sluice_shop" || c.Lease != 7*time.Second ||
		c.SourceKind != "memcdc" || string(c.Source) != string(shop.Source.Config) || !c.Created.Equal(t0.Add(time.Hour)) {
		t.Errorf("shop cleanup %+v", c)
	}
	if !strings.Contains(cls[1].what(), "sluice_shop") || !strings.Contains(cls[0].what(), protocol.CDCApplyConsumer("replica")) {
		t.Errorf("cleanups say %q and %q", cls[0].what(), cls[1].what())
	}
	// Applied again, the cdc pipeline starts over: no lease, no snapshot,
	// and the next lease has the next epoch.
	applyAll(t, f, pipelinePutCmd{Spec: shop, Time: t0})
	if p, _ := f.pipeline("shop"); p.Stream == nil || !reflect.DeepEqual(*p.Stream, streamState{Epoch: 1}) {
		t.Errorf("stream state after the delete: %+v, want only epoch 1", p.Stream)
	}
	if err, _ := applyAll(t, f, grant("shop", "w2", 1)).(error); !refused(err, refusedConflict) && !refused(err, refusedInvalid) {
		t.Errorf("a lease of the old epoch granted again: %v", err)
	}
	applyAll(t, f, cleanupDoneCmd{ID: cls[0].ID})
	if got := f.cleanups(); len(got) != 1 || got[0].ID != cls[1].ID {
		t.Errorf("after one is done: %+v", got)
	}
}
