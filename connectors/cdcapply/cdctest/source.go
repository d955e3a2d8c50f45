package cdctest

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/protocol"
)

// Snapshot runs the initial snapshot of a cdc pipeline in the test
// process as the cluster runs it: the snapshot source plans it (creating
// the slot) and every chunk is read into the read-event sink, one task
// after the other; then the run's snapshot is released. It returns the
// consistent LSN. The slot is dropped when the test ends.
func Snapshot(t *testing.T, js jetstream.JetStream, cfg pgcdc.SnapshotConfig, pipeline string) string {
	t.Helper()
	return SnapshotChunks(t, js, cfg, pipeline, nil)
}

// SnapshotChunks is Snapshot reading only the chunks for which keep
// (given the chunk's place in the plan) is true, all when keep is nil: a
// snapshot that failed part way.
func SnapshotChunks(t *testing.T, js jetstream.JetStream, cfg pgcdc.SnapshotConfig, pipeline string, keep func(i int) bool) string {
	t.Helper()
	ctx := context.Background()
	src, err := pgcdc.NewSnapshotSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	DropSlotAtEnd(t, cfg.DSN, cfg.Slot, cfg.Publication)
	sink, err := pgcdc.NewEventsSink(pgcdc.EventsConfig{Pipeline: pipeline, Slot: cfg.Slot}, js)
	if err != nil {
		t.Fatal(err)
	}
	run := "snapshot-" + cfg.Slot
	plan, err := src.Plan(ctx, connectors.PlanRequest{RunID: run, Pipeline: pipeline})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range plan.Partitions {
		if keep != nil && !keep(i) {
			continue
		}
		tw, err := sink.OpenTask(ctx, connectors.TaskRef{RunID: run, TaskID: p.Key, Pipeline: pipeline, Attempt: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Read(ctx, p, func(ctx context.Context, b connectors.Batch) error { return tw.Write(ctx, b) }); err != nil {
			t.Fatalf("read %s: %v", p.Key, err)
		}
		if _, err := tw.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.ReleaseRun(run); err != nil {
		t.Fatal(err)
	}
	return plan.Watermark
}

// DropSlotAtEnd drops a slot and a publication when the test ends, once
// no walsender streams the slot any more.
func DropSlotAtEnd(t *testing.T, dsn, slot, publication string) {
	t.Cleanup(func() {
		var err error
		for range 100 { // the walsender may still be exiting
			if err = pgcdc.DropSlot(context.Background(), dsn, slot, publication); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("drop slot %s: %v", slot, err)
	})
}

// Reader is a pgcdc Reader run by a test.
type Reader struct {
	*pgcdc.Reader
	t    *testing.T
	js   jetstream.JetStream
	dsn  string
	stop context.CancelFunc
	done chan error
}

// StartReader starts a Reader of cfg (heartbeat and status interval short
// unless set), stopped when the test ends, and waits until it streams.
func StartReader(t *testing.T, js jetstream.JetStream, cfg pgcdc.Config) *Reader {
	t.Helper()
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 200 * time.Millisecond
	}
	if cfg.StatusInterval == 0 {
		cfg.StatusInterval = 100 * time.Millisecond
	}
	DropSlotAtEnd(t, cfg.DSN, cfg.Slot, cfg.Publication)
	waitSlotFree(t, cfg.DSN, cfg.Slot)
	r, err := pgcdc.NewReader(cfg, js, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rd := &Reader{Reader: r, t: t, js: js, dsn: cfg.DSN, stop: cancel, done: make(chan error, 1)}
	go func() { rd.done <- r.Run(ctx) }()
	t.Cleanup(func() { rd.Stop() })
	deadline := time.Now().Add(30 * time.Second)
	for r.Status().ConfirmedLSN == "" {
		select {
		case err := <-rd.done:
			t.Fatalf("reader stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("reader did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return rd
}

// waitSlotFree waits until no walsender streams slot (the one of a
// Reader stopped just before may still be exiting on a loaded machine).
func waitSlotFree(t *testing.T, dsn, slot string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(60 * time.Second)
	for {
		var active bool
		err := conn.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&active)
		if errors.Is(err, pgx.ErrNoRows) || err == nil && !active {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot %s still streamed after 60s", slot)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops the Reader and returns Run's error; it may be called more
// than once.
func (r *Reader) Stop() error {
	r.stop()
	err, ok := <-r.done
	if ok {
		close(r.done)
	}
	return err
}

// Published waits until the Reader confirmed everything committed on the
// source so far, and returns the last sequence of SLUICE_CDC.
func (r *Reader) Published() uint64 {
	t := r.t
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, r.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var now string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&now); err != nil {
		t.Fatal(err)
	}
	want, _ := pglogrepl.ParseLSN(now)
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, _ := pglogrepl.ParseLSN(r.Status().ConfirmedLSN)
		if got >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reader confirmed %s, not %s", r.Status().ConfirmedLSN, now)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return LastSeq(t, r.js)
}

// LastSeq is the last stream sequence of SLUICE_CDC.
func LastSeq(t testing.TB, js jetstream.JetStream) uint64 {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, protocol.StreamCDC)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// StreamEvents decodes every event of SLUICE_CDC.
func StreamEvents(t testing.TB, js jetstream.JetStream) []connectors.Event {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, protocol.StreamCDC)
	if err != nil {
		t.Fatal(err)
	}
	var out []connectors.Event
	for seq := uint64(1); seq <= LastSeq(t, js); seq++ {
		msg, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := protocol.DecodeChangeEvents(msg.Data)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		for _, ev := range evs {
			out = append(out, connectors.Event{Seq: seq, ChangeEvent: ev})
		}
	}
	return out
}

// JSON renders v for a test's messages.
func JSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
