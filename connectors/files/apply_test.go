package files_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/cdcapply"
	"github.com/sluicehq/sluice/connectors/cdcapply/cdctest"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/objstore"
	"github.com/sluicehq/sluice/objstore/s3test"
	"github.com/sluicehq/sluice/protocol"
)

var (
	T = protocol.Text
	N = protocol.NullValue
	U = protocol.UnchangedValue
)

// TestFilesRun: Run writes each table's events under the hour of their
// commit time, one line per event; the hours that ended are closed once Run
// is caught up, the open one is not; applying again writes nothing.
func TestFilesRun(t *testing.T) {
	js := cdctest.StartJS(t)
	root := t.TempDir()
	h10 := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	future := time.Now().Add(2 * time.Hour) // an hour that cannot close during the test
	var evs []protocol.ChangeEvent
	for i := range 30 {
		tb := []string{"a", "b"}[i%2]
		e := cdctest.Change(protocol.OpInsert, "s", tb, nil, protocol.Row{"id": T(fmt.Sprint(i)), "v": T(fmt.Sprintf("line\n%d \"q\" ü", i)), "n": N, "big": U})
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
	seqs := cdctest.Publish(t, js, evs...)
	var want []connectors.Event
	for i, e := range evs {
		want = append(want, connectors.Event{Seq: seqs[i], ChangeEvent: e})
	}

	f, err := files.NewApplier(files.ApplierConfig{Path: root})
	if err != nil {
		t.Fatal(err)
	}
	cfg := cdcapply.Config{Pipeline: "files1", Upstream: "up", BatchSize: 7, BatchWait: 50 * time.Millisecond, CheckInterval: 50 * time.Millisecond}
	r, stop, done := cdctest.Run(t, js, cfg, f)
	last := seqs[len(seqs)-1]
	closedHours := []string{cdctest.HourDir("s", "a", h10), cdctest.HourDir("s", "b", h10), cdctest.HourDir("s", "a", h10.Add(time.Hour)), cdctest.HourDir("s", "b", h10.Add(time.Hour))}
	cdctest.WaitFor(t, "all events and closed hours", done, func() bool {
		if r.Status().Applied != last {
			return false
		}
		for _, d := range closedHours {
			if _, err := os.Stat(filepath.Join(root, d, files.SuccessFile)); err != nil {
				return false
			}
		}
		return true
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	lines, closed, contents := cdctest.ReadChangeLog(t, root)
	cdctest.SameEvents(t, lines, cdctest.ByHour(want))
	wantClosed := map[string]bool{}
	for _, d := range closedHours {
		wantClosed[d] = true
	}
	if !reflect.DeepEqual(closed, wantClosed) {
		t.Errorf("closed hours %v, want %v", closed, wantClosed)
	}
	if got := contents[files.OffsetFile]; got != fmt.Sprintf("%d\n", last) {
		t.Errorf("offset file %q, want %d", got, last)
	}
	// The line is the event's JSON plus its sequence.
	var line map[string]any
	first := contents[filepath.Join(cdctest.HourDir("s", "a", h10), fmt.Sprintf("part-%020d.jsonl", seqs[0]))]
	if err := json.Unmarshal([]byte(strings.SplitN(first, "\n", 2)[0]), &line); err != nil || line["seq"] != float64(seqs[0]) || line["op"] != "insert" || line["table"] != "a" {
		t.Errorf("first line %v (%v)", line, err)
	}

	// Applied again, by a new applier on the same directory: nothing changes.
	f2, err := files.NewApplier(files.ApplierConfig{Path: root})
	if err != nil {
		t.Fatal(err)
	}
	if err := f2.Apply(context.Background(), want); err != nil {
		t.Fatal(err)
	}
	if err := f2.Apply(context.Background(), want[10:20]); err != nil {
		t.Fatal(err)
	}
	if _, _, contents2 := cdctest.ReadChangeLog(t, root); !reflect.DeepEqual(contents2, contents) {
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
		e := cdctest.Change(protocol.OpInsert, "s", tb, nil, protocol.Row{"id": T(fmt.Sprint(i))})
		e.CommitTime = h10.Add(time.Duration(i) * 10 * time.Minute) // 6..10 in hour 11
		evs = append(evs, e)
	}
	batch := cdctest.Numbered(1, evs...)
	f, err := files.NewApplier(files.ApplierConfig{Path: root})
	if err != nil {
		t.Fatal(err)
	}
	crash := errors.New("crash")
	files.SetBeforeOffset(f, func() error { return crash })
	if err := f.Apply(context.Background(), batch); !errors.Is(err, crash) {
		t.Fatalf("Apply = %v, want the crash", err)
	}
	lines, _, _ := cdctest.ReadChangeLog(t, root)
	if len(lines[cdctest.HourDir("s", "a", h10.Add(time.Hour))]) == 0 || cdctest.Applied(t, f) != 0 {
		t.Fatalf("the crashed batch wrote %v, offset %d", lines, cdctest.Applied(t, f))
	}

	// Restart: a shorter batch (all in hour 10), then the rest.
	f2, err := files.NewApplier(files.ApplierConfig{Path: root})
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
	lines, _, _ = cdctest.ReadChangeLog(t, root)
	cdctest.SameEvents(t, lines, cdctest.ByHour(batch))
	if got := cdctest.Applied(t, f2); got != 10 {
		t.Errorf("Applied = %d, want 10", got)
	}
}

// TestFilesCloseHours: an hour closes when the applier is caught up and
// the hour ended more than CloseAfter ago; a new applier finds the open
// hours on disk.
func TestFilesCloseHours(t *testing.T) {
	root := t.TempDir()
	testCloseHours(t, root, func() []string {
		_, c, _ := cdctest.ReadChangeLog(t, root)
		return slices.Sorted(maps.Keys(c))
	})
}

// The change log on S3 closes its hours the same way: _SUCCESS objects.
func TestFilesCloseHoursS3(t *testing.T) {
	loc := s3test.Env(t)
	b := s3test.Client(t)
	testCloseHours(t, loc.String(), func() []string {
		var closed []string
		err := b.List(t.Context(), loc.Key+"/", func(o objstore.Object) error {
			if path.Base(o.Key) == files.SuccessFile {
				closed = append(closed, path.Dir(strings.TrimPrefix(o.Key, loc.Key+"/")))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return closed
	})
}

// testCloseHours: an hour is closed once it ended CloseAfter ago and the
// applier is caught up; an applier opened again finds the open hours.
func testCloseHours(t *testing.T, root string, closed func() []string) {
	ctx := context.Background()
	h10 := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	a := cdctest.Change(protocol.OpInsert, "s", "a", nil, protocol.Row{"id": T("1")})
	a.CommitTime = h10.Add(30 * time.Minute)
	b := cdctest.Change(protocol.OpInsert, "s", "b", nil, protocol.Row{"id": T("1")})
	b.CommitTime = h10.Add(70 * time.Minute)
	f, err := files.NewApplier(files.ApplierConfig{Path: root})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(ctx, cdctest.Numbered(1, a, b)); err != nil {
		t.Fatal(err)
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
	f2, err := files.NewApplier(files.ApplierConfig{Path: root, CloseAfter: time.Minute})
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

// TestApplierPackedRuns: messages of several events each, more events than
// a batch holds, applied to a change log by Runs that fail before and after
// a batch is durable, crash between the part files and the offset, and are
// stopped in the middle of an Apply: every event is written exactly once,
// in order (see cdctest.Packed.RunPacked), and per key in the workload's
// commit order read hour by hour, part by part (cdctest.KeyOrder); applied
// again by a new Applier, nothing changes.
func TestApplierPackedRuns(t *testing.T) {
	js := cdctest.StartJS(t)
	p := cdctest.PublishWorkload(t, js, "s", 160, 7, 5)
	crash := errors.New("crash between the parts and the offset")
	root := filepath.Join(t.TempDir(), "out")
	p.RunPacked(t, js, cdctest.PackedCase{
		Name: "files",
		Open: func(t *testing.T) connectors.Applier {
			f, err := files.NewApplier(files.ApplierConfig{Path: root})
			if err != nil {
				t.Fatal(err)
			}
			calls := 0
			files.SetBeforeOffset(f, func() error {
				if calls++; calls == 5 {
					return crash
				}
				return nil
			})
			return f
		},
		Fails: []string{"before batch 3", "after batch 5", crash.Error()},
		Check: func(t *testing.T, _ connectors.Applier, _ [][]connectors.Event) {
			lines, _, contents := cdctest.ReadChangeLog(t, root)
			cdctest.SameEvents(t, lines, cdctest.ByHour(p.Want))
			// Per key, the log read in order (hours, parts, lines)
			// follows the workload's commit positions, also across parts
			// and hours.
			if pairs, across := cdctest.KeyOrder(t, lines); pairs == 0 || across == 0 {
				t.Errorf("the order check compared %d events with their key's previous one, %d across hours: the workload does not exercise it", pairs, across)
			} else {
				t.Logf("per key order: %d events checked against their key's previous one, %d of them across hours", pairs, across)
			}
			if got := contents[files.OffsetFile]; got != fmt.Sprintf("%d\n", p.Last) {
				t.Errorf("offset file %q, want %d", got, p.Last)
			}
			// Applied again, by a new applier on the same directory:
			// nothing changes.
			f2, err := files.NewApplier(files.ApplierConfig{Path: root})
			if err != nil {
				t.Fatal(err)
			}
			if err := f2.Apply(context.Background(), p.Want); err != nil {
				t.Fatal(err)
			}
			if _, _, contents2 := cdctest.ReadChangeLog(t, root); !reflect.DeepEqual(contents2, contents) {
				t.Error("applying the events again changed the files")
			}
		},
	})
}

// The sink of a cdc_apply pipeline is {path, close_after}: the path is
// required, close_after a duration, anything else is refused naming the
// field; the kind is registered as a cdc target.
func TestApplierConfig(t *testing.T) {
	if err := (files.ApplierConfig{}).Validate(); err == nil {
		t.Error("ApplierConfig without Path accepted")
	}
	for raw, want := range map[string]time.Duration{`{"path":"/x"}`: 0, `{"path":"/x","close_after":"10m"}`: 10 * time.Minute, `{"path":"/x","close_after":"1d"}`: 24 * time.Hour} {
		c, err := files.ParseApplierConfig(json.RawMessage(raw))
		if err != nil || c.Path != "/x" || c.CloseAfter != want {
			t.Errorf("ParseApplierConfig(%s) = %+v, %v", raw, c, err)
		}
	}
	if c, err := files.ParseApplierConfig(json.RawMessage(`{"path":"s3://bucket/log","s3":{"endpoint":"http://127.0.0.1:7070"}}`)); err != nil ||
		c.Path != "s3://bucket/log" || c.S3.Endpoint != "http://127.0.0.1:7070" {
		t.Errorf("ParseApplierConfig of an S3 log = %+v, %v", c, err)
	}
	for raw, field := range map[string]string{
		`{}`:                                               "path",
		`{"path":"/x","close_after":"soon"}`:               "close_after",
		`{"path":"/x","close_after":"-1m"}`:                "close_after",
		`{"path":"/x","format":"csv"}`:                     "format",
		`{"path":"s3://B/x"}`:                              "path",
		`{"path":"/x","s3":{"region":"r"}}`:                "s3",
		`{"path":"s3://bucket/x","s3":{"access_key":"k"}}`: "s3.access_key",
	} {
		var fe *connectors.FieldError
		if err := files.ValidateApplier(json.RawMessage(raw)); !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("%s: %v, want an error on field %s", raw, err, field)
		}
	}
	reg := connectors.NewRegistry()
	files.Register(reg)
	if !reg.Has(files.Kind, connectors.RoleCDCTarget) {
		t.Error("files is not registered as a cdc target")
	}
	if a, err := files.NewApplier(files.ApplierConfig{Path: t.TempDir()}); err != nil {
		t.Fatal(err)
	} else if n, wait := a.BatchSize(); n != 10_000 || wait != time.Second {
		t.Errorf("BatchSize = %d, %s; want 10000 events within 1s", n, wait)
	}
}
