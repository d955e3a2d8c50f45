package cdcapply_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors/cdcapply"
	"github.com/sluicehq/sluice/protocol"
)

// hourDir is the directory of a table's hour, relative to the root.
func hourDir(schema, table string, at time.Time) string {
	at = at.UTC()
	return filepath.Join(schema+"."+table, "date="+at.Format("2006-01-02"), "hour="+at.Format("15"))
}

// readTree returns every part file's lines by hour directory (parts in name
// order), and the hour directories holding _SUCCESS.
func readTree(t *testing.T, root string) (lines map[string][]cdcapply.Event, closed map[string]bool, files map[string]string) {
	t.Helper()
	lines, closed, files = map[string][]cdcapply.Event{}, map[string]bool{}, map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files[rel] = string(b)
		dir, name := filepath.Split(rel)
		dir = filepath.Clean(dir)
		switch {
		case name == cdcapply.SuccessFile:
			if len(b) != 0 {
				t.Errorf("%s is not empty", rel)
			}
			closed[dir] = true
		case strings.HasPrefix(name, "part-"):
			var first uint64
			if len(name) == len("part-.jsonl")+20 && strings.HasSuffix(name, ".jsonl") {
				first, err = strconv.ParseUint(name[len("part-"):len("part-")+20], 10, 64)
			}
			if err != nil || first == 0 {
				t.Errorf("part file name %s", rel)
			}
			sc := bufio.NewScanner(strings.NewReader(string(b)))
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var e cdcapply.Event
				if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
					t.Fatalf("%s: %v", rel, err)
				}
				if e.Seq < first {
					t.Errorf("%s holds sequence %d, before its name", rel, e.Seq)
				}
				lines[dir] = append(lines[dir], e)
			}
		case strings.HasPrefix(name, "."):
			t.Errorf("temporary file left: %s", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return lines, closed, files
}

// byHour groups events by table and hour as Files lays them out.
func byHour(evs []cdcapply.Event) map[string][]cdcapply.Event {
	out := map[string][]cdcapply.Event{}
	for _, e := range evs {
		d := hourDir(e.Schema, e.Table, e.CommitTime)
		out[d] = append(out[d], e)
	}
	return out
}

func sameEvents(t *testing.T, got, want map[string][]cdcapply.Event) {
	t.Helper()
	for _, d := range slices.Sorted(func(yield func(string) bool) {
		for d := range want {
			if !yield(d) {
				return
			}
		}
		for d := range got {
			if _, ok := want[d]; !ok && !yield(d) {
				return
			}
		}
	}) {
		g, w := got[d], want[d]
		var gs, ws []uint64
		for _, e := range g {
			gs = append(gs, e.Seq)
		}
		for _, e := range w {
			ws = append(ws, e.Seq)
		}
		if !slices.Equal(gs, ws) {
			t.Errorf("%s: sequences %v, want %v", d, gs, ws)
			continue
		}
		for i := range g {
			if g[i].Op != w[i].Op || !reflect.DeepEqual(g[i].After, w[i].After) || !reflect.DeepEqual(g[i].Before, w[i].Before) ||
				!g[i].CommitTime.Equal(w[i].CommitTime) || !slices.Equal(g[i].Key, w[i].Key) {
				t.Errorf("%s: line %d is %+v, want %+v", d, i, g[i], w[i])
			}
		}
	}
}

// TestFilesRun: Run writes each table's events under the hour of their
// commit time, one line per event; the hours that ended are closed once Run
// is caught up, the open one is not; applying again writes nothing.
func TestFilesRun(t *testing.T) {
	js := startJS(t)
	root := t.TempDir()
	h10 := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	future := time.Now().Add(2 * time.Hour) // an hour that cannot close during the test
	var evs []protocol.ChangeEvent
	for i := range 30 {
		tb := []string{"a", "b"}[i%2]
		e := ev(protocol.OpInsert, "s", tb, nil, protocol.Row{"id": T(fmt.Sprint(i)), "v": T(fmt.Sprintf("line\n%d \"q\" ü", i)), "n": N, "big": U})
		switch {
		case i < 12:
			e.CommitTime = h10.Add(time.Duration(i) * time.Minute)
		case i < 24:
			e.CommitTime = h10.Add(time.Hour + time.Duration(i)*time.Minute)
		default:
			e.CommitTime = future
		}
		if i%5 == 4 {
			e.Op, e.Before, e.After = protocol.OpDelete, protocol.Row{"id": T(fmt.Sprint(i - 1))}, nil
		}
		evs = append(evs, e)
	}
	seqs := publish(t, js, evs...)
	var want []cdcapply.Event
	for i, e := range evs {
		want = append(want, cdcapply.Event{Seq: seqs[i], ChangeEvent: e})
	}

	f, err := cdcapply.NewFiles(cdcapply.FilesConfig{Path: root})
	if err != nil {
		t.Fatal(err)
	}
	cfg := cdcapply.Config{Pipeline: "files1", Upstream: "up", BatchSize: 7, BatchWait: 50 * time.Millisecond, CheckInterval: 50 * time.Millisecond}
	r, stop, done := run(t, js, cfg, f)
	last := seqs[len(seqs)-1]
	closedHours := []string{hourDir("s", "a", h10), hourDir("s", "b", h10), hourDir("s", "a", h10.Add(time.Hour)), hourDir("s", "b", h10.Add(time.Hour))}
	waitFor(t, "all events and closed hours", done, func() bool {
		if r.Status().Applied != last {
			return false
		}
		for _, d := range closedHours {
			if _, err := os.Stat(filepath.Join(root, d, cdcapply.SuccessFile)); err != nil {
				return false
			}
		}
		return true
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	lines, closed, files := readTree(t, root)
	sameEvents(t, lines, byHour(want))
	wantClosed := map[string]bool{}
	for _, d := range closedHours {
		wantClosed[d] = true
	}
	if !reflect.DeepEqual(closed, wantClosed) {
		t.Errorf("closed hours %v, want %v", closed, wantClosed)
	}
	if got := files[cdcapply.OffsetFile]; got != fmt.Sprintf("%d\n", last) {
		t.Errorf("offset file %q, want %d", got, last)
	}
	// The line is the event's JSON plus its sequence.
	var line map[string]any
	first := files[filepath.Join(hourDir("s", "a", h10), fmt.Sprintf("part-%020d.jsonl", seqs[0]))]
	if err := json.Unmarshal([]byte(strings.SplitN(first, "\n", 2)[0]), &line); err != nil || line["seq"] != float64(seqs[0]) || line["op"] != "insert" || line["table"] != "a" {
		t.Errorf("first line %v (%v)", line, err)
	}

	// Applied again, by a new applier on the same directory: nothing changes.
	f2, err := cdcapply.NewFiles(cdcapply.FilesConfig{Path: root})
	if err != nil {
		t.Fatal(err)
	}
	if err := f2.Apply(context.Background(), want); err != nil {
		t.Fatal(err)
	}
	if err := f2.Apply(context.Background(), want[10:20]); err != nil {
		t.Fatal(err)
	}
	if _, _, files2 := readTree(t, root); !reflect.DeepEqual(files2, files) {
		t.Error("applying the events again changed the files")
	}
}

// TestFilesCrashBeforeOffset: a batch that stopped between its parts and
// its offset, applied again as a shorter batch and the rest, leaves every
// event exactly once, also where the first attempt reached an hour the
// shorter batch does not.
func TestFilesCrashBeforeOffset(t *testing.T) {
	root := t.TempDir()
	h10 := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	var evs []protocol.ChangeEvent
	for i := 1; i <= 10; i++ {
		tb := []string{"b", "a"}[i%2]
		e := ev(protocol.OpInsert, "s", tb, nil, protocol.Row{"id": T(fmt.Sprint(i))})
		e.CommitTime = h10.Add(time.Duration(i) * 10 * time.Minute) // 6..10 in hour 11
		evs = append(evs, e)
	}
	batch := withSeqs(1, evs...)
	f, err := cdcapply.NewFiles(cdcapply.FilesConfig{Path: root})
	if err != nil {
		t.Fatal(err)
	}
	crash := errors.New("crash")
	cdcapply.SetBeforeOffset(f, func() error { return crash })
	if err := f.Apply(context.Background(), batch); !errors.Is(err, crash) {
		t.Fatalf("Apply = %v, want the crash", err)
	}
	lines, _, _ := readTree(t, root)
	if len(lines[hourDir("s", "a", h10.Add(time.Hour))]) == 0 || applied(t, f) != 0 {
		t.Fatalf("the crashed batch wrote %v, offset %d", lines, applied(t, f))
	}

	// Restart: a shorter batch (all in hour 10), then the rest.
	f2, err := cdcapply.NewFiles(cdcapply.FilesConfig{Path: root})
	if err != nil {
		t.Fatal(err)
	}
	if err := f2.Apply(context.Background(), batch[:5]); err != nil {
		t.Fatal(err)
	}
	if err := f2.Apply(context.Background(), batch[5:]); err != nil {
		t.Fatal(err)
	}
	if err := f2.Apply(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	lines, _, _ = readTree(t, root)
	sameEvents(t, lines, byHour(batch))
	if got := applied(t, f2); got != 10 {
		t.Errorf("Applied = %d, want 10", got)
	}
}

// TestFilesCloseHours: an hour closes when the applier is caught up and
// the hour ended more than CloseAfter ago; a new applier finds the open
// hours on disk.
func TestFilesCloseHours(t *testing.T) {
	root := t.TempDir()
	ctx := context.Background()
	h10 := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	a := ev(protocol.OpInsert, "s", "a", nil, protocol.Row{"id": T("1")})
	a.CommitTime = h10.Add(30 * time.Minute)
	b := ev(protocol.OpInsert, "s", "b", nil, protocol.Row{"id": T("1")})
	b.CommitTime = h10.Add(70 * time.Minute)
	f, err := cdcapply.NewFiles(cdcapply.FilesConfig{Path: root})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(ctx, withSeqs(1, a, b)); err != nil {
		t.Fatal(err)
	}
	closed := func() []string {
		_, c, _ := readTree(t, root)
		return slices.Sorted(func(yield func(string) bool) {
			for d := range c {
				if !yield(d) {
					return
				}
			}
		})
	}
	steps := []struct {
		now      time.Time
		caughtUp bool
		want     []string
	}{
		{h10.Add(time.Hour + 30*time.Second), true, nil},                                     // ended 30s ago, CloseAfter 1m
		{h10.Add(time.Hour + 61*time.Second), false, nil},                                    // not caught up
		{h10.Add(time.Hour + 61*time.Second), true, []string{"s.a/date=2024-05-01/hour=10"}}, // closed
		{h10.Add(2*time.Hour + 59*time.Second), true, []string{"s.a/date=2024-05-01/hour=10"}},
	}
	for i, s := range steps {
		if err := f.CloseHours(ctx, s.now, s.caughtUp); err != nil {
			t.Fatal(err)
		}
		if got := closed(); !slices.Equal(got, s.want) {
			t.Errorf("step %d (now %s, caught up %v): closed %v, want %v", i, s.now.Format("15:04:05"), s.caughtUp, got, s.want)
		}
	}
	f2, err := cdcapply.NewFiles(cdcapply.FilesConfig{Path: root, CloseAfter: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := f2.CloseHours(ctx, h10.Add(2*time.Hour+61*time.Second), true); err != nil {
		t.Fatal(err)
	}
	if got, want := closed(), []string{"s.a/date=2024-05-01/hour=10", "s.b/date=2024-05-01/hour=11"}; !slices.Equal(got, want) {
		t.Errorf("after a restart: closed %v, want %v", got, want)
	}
}
