package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/iceberg"
	"github.com/sluicehq/sluice/protocol"
)

// A readiness pipeline watching an Iceberg table (local warehouse, SQLite
// catalog) announces each snapshot committed since its start once, in
// the table's order, with the snapshot's id and summary, and none
// committed before its start; a pipeline with trigger.after runs once per
// snapshot, its id in the run's trigger context. The Raft leader killed
// after two announcements: the next leader announces only the snapshot
// appended since, as the third.
func TestReadinessIcebergSnapshots(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	warehouse := t.TempDir()
	cfg := iceberg.SinkConfig{Config: iceberg.Config{Table: "lake.orders", Warehouse: warehouse}}
	writer, err := iceberg.NewSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	schema := &protocol.Schema{Columns: []protocol.Column{{Name: "id", Type: protocol.TypeInt64, NotNull: true}}}
	if err := writer.CheckSchema(ctx, schema); err != nil {
		t.Fatal(err)
	}
	// appendRows appends 10 rows in one commit and returns the snapshot
	// it made, as the table's catalog has it.
	appendRows := func(n int) string {
		t.Helper()
		run := fmt.Sprintf("append-%d", n)
		w, err := writer.OpenTask(ctx, connectors.TaskRef{RunID: run, TaskID: "t0", Attempt: 1, Schema: schema})
		if err != nil {
			t.Fatal(err)
		}
		var raw []byte
		for id := n * 10; id < n*10+10; id++ {
			raw = fmt.Appendf(raw, "%d\n", id)
		}
		if err := w.Write(ctx, connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: []string{"id"}, Rows: 10}); err != nil {
			t.Fatal(err)
		}
		out, err := w.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(n) * time.Hour)
		if _, err := writer.Commit(ctx, connectors.CommitRequest{RunID: run, Pipeline: "appender", Mode: connectors.ModeAppend,
			Window: &connectors.Window{From: from, To: from.Add(time.Hour)}, Tasks: []connectors.TaskOutput{out}, Schema: schema}); err != nil {
			t.Fatal(err)
		}
		_, tbl := readIceberg(t, filepath.Join(warehouse, "catalog.db"), warehouse, "", "lake.orders", 0)
		return strconv.FormatInt(tbl.CurrentSnapshot().SnapshotID, 10)
	}
	appendRows(0) // before the start: never announced
	time.Sleep(20 * time.Millisecond)
	start := time.Now().UTC()
	snaps := []string{appendRows(1), appendRows(2)}

	c := newCluster(t, clusterConfig{workers: 1})
	applyYAML(t, c, fmt.Sprintf("name: lake-ready\npattern: readiness\nsource: {kind: iceberg, table: lake.orders, warehouse: %s}\nreadiness: {start: %s, check: 1s}\n",
		warehouse, start.Format(time.RFC3339Nano)))
	c.apply("after-lake", writeDataset(t, 1, 5), t.TempDir(), 1, "trigger:\n  after: lake-ready\n")
	subject := protocol.ReadyEventSubject("lake-ready")

	// events checks the ready events on the subject: one per snapshot,
	// in order, each with its id, its summary and its number.
	events := func(want []string) {
		t.Helper()
		expectMessages(t, c.js, protocol.StreamEvents, subject, len(want))
		_, tbl := readIceberg(t, filepath.Join(warehouse, "catalog.db"), warehouse, "", "lake.orders", 0)
		cons, err := c.js.OrderedConsumer(ctx, protocol.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
		if err != nil {
			t.Fatal(err)
		}
		for i, id := range want {
			m, err := cons.Next()
			if err != nil {
				t.Fatal(err)
			}
			ev, err := protocol.Decode[protocol.ReadyEvent](m.Data())
			if err != nil {
				t.Fatal(err)
			}
			sid, _ := strconv.ParseInt(id, 10, 64)
			sn := tbl.SnapshotByID(sid)
			if ev.Snapshot != id || ev.Partition != id || ev.Seq != int64(i+1) || ev.Source != "iceberg" || sn == nil ||
				!ev.Window.From.Equal(time.UnixMilli(sn.TimestampMs).UTC()) {
				t.Fatalf("ready event %d: %+v, want snapshot %s", i+1, ev, id)
			}
			if ev.Summary["operation"] != string(sn.Summary.Operation) || ev.Summary["added-records"] != "10" ||
				ev.Summary["added-records"] != sn.Summary.Properties["added-records"] {
				t.Fatalf("ready event of snapshot %s: summary %v, the table's %v %v", id, ev.Summary, sn.Summary.Operation, sn.Summary.Properties)
			}
		}
	}
	// runsAfter checks that the pipeline after it ran once per snapshot,
	// with the snapshot in its trigger context.
	runsAfter := func(want []string) {
		t.Helper()
		var got []string
		for _, r := range c.runsOf("after-lake", len(want)) {
			st := c.wait(r.RunID)
			if st.State != protocol.RunCommitted || st.Trigger == nil || st.Trigger.After == nil || st.Trigger.After.Pipeline != "lake-ready" {
				t.Fatalf("run after the snapshot: %s (%s), trigger %+v", st.State, st.Error, st.Trigger)
			}
			got = append(got, st.Trigger.After.Location)
		}
		slices.Sort(got)
		want = slices.Sorted(slices.Values(want))
		if !slices.Equal(got, want) {
			t.Fatalf("runs after snapshots %v, want %v", got, want)
		}
	}
	events(snaps)
	runsAfter(snaps)

	old := c.leader()
	old.c.Kill()
	old.killed = true
	t.Logf("killed the Raft leader; new leader %s", c.leader().c.LeaderID())
	time.Sleep(2500 * time.Millisecond) // more than two checks of the new leader
	expectMessages(t, c.js, protocol.StreamEvents, subject, 2)
	c.runsOf("after-lake", 2)

	snaps = append(snaps, appendRows(3))
	events(snaps)
	runsAfter(snaps)
	st, err := c.client.Status(c.ctx(), protocol.StatusRequest{Pipeline: "lake-ready"})
	if err != nil || len(st.Pipelines) != 1 {
		t.Fatalf("status: %+v, %v", st, err)
	}
	if ps := st.Pipelines[0]; ps.Ready == nil || ps.Ready.Announced != 3 || ps.Ready.Last != snaps[2] || ps.Ready.Pending != "" {
		t.Fatalf("status of the readiness pipeline: %+v %+v", ps, ps.Ready)
	}
}
