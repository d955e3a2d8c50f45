package files

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

func appendReq(run string, w connectors.Window, outs []connectors.TaskOutput) connectors.CommitRequest {
	return connectors.CommitRequest{RunID: run, Pipeline: "p", Version: 1, Tasks: outs, Mode: connectors.ModeAppend, Window: &w, DeltaColumn: "at"}
}

func dirNames(t *testing.T, root string) []string {
	t.Helper()
	es, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// Each window lands in its own directory, _SUCCESS inside; a window
// committed again replaces its directory (never two copies of its rows);
// a repeated commit changes nothing; a window covering smaller ones
// replaces them; a partial overlap is refused before anything changes.
func TestSinkCommitWindow(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, err := NewSink(SinkConfig{Path: root})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Hour) }
	w01 := connectors.Window{From: h(0), To: h(1)}
	w12 := connectors.Window{From: h(1), To: h(2)}

	outs := stage(t, s, "r1", []connectors.Batch{jsonlBatch(`{"a":1}`, `{"a":2}`)})
	res, err := s.Commit(ctx, appendReq("r1", w01, outs))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "window=20260101T000000Z_20260101T010000Z")
	if res.Location != dir || res.Marker != filepath.Join(dir, "_SUCCESS") {
		t.Fatalf("commit result %+v", res)
	}
	got, err := ReadChecksum(dir, "jsonl")
	if want := rowsSum(jsonlBatch(`{"a":1}`, `{"a":2}`)); err != nil || got != want {
		t.Fatalf("window dir holds %v (%v), want %v", got, err, want)
	}
	outs2 := stage(t, s, "r2", []connectors.Batch{jsonlBatch(`{"a":3}`)})
	if _, err := s.Commit(ctx, appendReq("r2", w12, outs2)); err != nil {
		t.Fatal(err)
	}
	// A re-run of the first window replaces its directory.
	outs3 := stage(t, s, "r3", []connectors.Batch{jsonlBatch(`{"a":1}`, `{"a":2}`, `{"a":4}`)})
	if _, err := s.Commit(ctx, appendReq("r3", w01, outs3)); err != nil {
		t.Fatal(err)
	}
	// The same commit again (a leader retrying after a crash) is harmless.
	if _, err := s.Commit(ctx, appendReq("r3", w01, outs3)); err != nil {
		t.Fatalf("repeated commit: %v", err)
	}
	got, err = ReadChecksum(dir, "jsonl")
	if want := rowsSum(jsonlBatch(`{"a":1}`, `{"a":2}`, `{"a":4}`)); err != nil || got != want {
		t.Fatalf("replaced window holds %v (%v), want %v", got, err, want)
	}
	m, err := readMarker(dir)
	if err != nil || m.Run != "r3" || m.Window == nil || *m.Window != w01 {
		t.Fatalf("marker %+v (%v)", m, err)
	}
	want := []string{"_staging", "window=20260101T000000Z_20260101T010000Z", "window=20260101T010000Z_20260101T020000Z"}
	if names := dirNames(t, root); !slices.Equal(names, want) && !slices.Equal(names, want[1:]) {
		t.Fatalf("dataset holds %v, want %v", names, want[1:])
	}
	all, _ := ReadChecksum(root, "jsonl")
	if all.Rows != 4 {
		t.Fatalf("dataset holds %d rows, want 4", all.Rows)
	}

	// A partial overlap is refused, and changes nothing.
	outs4 := stage(t, s, "r4", []connectors.Batch{jsonlBatch(`{"a":9}`)})
	_, err = s.Commit(ctx, appendReq("r4", connectors.Window{From: h(0).Add(30 * time.Minute), To: h(2)}, outs4))
	if err == nil || !connectors.IsPermanent(err) {
		t.Fatalf("partial overlap: err = %v, want a permanent error", err)
	}
	// A window covering both replaces both.
	if _, err := s.Commit(ctx, appendReq("r4", connectors.Window{From: h(0), To: h(3)}, outs4)); err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, root); !slices.Equal(names, []string{"_staging", "window=20260101T000000Z_20260101T030000Z"}) &&
		!slices.Equal(names, []string{"window=20260101T000000Z_20260101T030000Z"}) {
		t.Fatalf("dataset holds %v", names)
	}
	if _, err := os.Stat(stagingDir(root, "r4")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("staging of r4 left: %v", err)
	}
}

func TestWindowDirRoundTrip(t *testing.T) {
	w := connectors.Window{From: time.Date(2026, 1, 1, 0, 0, 0, 500_000_000, time.UTC), To: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)}
	name := WindowDir(w)
	if name != "window=20260101T000000.5Z_20260102T000000Z" {
		t.Fatalf("WindowDir = %q", name)
	}
	if got, ok := parseWindowDir(name); !ok || got != w {
		t.Fatalf("parseWindowDir(%q) = %v, %v", name, got, ok)
	}
	for _, bad := range []string{"window=x_y", "v000001", "window=20260102T000000Z_20260101T000000Z"} {
		if _, ok := parseWindowDir(bad); ok {
			t.Errorf("parseWindowDir(%q) accepted", bad)
		}
	}
}

// Windows of integer values land in window=<lo>_<hi> directories and are
// replaced like windows of time.
func TestSinkCommitValueWindow(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, err := NewSink(SinkConfig{Path: root})
	if err != nil {
		t.Fatal(err)
	}
	w := protocol.ValueWindow(-5, 1000)
	outs := stage(t, s, "r1", []connectors.Batch{jsonlBatch(`{"id":1}`)})
	res, err := s.Commit(ctx, appendReq("r1", w, outs))
	if err != nil || res.Location != filepath.Join(root, "window=-5_1000") {
		t.Fatalf("commit: %+v, %v", res, err)
	}
	if got, ok := parseWindowDir("window=-5_1000"); !ok || got != w {
		t.Fatalf("parsed %v %v, want %v", got, ok, w)
	}
	outs = stage(t, s, "r2", []connectors.Batch{jsonlBatch(`{"id":1}`, `{"id":2}`)})
	if _, err := s.Commit(ctx, appendReq("r2", protocol.ValueWindow(-10, 2000), outs)); err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, root); !slices.Equal(names, []string{"_staging", "window=-10_2000"}) && !slices.Equal(names, []string{"window=-10_2000"}) {
		t.Fatalf("dataset %v: the wider window replaced the one it covers", names)
	}
}
