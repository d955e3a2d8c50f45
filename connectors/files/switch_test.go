package files

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// datasetRead is what one read of a whole dataset by the files source
// saw: the rows' checksum, the files it read per partition, and the rows
// it saw more than once.
type datasetRead struct {
	sum   connectors.Checksum
	files map[string]map[string]bool
	dups  int
}

// hourOf returns the change log hour a file read lies in, its rewrite's
// place under _compacted/<run>/ taken as the hour's.
func hourOf(p string) string {
	if rest, ok := strings.CutPrefix(p, compactedDir+"/"); ok {
		_, p, _ = strings.Cut(rest, "/")
	}
	i := strings.Index(p, "hour=")
	if i < 0 {
		return p
	}
	if j := strings.Index(p[i:], "/"); j >= 0 {
		return p[:i+j]
	}
	return p
}

// readDataset reads the whole dataset at root as a pipeline's files
// source does: a plan, then every planned partition.
func readDataset(ctx context.Context, root string) (datasetRead, error) {
	r := datasetRead{files: map[string]map[string]bool{}}
	src, err := NewSource(SourceConfig{Path: root, Format: "jsonl"})
	if err != nil {
		return r, err
	}
	defer src.Close()
	plan, err := src.Plan(ctx, connectors.PlanRequest{RunID: "reader"})
	if err != nil {
		return r, err
	}
	seen := map[string]bool{}
	for _, p := range plan.Partitions {
		var spec partSpec
		if err := json.Unmarshal(p.Spec, &spec); err != nil {
			return r, err
		}
		for _, f := range spec.Files {
			h := hourOf(f.Path)
			if r.files[h] == nil {
				r.files[h] = map[string]bool{}
			}
			r.files[h][f.Path] = true
		}
		err := src.Read(ctx, p, func(_ context.Context, b connectors.Batch) error {
			for _, l := range strings.Split(strings.TrimSuffix(string(b.Raw), "\n"), "\n") {
				if seen[l] {
					r.dups++
				}
				seen[l] = true
				r.sum.Add([]byte(l))
			}
			return nil
		})
		if err != nil {
			return r, err
		}
	}
	return r, nil
}

// compactedHours tells, for each hour, whether a read saw it compacted
// (one file) or as written (perHour files); an error for anything else.
func (r datasetRead) compactedHours(hours []string, perHour int) ([]bool, error) {
	var out []bool
	for _, h := range hours {
		switch n := len(r.files[h]); n {
		case 1:
			out = append(out, true)
		case perHour:
			out = append(out, false)
		default:
			return nil, fmt.Errorf("%s read from %d files, neither its %d nor one rewrite", h, n, perHour)
		}
	}
	if len(r.files) != len(hours) {
		return nil, fmt.Errorf("read %d partitions, want %d", len(r.files), len(hours))
	}
	return out, nil
}

func TestCompactSwitchReaders(t *testing.T)   { testCompactSwitch(t, false) }
func TestCompactSwitchReadersS3(t *testing.T) { testCompactSwitch(t, true) }

// testCompactSwitch compacts four closed hours of a change log in one
// run while a reader reads the whole dataset in a loop, and reads it
// again before every swap: every read sees every row once, and the hours
// all as written or all compacted, never some of each. The commit stops
// (a crash) after two swaps; the readers see all hours compacted; a
// commit repeated by another sink (a new leader) finishes the swaps; a
// vacuum after the retention removes the rewrites the manifest named
// without changing what readers see.
func testCompactSwitch(t *testing.T, s3 bool) {
	ctx := context.Background()
	s := newSink(t, s3, SinkConfig{})
	a, err := NewApplier(ApplierConfig{Path: s.cfg.Path, CloseAfter: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	const nHours, perHour = 4, 8
	h0 := time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC)
	seq := uint64(0)
	var hours []string
	for h := range nHours {
		hours = append(hours, fmt.Sprintf("public.t/date=2026-11-25/hour=%02d", 7+h))
		for i := range perHour {
			var evs []connectors.Event
			for range 5 {
				seq++
				evs = append(evs, connectors.Event{Seq: seq, ChangeEvent: protocol.ChangeEvent{Op: "insert", Schema: "public", Table: "t",
					After: protocol.Row{"id": protocol.Text(fmt.Sprint(seq))}, CommitTime: h0.Add(time.Duration(h)*time.Hour + time.Duration(i)*time.Second)}})
			}
			if err := a.Apply(ctx, evs); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := a.CloseHours(ctx, h0.Add(time.Duration(nHours+1)*time.Hour), true); err != nil {
		t.Fatal(err)
	}
	root := s.base()
	first, err := readDataset(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	want := first.sum
	if want.Rows != int64(seq) || first.dups != 0 {
		t.Fatalf("before compaction: %d rows, %d twice; want %d", want.Rows, first.dups, seq)
	}
	// check reads the dataset once: every row once, the hours all
	// compacted or none; it returns which.
	check := func(step string) (bool, error) {
		r, err := readDataset(ctx, root)
		if err != nil {
			return false, err
		}
		if r.sum != want || r.dups != 0 {
			return false, fmt.Errorf("%s: read %d rows (%d twice), checksum %s; want %d, %s", step, r.sum.Rows, r.dups, r.sum, want.Rows, want)
		}
		got, err := r.compactedHours(hours, perHour)
		if err != nil {
			return false, fmt.Errorf("%s: %w", step, err)
		}
		if slices.Contains(got, true) && slices.Contains(got, false) {
			return false, fmt.Errorf("%s: a mix of compacted and uncompacted hours: %v", step, got)
		}
		return got[0], nil
	}
	mustCheck := func(step string, compacted bool) {
		t.Helper()
		got, err := check(step)
		if err != nil {
			t.Fatal(err)
		}
		if got != compacted {
			t.Fatalf("%s: hours compacted %v, want %v", step, got, compacted)
		}
	}
	mustCheck("before compaction", false)

	settings := connectors.CompactSettings{}.WithDefaults()
	plan, err := s.PlanCompaction(ctx, connectors.CompactRequest{RunID: "c-1", Settings: settings, Now: time.Now()})
	if err != nil || len(plan.Groups) != nHours {
		t.Fatalf("plan: %d groups, %v; want one per hour", len(plan.Groups), err)
	}
	var groups []connectors.CompactedGroup
	for i, g := range plan.Groups {
		out, err := s.Rewrite(ctx, connectors.TaskRef{RunID: "c-1", TaskID: fmt.Sprintf("t%05d", i), Attempt: 1}, g)
		if err != nil {
			t.Fatalf("rewrite %s: %v", g.Key, err)
		}
		groups = append(groups, connectors.CompactedGroup{Group: g, Output: out})
	}

	// A reader in a loop for the whole compaction. A read may fail when
	// a file it planned goes before it reads it (a partition's old files
	// leave it at its swap): the source fails such a task, and it reads
	// again; what a read returns must be right.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var loopErr error
	var reads, failed, sawCompacted int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			r, err := readDataset(ctx, root)
			if err != nil {
				failed++
				time.Sleep(5 * time.Millisecond)
				continue
			}
			reads++
			got, err := func() (bool, error) {
				if r.sum != want || r.dups != 0 {
					return false, fmt.Errorf("a read during the compaction: %d rows (%d twice), checksum %s; want %d, %s", r.sum.Rows, r.dups, r.sum, want.Rows, want)
				}
				got, err := r.compactedHours(hours, perHour)
				if err != nil {
					return false, fmt.Errorf("a read during the compaction: %w", err)
				}
				if slices.Contains(got, true) && slices.Contains(got, false) {
					return false, fmt.Errorf("a read during the compaction saw a mix of compacted and uncompacted hours: %v", got)
				}
				return got[0], nil
			}()
			if err != nil {
				loopErr = err
				return
			}
			if got {
				sawCompacted++
			}
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
		t.Logf("reader loop: %d reads (%d saw the rewrites), %d failed on a file gone", reads, sawCompacted, failed)
		if loopErr != nil {
			t.Error(loopErr)
		}
	}()

	// The commit stops after swapping two hours in; before each swap
	// every hour reads compacted already.
	crash := errors.New("crash")
	swaps := 0
	s.beforeSwap = func(unit string) error {
		if _, err := check("before the swap of " + unit); err != nil {
			return err
		}
		if swaps == 2 {
			return crash
		}
		swaps++
		return nil
	}
	commit := func(s *Sink) error {
		_, err := s.CommitCompaction(ctx, connectors.CompactCommit{RunID: "c-1", Groups: groups, Settings: settings})
		return err
	}
	if err := commit(s); !errors.Is(err, crash) {
		t.Fatalf("commit: %v, want the crash", err)
	}
	// Two hours are swapped in their own place, two are not: plain
	// readers of those see their old files alone.
	var swapped []bool
	for _, h := range hours {
		id, err := unitIdentity(ctx, s.tree(), h)
		if err != nil {
			t.Fatal(err)
		}
		swapped = append(swapped, strings.Contains(id, "c-1"))
		if s3 && !strings.Contains(id, "c-1") {
			if got := dataNames(t, s, h); len(got) != perHour {
				t.Errorf("%s before its swap lists %v directly, want its %d files", h, got, perHour)
			}
			if _, runs, _ := s.tree().list(ctx, h); len(runs) != 0 {
				t.Errorf("%s before its swap holds directories %v: a prefix lister sees them", h, runs)
			}
		}
	}
	if !slices.Equal(swapped, []bool{true, true, false, false}) {
		t.Fatalf("after a crash after two swaps, the hours swapped in their place: %v", swapped)
	}
	mustCheck("after a crash in the swaps", true)
	for _, h := range hours {
		// A reader of one hour finds the switch above it.
		got, err := ReadChecksum(joinPath(root, h), "jsonl")
		if err != nil || got.Rows != 5*perHour {
			t.Fatalf("%s read alone after the crash: %d rows, %v", h, got.Rows, err)
		}
	}

	// Another sink (a new leader) repeats the commit: it finishes.
	s2, err := NewSink(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := commit(s2); err != nil {
		t.Fatal(err)
	}
	for _, h := range hours {
		id, err := unitIdentity(ctx, s.tree(), h)
		if err != nil || !strings.Contains(id, "c-1") {
			t.Fatalf("%s after the commit repeated: %q, %v", h, id, err)
		}
	}
	mustCheck("after the commit repeated", true)

	// A vacuum after the retention removes the rewrites under
	// _compacted/ (every hour holds its own), and what it replaced.
	rep, err := s2.Vacuum(ctx, connectors.VacuumRequest{Settings: connectors.CompactSettings{Retention: time.Hour}.WithDefaults(), Now: time.Now().Add(2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(rep.Removed, func(it connectors.VacuumItem) bool { return strings.HasSuffix(it.Path, compactedDir+"/c-1") }) {
		t.Errorf("vacuum kept the switch's rewrites: %+v", rep.Removed)
	}
	mustCheck("after vacuum", true)
}

// writeHours writes n closed hours of a change log through an Applier,
// each of perHour files of 5 rows, and returns them.
func writeHours(t *testing.T, s *Sink, n, perHour int) []string {
	t.Helper()
	ctx := context.Background()
	a, err := NewApplier(ApplierConfig{Path: s.cfg.Path, CloseAfter: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	h0 := time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC)
	seq := uint64(0)
	var hours []string
	for h := range n {
		hours = append(hours, fmt.Sprintf("public.t/date=2026-11-25/hour=%02d", 7+h))
		for i := range perHour {
			var evs []connectors.Event
			for range 5 {
				seq++
				evs = append(evs, connectors.Event{Seq: seq, ChangeEvent: protocol.ChangeEvent{Op: "insert", Schema: "public", Table: "t",
					After: protocol.Row{"id": protocol.Text(fmt.Sprint(seq))}, CommitTime: h0.Add(time.Duration(h)*time.Hour + time.Duration(i)*time.Second)}})
			}
			if err := a.Apply(ctx, evs); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := a.CloseHours(ctx, h0.Add(time.Duration(n+1)*time.Hour), true); err != nil {
		t.Fatal(err)
	}
	return hours
}

func TestCompactSwitchKeepsPending(t *testing.T)   { testCompactSwitchPending(t, false) }
func TestCompactSwitchKeepsPendingS3(t *testing.T) { testCompactSwitchPending(t, true) }

// testCompactSwitchPending: a compaction whose commit stopped after the
// switch and one swap (and was not repeated) is followed by another that
// rewrites only one of the two hours left waiting: readers still see all
// three hours compacted, and a vacuum keeps the first run's rewrite of
// the hour still waiting.
func testCompactSwitchPending(t *testing.T, s3 bool) {
	ctx := context.Background()
	s := newSink(t, s3, SinkConfig{})
	const perHour = 6
	hours := writeHours(t, s, 3, perHour)
	root := s.base()
	first, err := readDataset(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	check := func(step string, want []bool) {
		t.Helper()
		r, err := readDataset(ctx, root)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if r.sum != first.sum || r.dups != 0 {
			t.Fatalf("%s: read %d rows (%d twice), want %d", step, r.sum.Rows, r.dups, first.sum.Rows)
		}
		got, err := r.compactedHours(hours, perHour)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("%s: hours read compacted %v (%v), want %v", step, got, err, want)
		}
	}
	settings := connectors.CompactSettings{}.WithDefaults()
	run := func(id string, keep func(g protocol.Partition) bool, hook func(unit string) error) error {
		t.Helper()
		plan, err := s.PlanCompaction(ctx, connectors.CompactRequest{RunID: id, Settings: settings, Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		var groups []connectors.CompactedGroup
		for i, g := range plan.Groups {
			if !keep(g) {
				continue
			}
			out, err := s.Rewrite(ctx, connectors.TaskRef{RunID: id, TaskID: fmt.Sprintf("t%05d", i), Attempt: 1}, g)
			if err != nil {
				t.Fatal(err)
			}
			groups = append(groups, connectors.CompactedGroup{Group: g, Output: out})
		}
		s.beforeSwap = hook
		defer func() { s.beforeSwap = nil }()
		_, err = s.CommitCompaction(ctx, connectors.CompactCommit{RunID: id, Groups: groups, Settings: settings})
		return err
	}
	crash := errors.New("crash")
	swaps := 0
	err = run("c-1", func(protocol.Partition) bool { return true }, func(string) error {
		if swaps == 1 {
			return crash
		}
		swaps++
		return nil
	})
	if !errors.Is(err, crash) {
		t.Fatalf("commit c-1: %v, want the crash", err)
	}
	check("after c-1 stopped after one swap", []bool{true, true, true})
	// c-2 rewrites hour 1 alone; hour 2 waits for c-1's swap still.
	if err := run("c-2", func(g protocol.Partition) bool { return strings.HasPrefix(g.Key, hours[1]+" ") }, nil); err != nil {
		t.Fatal(err)
	}
	check("after c-2", []bool{true, true, true})
	rep, err := s.Vacuum(ctx, connectors.VacuumRequest{Settings: connectors.CompactSettings{Retention: time.Hour}.WithDefaults(), Now: time.Now().Add(2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range rep.Removed {
		if strings.HasSuffix(it.Path, compactedDir+"/c-1") {
			t.Errorf("vacuum removed %s, which names the rewrite of an hour waiting for its swap (%s)", it.Path, it.Why)
		}
	}
	check("after vacuum", []bool{true, true, true})
}
