package coordinator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/sluicehq/sluice/protocol"
)

func trim(expiry time.Duration, at time.Time) entry {
	return stateTrimCmd{CleanupExpiry: expiry, Time: at}
}

// A trim drops a deleted pipeline once nothing of it is left to clean up
// (applied again, it goes on from its numbers), strips the partitions of
// the finished runs whose end was announced, and gives up cleanups older
// than the expiry.
func TestFSMTrim(t *testing.T) {
	f := newFSM()
	applyAll(t, f, put("orders"), put("users"), pipelinePutCmd{Spec: cdcSpec("shop"), Time: t0}, grant("shop", "w1", 1))
	applyAll(t, f, committedRun("orders", "orders-000001", "wm1", 50)...)
	applyAll(t, f, notified("orders-000001"))
	applyAll(t, f, committedRun("users", "users-000001", "wm1", 50)...)
	applyAll(t, f, create("users", "req-u2"), runFailed("users-000002", 50), notified("users-000002"))
	applyAll(t, f, committedRun("orders", "orders-000002", "wm2", 50)...) // not announced yet
	applyAll(t, f, del("users"), del("shop"))

	got := applyAll(t, f, trim(0, t0.Add(2*time.Hour))).(stateTrimReply)
	if len(got.Dropped) != 0 || len(got.Expired) != 0 || got.Runs != 1 {
		t.Fatalf("trim: %+v, want 1 run stripped and users kept until the end of users-000001 is announced", got)
	}
	applyAll(t, f, notified("users-000001"))
	got = applyAll(t, f, trim(0, t0.Add(2*time.Hour))).(stateTrimReply)
	if len(got.Dropped) != 1 || got.Dropped[0] != "users" || len(got.Expired) != 0 {
		t.Fatalf("trim: %+v, want users dropped (shop still cleaning up)", got)
	}
	for id, r := range f.st.Runs {
		if r.Pipeline == "users" {
			t.Errorf("run %s of the dropped pipeline kept", id)
		}
	}
	if _, ok := f.st.Requests["req-u2"]; ok {
		t.Error("the request id of a dropped run kept")
	}
	if ts := f.st.Runs["orders-000001"].Tasks[0]; ts.Partition.Spec != nil || ts.Partition.Key != "p0" || ts.Rows != 1 {
		t.Errorf("task of an announced run after a trim: %+v, want its key and counts without its bounds", ts)
	}
	if ts := f.st.Runs["orders-000002"].Tasks[0]; ts.Partition.Spec == nil {
		t.Error("a run whose end is not announced yet lost its partitions")
	}
	if got := applyAll(t, f, trim(0, t0.Add(2*time.Hour))).(stateTrimReply); got.changed() {
		t.Errorf("a second trim changed %+v", got)
	}
	// Applied again, the dropped pipeline goes on from its numbers.
	if resp := applyAll(t, f, put("users")); resp != (pipelinePutReply{Revision: 3, Created: true}) {
		t.Fatalf("apply after the drop: %+v", resp)
	}
	if id := applyAll(t, f, create("users", "")).(runCreateReply).RunID; id != "users-000003" {
		t.Errorf("first run after the drop is %s, want users-000003", id)
	}
	if _, ok := f.st.Retired["users"]; ok {
		t.Error("a pipeline applied again is still retired")
	}
	// The cdc pipeline goes once its cleanup is done, or given up.
	cls := f.cleanups()
	if got := applyAll(t, f, trim(24*time.Hour, t0.Add(2*time.Hour))).(stateTrimReply); len(got.Dropped) != 0 || len(got.Expired) != 0 {
		t.Fatalf("trim before the expiry: %+v", got)
	}
	got = applyAll(t, f, trim(24*time.Hour, cls[0].Created.Add(24*time.Hour+time.Second))).(stateTrimReply)
	if len(got.Expired) != 1 || got.Expired[0].Slot != "sluice_shop" || len(got.Dropped) != 1 || got.Dropped[0] != "shop" {
		t.Fatalf("trim after the expiry: %+v, want the cleanup given up (naming its slot) and shop dropped", got)
	}
	if len(f.cleanups()) != 0 {
		t.Errorf("cleanups left: %+v", f.cleanups())
	}
	applyAll(t, f, pipelinePutCmd{Spec: cdcSpec("shop"), Time: t0})
	if p, _ := f.pipeline("shop"); p.Stream == nil || p.Stream.Epoch != 1 {
		t.Errorf("stream state of the cdc pipeline applied again: %+v, want epoch 1 kept", p.Stream)
	}
}

// A finished backfill keeps counts of its windows and its first failed
// ones, whatever its size.
func TestFSMTrimBackfill(t *testing.T) {
	s := newState()
	b := &backfillState{ID: "ev-bf0001", Pipeline: "ev", State: protocol.BackfillDone}
	for i := range 1000 {
		w := protocol.BackfillWindow{State: protocol.WindowCommitted, Rows: 2, Run: fmt.Sprintf("ev-%06d", i)}
		switch {
		case i%10 == 0:
			w.State, w.Error = protocol.WindowFailed, "boom"
		case i%10 == 1:
			w.State = protocol.WindowSkipped
		}
		b.Windows = append(b.Windows, w)
	}
	s.Backfills[b.ID] = b
	if got, _ := (stateTrimCmd{Time: t0}).applyTo(s); got.Backfills != 1 {
		t.Fatalf("trim: %+v", got)
	}
	st := backfillStatus(s.Backfills[b.ID])
	if st.Total != 1000 || st.Committed != 800 || st.Failed != 100 || st.Skipped != 100 || st.Rows != 1600 || len(st.Windows) != maxKeptFailedWindows {
		t.Errorf("status of a trimmed backfill: total %d committed %d failed %d skipped %d rows %d, %d windows",
			st.Total, st.Committed, st.Failed, st.Skipped, st.Rows, len(st.Windows))
	}
}

// snapshotSize is the size of f's Raft snapshot.
func snapshotSize(t *testing.T, f *fsm) int {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Len()
}

// boundedLog is the log of runs [from, to) of a busy cluster, as the
// leader writes it: runs of orders of 8 partitions each (every tenth
// fails), and every 500 runs a pipeline that runs 20 times and is deleted
// and a cdc pipeline that is deleted (the cleanup of one in two never
// succeeds); with trims, one every 100 runs.
func boundedLog(from, to int, trims bool) []entry {
	const keep = 50
	var log []entry
	if from == 0 {
		log = append(log, put("orders"))
	}
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Minute) }
	run := func(p string, seq int, fail bool) {
		id := fmt.Sprintf("%s-%06d", p, seq)
		var parts []protocol.Partition
		for i := range 8 {
			parts = append(parts, protocol.Partition{Key: fmt.Sprintf("files[%d]", i),
				Spec: []byte(fmt.Sprintf(`{"files":["s3://bucket/events/2026/03/01/part-%06d-%d.parquet","s3://bucket/events/2026/03/01/part-%06d-%d.parquet"]}`, seq, i, seq, i+1))})
		}
		log = append(log, create(p, fmt.Sprintf("req-%s", id)), runPlannedCmd{Run: id, Partitions: parts, Time: t0}, published(id))
		if fail {
			log = append(log, failed(id, "t00003", protocol.ErrorPermanent, 1), notified(id))
			return
		}
		for i := range 8 {
			log = append(log, ok(id, taskID(1, i), 100))
		}
		log = append(log, committing(id), committed(id, keep), notified(id))
	}
	for i := from; i < to; i++ {
		run("orders", i+1, i%10 == 9)
		if i%500 == 499 {
			n := i / 500
			tmp, cdc := fmt.Sprintf("tmp%03d", n), fmt.Sprintf("cdc%03d", n)
			log = append(log, put(tmp))
			for j := range 20 {
				run(tmp, j+1, false)
			}
			log = append(log, pipelinePutCmd{Spec: cdcSpec(cdc), Time: at(i)}, grant(cdc, "w1", 1),
				del(tmp), pipelineDeleteCmd{Name: cdc, Time: at(i)})
			if n%2 == 0 {
				log = append(log, cleanupDoneCmd{ID: fmt.Sprintf("cleanup-%06d", n+1)})
			}
		}
		if trims && i%100 == 99 {
			log = append(log, trim(24*time.Hour, at(i)))
		}
	}
	return log
}

// The state stays bounded however many runs go through it: the Raft
// snapshot after 10,000 runs is about the size it was after 1,000. Without
// the trims, the same log grows it several times over.
func TestFSMSnapshotBounded(t *testing.T) {
	for _, trims := range []bool{true, false} {
		f := newFSM()
		applyAll(t, f, boundedLog(0, 1000, trims)...)
		at1k := snapshotSize(t, f)
		applyAll(t, f, boundedLog(1000, 10_000, trims)...)
		at10k := snapshotSize(t, f)
		t.Logf("trims %v: snapshot %d bytes after 1,000 runs, %d after 10,000", trims, at1k, at10k)
		if trims && at10k > at1k*5/4 {
			t.Errorf("snapshot grew from %d bytes after 1,000 runs to %d after 10,000", at1k, at10k)
		}
		if !trims && at10k < 2*at1k {
			t.Errorf("without trims the snapshot grew from %d to %d bytes only: the log does not exercise the trims", at1k, at10k)
		}
		if trims {
			if n := len(f.st.Runs); n > 3*50 {
				t.Errorf("%d runs kept", n)
			}
			if p := f.st.Pipelines["orders"]; p.RunSeq != 10_000 {
				t.Errorf("orders at run %d, want 10000", p.RunSeq)
			}
		}
	}
}

// A trimmed state, retired pipelines and summarized backfills included,
// restores from its snapshot as it was, and goes on the same.
func TestFSMTrimmedSnapshotRestores(t *testing.T) {
	f := newFSM()
	applyAll(t, f, boundedLog(0, 600, true)...)
	if len(f.st.Retired) == 0 {
		t.Fatal("the log retired no pipeline")
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM()
	if err := g.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	same := func() bool {
		a, _ := json.Marshal(f.st)
		b, _ := json.Marshal(g.st)
		return bytes.Equal(a, b)
	}
	if !same() {
		t.Fatal("the restored state differs")
	}
	// The same entries change both the same (a trim finds nothing more to
	// strip in either).
	at := t0.Add(24 * time.Hour)
	if a, b := applyAll(t, f, trim(time.Hour, at)).(stateTrimReply), applyAll(t, g, trim(time.Hour, at)).(stateTrimReply); !reflect.DeepEqual(a, b) || a.Runs != 0 {
		t.Errorf("trims after the restore: %+v and %+v", a, b)
	}
	applyAll(t, f, put("tmp000"))
	applyAll(t, g, put("tmp000"))
	if !same() || g.st.Pipelines["tmp000"].RunSeq != 20 {
		t.Fatalf("a retired pipeline applied again after a restore: run seq %d, want 20", g.st.Pipelines["tmp000"].RunSeq)
	}
}
