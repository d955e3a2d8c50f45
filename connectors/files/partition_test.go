package files

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
)

func hourWindow(day, hour int) connectors.Window {
	from := time.Date(2026, 11, day, hour, 0, 0, 0, time.UTC)
	return connectors.Window{From: from, To: from.Add(time.Hour)}
}

func TestLayoutRendersTheWindowsPartition(t *testing.T) {
	tests := []struct {
		layout string
		w      connectors.Window
		want   string
		size   time.Duration
	}{
		{"date={date}/hour={hour}", hourWindow(25, 7), "date=2026-11-25/hour=07", time.Hour},
		{"{year}/{month}/{day}/{hour}", hourWindow(25, 23), "2026/11/25/23", time.Hour},
		{"events/dt={date}", connectors.Window{From: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)}, "events/dt=2026-11-01", 24 * time.Hour},
		// A window given in another zone names the UTC partition.
		{"date={date}/hour={hour}", connectors.Window{From: time.Date(2026, 11, 25, 9, 0, 0, 0, time.FixedZone("x", 2*3600)), To: time.Date(2026, 11, 25, 10, 0, 0, 0, time.FixedZone("x", 2*3600))}, "date=2026-11-25/hour=07", time.Hour},
	}
	for _, tt := range tests {
		l, err := parseLayout(tt.layout)
		if err != nil {
			t.Fatalf("parseLayout(%q): %v", tt.layout, err)
		}
		if l.size != tt.size {
			t.Errorf("%q: size %s, want %s", tt.layout, l.size, tt.size)
		}
		got, err := PartitionPath("/data", tt.layout, tt.w)
		if want := filepath.Join("/data", tt.want); err != nil || got != want {
			t.Errorf("PartitionPath(%q, %s) = %q, %v; want %q", tt.layout, tt.w, got, err, want)
		}
		if size := PartitionSize(mustJSON(SourceConfig{Path: "/data", Layout: tt.layout})); size != tt.size {
			t.Errorf("PartitionSize(%q) = %s, want %s", tt.layout, size, tt.size)
		}
	}
	if size := PartitionSize(mustJSON(SourceConfig{Path: "/data"})); size != 0 {
		t.Errorf("PartitionSize without a layout = %s, want 0", size)
	}
}

func TestLayoutRefusesWindowsThatAreNotOnePartition(t *testing.T) {
	for _, w := range []connectors.Window{
		{From: time.Date(2026, 11, 25, 7, 30, 0, 0, time.UTC), To: time.Date(2026, 11, 25, 8, 30, 0, 0, time.UTC)}, // not on a boundary
		{From: time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC), To: time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)},   // two partitions
	} {
		_, err := PartitionPath("/data", "date={date}/hour={hour}", w)
		if err == nil || !connectors.IsPermanent(err) || !strings.Contains(err.Error(), "is not one partition of 1h0m0s") {
			t.Errorf("PartitionPath(%s) error = %v, want a permanent 'is not one partition'", w, err)
		}
	}
}

func TestSourceConfigLayoutProblems(t *testing.T) {
	tests := []struct {
		cfg   SourceConfig
		field string
		msg   string
	}{
		{SourceConfig{Path: "in", Layout: "date={dt}"}, "layout", "unknown placeholder {dt}"},
		{SourceConfig{Path: "in", Layout: "hour={hour}"}, "layout", "does not name a day"},
		{SourceConfig{Path: "in", Layout: "{year}/{month}"}, "layout", "does not name a day"},
		{SourceConfig{Path: "in", Layout: "/abs/{date}"}, "layout", "not a clean relative path"},
		{SourceConfig{Path: "in", Layout: "../{date}"}, "layout", "not a clean relative path"},
		{SourceConfig{Path: "in", Layout: "date={date"}, "layout", "without its '}'"},
		{SourceConfig{Path: "in", Layout: "{date}", Ready: "marker"}, "ready", `unknown convention "marker"`},
		{SourceConfig{Path: "in", Ready: ReadyNextPartition}, "ready", "set layout"},
	}
	for _, tt := range tests {
		err := ValidateSource(mustJSON(tt.cfg))
		var fe *connectors.FieldError
		if !errors.As(err, &fe) || fe.Field != tt.field || !strings.Contains(fe.Msg, tt.msg) {
			t.Errorf("ValidateSource(%+v) = %v, want field %s with %q", tt.cfg, err, tt.field, tt.msg)
		}
	}
	ok := SourceConfig{Path: "in", Format: "jsonl", Layout: "date={date}/hour={hour}", Ready: ReadyNextPartition}
	if err := ValidateSource(mustJSON(ok)); err != nil {
		t.Errorf("ValidateSource(%+v) = %v", ok, err)
	}
}

func TestSourceReadiness(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	w2 := hourWindow(25, 2)
	dir2 := filepath.Join(root, "date=2026-11-25", "hour=02")
	req := connectors.PlanRequest{RunID: "r", Window: &w2}
	ready := func(convention string) (bool, string) {
		t.Helper()
		src, err := NewSource(SourceConfig{Path: root, Format: "jsonl", Layout: "date={date}/hour={hour}", Ready: convention})
		if err != nil {
			t.Fatal(err)
		}
		ok, what, err := src.Ready(ctx, req)
		if err != nil {
			t.Fatalf("Ready: %v", err)
		}
		return ok, what
	}
	// A missing partition is not ready, under either convention.
	for _, conv := range []string{"", ReadyNextPartition} {
		if ok, what := ready(conv); ok || what != dir2 {
			t.Fatalf("missing partition (ready %q): ready=%v what=%q; want not ready, %q", conv, ok, what, dir2)
		}
	}
	// Data being written, no marker, no next partition: not ready.
	writeFile(t, dir2, "part-0.jsonl", jsonlRows(0, 3))
	if ok, _ := ready(""); ok {
		t.Fatal("partition without _SUCCESS is ready")
	}
	// The next partition appears: ready by that convention only.
	writeFile(t, filepath.Join(root, "date=2026-11-25", "hour=03"), "part-0.jsonl", jsonlRows(100, 1))
	if ok, _ := ready(""); ok {
		t.Fatal("success_file: partition ready without its _SUCCESS")
	}
	if ok, what := ready(ReadyNextPartition); !ok || what != dir2 {
		t.Fatalf("next_partition with hour=03 present: ready=%v what=%q", ok, what)
	}
	// The marker makes it ready by both.
	writeFile(t, dir2, SuccessFile, "")
	for _, conv := range []string{"", ReadySuccessFile, ReadyNextPartition} {
		if ok, _ := ready(conv); !ok {
			t.Fatalf("partition with _SUCCESS (ready %q) not ready", conv)
		}
	}
	// The next partition across midnight: hour 23 is followed by the next
	// day's hour 00.
	w23 := hourWindow(25, 23)
	src, _ := NewSource(SourceConfig{Path: root, Layout: "date={date}/hour={hour}", Ready: ReadyNextPartition})
	if ok, _, _ := src.Ready(ctx, connectors.PlanRequest{Window: &w23}); ok {
		t.Fatal("hour 23 ready before the next day exists")
	}
	writeFile(t, filepath.Join(root, "date=2026-11-26", "hour=00"), "part-0.jsonl", jsonlRows(200, 1))
	if ok, _, _ := src.Ready(ctx, connectors.PlanRequest{Window: &w23}); !ok {
		t.Fatal("hour 23 not ready once date=2026-11-26/hour=00 exists")
	}
	// A window that is not one partition fails for good.
	bad := connectors.Window{From: w2.From, To: w2.From.Add(2 * time.Hour)}
	if _, _, err := src.Ready(ctx, connectors.PlanRequest{Window: &bad}); err == nil || !connectors.IsPermanent(err) {
		t.Fatalf("Ready over two partitions: err = %v, want permanent", err)
	}
	// Without a window (a full load) the source is ready.
	if ok, _, err := src.Ready(ctx, connectors.PlanRequest{}); !ok || err != nil {
		t.Fatalf("Ready without a window = %v, %v", ok, err)
	}
}

// A run's plan reads exactly its window's partition: the rows of the
// other hours and the _SUCCESS marker stay out.
func TestSourcePlansTheWindowsPartition(t *testing.T) {
	root := t.TempDir()
	for h, rows := range map[int][2]int{0: {0, 5}, 1: {100, 7}, 2: {200, 4}} {
		dir := filepath.Join(root, "date=2026-11-25", "hour=0"+string(rune('0'+h)))
		writeFile(t, dir, "a.jsonl", jsonlRows(rows[0], rows[1]-2))
		writeFile(t, dir, "sub/b.jsonl", jsonlRows(rows[0]+50, 2))
		writeFile(t, dir, SuccessFile, "")
	}
	src, err := NewSource(SourceConfig{Path: root, Format: "jsonl", Layout: "date={date}/hour={hour}"})
	if err != nil {
		t.Fatal(err)
	}
	w1 := hourWindow(25, 1)
	parts, outs, err := readAll(t, src, connectors.PlanRequest{RunID: "r", Window: &w1, Partitioning: connectors.Partitioning{MaxFiles: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 2 {
		t.Fatalf("planned %d tasks, want 2 (one per file of hour=01)", len(parts))
	}
	got := string(outs[0]) + string(outs[1])
	if want := jsonlRows(100, 5) + jsonlRows(150, 2); got != want {
		t.Fatalf("read\n%s\nwant\n%s", got, want)
	}
	// An hour without a directory (the next-partition convention allows
	// it) plans no task.
	w5 := hourWindow(25, 5)
	plan, err := src.Plan(context.Background(), connectors.PlanRequest{RunID: "r5", Window: &w5})
	if err != nil || len(plan.Partitions) != 0 {
		t.Fatalf("plan of a missing partition = %d tasks, %v; want none", len(plan.Partitions), err)
	}
	// A source without a layout cannot read a window.
	flat, _ := NewSource(SourceConfig{Path: root, Format: "jsonl"})
	if _, err := flat.Plan(context.Background(), connectors.PlanRequest{RunID: "r", Window: &w1}); err == nil || !connectors.IsPermanent(err) {
		t.Fatalf("window on a source without layout: err = %v, want permanent", err)
	}
}

// An empty partition (only its _SUCCESS) plans no task, and its run's
// commit without task outputs still lands the window, empty, with its
// marker: the window is loaded (a re-run replaces it) and holds no row.
func TestEmptyPartitionCommitsAnEmptyWindow(t *testing.T) {
	ctx := context.Background()
	in, out := t.TempDir(), t.TempDir()
	w := hourWindow(25, 4)
	writeFile(t, filepath.Join(in, "date=2026-11-25", "hour=04"), SuccessFile, "")
	src, _ := NewSource(SourceConfig{Path: in, Format: "jsonl", Layout: "date={date}/hour={hour}"})
	if ok, _, err := src.Ready(ctx, connectors.PlanRequest{Window: &w}); !ok || err != nil {
		t.Fatalf("empty partition with _SUCCESS: ready %v, %v", ok, err)
	}
	plan, err := src.Plan(ctx, connectors.PlanRequest{RunID: "r", Window: &w})
	if err != nil || len(plan.Partitions) != 0 {
		t.Fatalf("plan = %d tasks, %v; want none", len(plan.Partitions), err)
	}
	sink, _ := NewSink(SinkConfig{Path: out})
	res, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "r", Pipeline: "p", Version: 1, Mode: connectors.ModeAppend, Window: &w})
	if err != nil {
		t.Fatal(err)
	}
	if res.Location != filepath.Join(out, WindowDir(w)) {
		t.Fatalf("committed to %s", res.Location)
	}
	if sum, err := ReadChecksum(res.Location, "jsonl"); err != nil || sum.Rows != 0 {
		t.Fatalf("empty window holds %d rows (%v)", sum.Rows, err)
	}
	if _, err := os.Stat(res.Marker); err != nil {
		t.Fatalf("marker: %v", err)
	}
}
