package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go/table"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/iceberg"
	"github.com/sluicehq/sluice/objstore/s3test"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// readLocalVersion reads a local files dataset as the README tells
// readers to: resolve current once, then read that directory. It returns
// the directory's name and its rows' signature.
func readLocalVersion(dataset string) (string, rowSig, error) {
	var sig rowSig
	target, err := os.Readlink(filepath.Join(dataset, "current"))
	if err != nil {
		return "", sig, err
	}
	dir := filepath.Join(dataset, target)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", sig, err
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".jsonl") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return "", sig, err
		}
		if err := linesSig(&sig, data); err != nil {
			return "", sig, err
		}
	}
	return target, sig, nil
}

// compactScenario is a files dataset under test, local or on S3.
type compactScenario struct {
	// in and out are the source directory and the dataset (paths or
	// s3:// URLs); put writes a source file.
	in, out string
	put     func(t *testing.T, rel string, data []byte)
	// read is one read of the exposed version, as a reader does it.
	read func(ctx context.Context) (string, rowSig, error)
	// files is how many small files each version has.
	files int
}

func TestCompactFilesThroughCluster(t *testing.T) {
	t.Parallel()
	in, out := t.TempDir(), t.TempDir()
	runCompactScenario(t, compactScenario{in: in, out: out, files: 500,
		put: func(t *testing.T, rel string, data []byte) {
			if err := os.WriteFile(filepath.Join(in, rel), data, 0o644); err != nil {
				t.Fatal(err)
			}
		},
		read: func(context.Context) (string, rowSig, error) { return readLocalVersion(out) },
	})
}

func TestCompactFilesThroughClusterS3(t *testing.T) {
	t.Parallel()
	loc := s3test.SharedEnv(t)
	b := s3test.Client(t)
	files := 200
	if testing.Short() {
		files = 50
	}
	runCompactScenario(t, compactScenario{in: loc.Join("in").String(), out: loc.Join("out").String(), files: files,
		put: func(t *testing.T, rel string, data []byte) { putObject(t, loc.Join("in/"+rel), data) },
		read: func(ctx context.Context) (string, rowSig, error) {
			return readS3Version(ctx, b, loc.Join("out").Key)
		},
	})
}

// runCompactScenario loads two versions of a dataset of many small files
// through the cluster (one task per source file), then compacts the
// exposed one with `sluice compact` (a compact pipeline) into a few files
// while readers read it over and over, and a worker is killed mid-rewrite:
// every read holds every row the test wrote exactly once (its own count
// and checksum), the compaction commits once. A vacuum then removes the
// directory the rewrite replaced, and rolling back to version 1 and
// forward to 2 afterwards works, each holding its rows.
func runCompactScenario(t *testing.T, sc compactScenario) {
	c := newCluster(t, clusterConfig{workers: 2, slots: 2, ackWait: 3 * time.Second})
	var want rowSig
	var total int
	for f := range sc.files {
		data, sig := bigJSONL(f*1000, 2000)
		sc.put(t, fmt.Sprintf("part-%04d.jsonl", f), data)
		want.rows += sig.rows
		want.sum += sig.sum
		total += len(data)
	}
	c.apply("events", sc.in, sc.out, 1, "")
	for v := int64(1); v <= 2; v++ {
		st := c.wait(c.run("events").RunID)
		if st.State != protocol.RunCommitted || st.Tasks != sc.files {
			t.Fatalf("load %d: %s, %d tasks (%s)", v, st.State, st.Tasks, st.Error)
		}
	}
	spec, err := pipeline.Parse(fmt.Appendf(nil, `name: events-compact
pattern: compact
dataset: {kind: files, path: %s}
compact:
  target_file_size: %d
  retention: 2s
`, sc.out, total/3+1), "events-compact.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.client.Apply(c.ctx(), spec); err != nil {
		t.Fatal(err)
	}
	dry, err := c.client.Compact(c.ctx(), protocol.CompactRequest{Pipeline: "events-compact", DryRun: true})
	if err != nil || len(dry.Groups) != 3 {
		t.Fatalf("dry run: %+v, %v", dry, err)
	}

	// Readers, all along.
	var mu sync.Mutex
	var reads, rewritten int
	var bad []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				name, sig, err := sc.read(ctx)
				cancel()
				mu.Lock()
				reads++
				switch {
				case err != nil:
					bad = append(bad, "error: "+err.Error())
				case sig != want:
					bad = append(bad, fmt.Sprintf("%s: %s, want %s", name, sig, want))
				case strings.Contains(name, "_events-compact-"):
					rewritten++
				}
				mu.Unlock()
			}
		})
	}
	// One worker rewrites, and is killed mid-rewrite; another takes over.
	last := c.workers[1]
	last.cancel()
	<-last.done
	c.workers = c.workers[:1]
	res, err := c.client.Compact(c.ctx(), protocol.CompactRequest{Pipeline: "events-compact"})
	if err != nil || len(res.Groups) != 3 {
		t.Fatalf("compact: %+v, %v", res, err)
	}
	c.killWhenBusy(0)
	c.addWorker()
	st := c.wait(res.RunID)
	for {
		mu.Lock()
		n := rewritten
		mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if st.State != protocol.RunCommitted || st.Rows != want.rows {
		t.Fatalf("compaction %s: %s, %d rows (%s)", st.RunID, st.State, st.Rows, st.Error)
	}
	c.assertRedelivered(res.RunID)
	if len(bad) > 0 {
		t.Fatalf("%d of %d reads were wrong, first: %s", len(bad), reads, bad[0])
	}
	t.Logf("%d reads, %d of the rewrite", reads, rewritten)
	name, _, err := sc.read(c.ctx())
	if err != nil || name != "v000002_"+res.RunID {
		t.Fatalf("exposed %s, %v", name, err)
	}

	// Vacuum after the retention: the directory the rewrite replaced
	// goes, the rollback window stays.
	time.Sleep(2500 * time.Millisecond)
	vac, err := c.client.Vacuum(c.ctx(), protocol.VacuumRequest{Pipeline: "events-compact"})
	if err != nil {
		t.Fatal(err)
	}
	if len(vac.Removed) != 1 || !strings.HasSuffix(vac.Removed[0].Path, "v000002") || vac.Removed[0].Files != int64(sc.files)+1 {
		t.Errorf("vacuum removed %+v", vac.Removed)
	}
	for _, to := range []int64{1, 2} {
		rb, err := c.client.Rollback(c.ctx(), protocol.RollbackRequest{Pipeline: "events", To: to})
		if err != nil || rb.Version != to {
			t.Fatalf("rollback to %d after vacuum: %+v, %v", to, rb, err)
		}
		name, sig, err := sc.read(c.ctx())
		if err != nil || sig != want {
			t.Errorf("version %d after vacuum (%s): %s, %v; want %s", to, name, sig, err, want)
		}
		if to == 2 && name != "v000002_"+res.RunID {
			t.Errorf("version 2 is read from %s, want its rewrite", name)
		}
	}
}

// An Iceberg table appended to every second by another writer while a
// compaction of it runs through the cluster (planned, then rewritten while
// appends land, then committed on top of them): at the end every row is
// in the table exactly once, the appends after the plan among them. The
// appender stops three windows after the rewrite starts, until the run
// ends, so that the rewrite's commit wins however long an attempt takes.
func TestCompactIcebergWhileAppending(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	warehouse := t.TempDir()
	cfg := iceberg.SinkConfig{Config: iceberg.Config{Table: "lake.events", Warehouse: warehouse}}
	writer, err := iceberg.NewSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	schema := &protocol.Schema{Columns: []protocol.Column{
		{Name: "id", Type: protocol.TypeInt64, NotNull: true},
		{Name: "note", Type: protocol.TypeString},
	}}
	if err := writer.CheckSchema(ctx, schema); err != nil {
		t.Fatal(err)
	}
	// appendWindow appends rows n*100 .. n*100+99 in two data files.
	var mu sync.Mutex
	appended := 0
	appendWindow := func(n int) error {
		run := fmt.Sprintf("append-%d", n)
		var outs []connectors.TaskOutput
		for half := range 2 {
			w, err := writer.OpenTask(ctx, connectors.TaskRef{RunID: run, TaskID: fmt.Sprintf("t%d", half), Attempt: 1, Schema: schema})
			if err != nil {
				return err
			}
			var raw []byte
			for id := n*100 + half*50; id < n*100+half*50+50; id++ {
				raw = fmt.Appendf(raw, "%d,\"row %d, \"\"appended\"\"\"\n", id, id)
			}
			if err := w.Write(ctx, connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: []string{"id", "note"}, Rows: 50}); err != nil {
				return err
			}
			out, err := w.Close(ctx)
			if err != nil {
				return err
			}
			outs = append(outs, out)
		}
		from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(n) * time.Hour)
		_, err := writer.Commit(ctx, connectors.CommitRequest{RunID: run, Pipeline: "appender", Mode: connectors.ModeAppend,
			Window: &connectors.Window{From: from, To: from.Add(time.Hour)}, Tasks: outs, Schema: schema})
		if err == nil {
			mu.Lock()
			appended = n + 1
			mu.Unlock()
		}
		return err
	}
	for n := range 20 {
		if err := appendWindow(n); err != nil {
			t.Fatal(err)
		}
	}

	c := newCluster(t, clusterConfig{workers: 0})
	// The appender commits every second while the rewrite's commit is
	// tried: on a loaded machine an attempt can take longer than that,
	// and lose several times before one wins (the attempts' bound is not
	// what this test is about).
	applyYAML(t, c, fmt.Sprintf(`name: events-compact
pattern: compact
dataset: {kind: iceberg, table: lake.events, warehouse: %s, commit_attempts: 50}
compact: {target_file_size: 8KiB}
`, warehouse))
	stop := make(chan struct{})
	done := make(chan error, 1)
	// upTo, when set, holds the appender before that window: a rewrite
	// whose commit attempt takes longer than a second (a loaded machine)
	// would otherwise lose to the appends for ever.
	var upTo atomic.Int64
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for n := 20; ; {
			select {
			case <-stop:
				done <- nil
				return
			case <-tick.C:
			}
			if u := upTo.Load(); u > 0 && int64(n) >= u {
				continue
			}
			if err := appendWindow(n); err != nil {
				done <- err
				return
			}
			n++
		}
	}()
	// Planned with no worker: the appends land between the plan and the
	// rewrite's commit.
	res, err := c.client.Compact(c.ctx(), protocol.CompactRequest{Pipeline: "events-compact"})
	if err != nil || len(res.Groups) < 2 {
		t.Fatalf("compact: %+v, %v", res, err)
	}
	mu.Lock()
	before := appended
	mu.Unlock()
	for {
		mu.Lock()
		n := appended
		mu.Unlock()
		if n >= before+2 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Three more windows while the rewrite runs and its commit is tried,
	// then none until it ends.
	mu.Lock()
	upTo.Store(int64(appended + 3))
	mu.Unlock()
	c.addWorker()
	st := c.wait(res.RunID)
	upTo.Store(0)
	// One more append after the commit.
	mu.Lock()
	atCommit := appended
	mu.Unlock()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		n := appended
		mu.Unlock()
		if n > atCommit {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no append after the rewrite's commit in 30s")
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("appender: %v", err)
	}
	if st.State != protocol.RunCommitted {
		t.Fatalf("compaction %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	_, tbl := readIceberg(t, filepath.Join(warehouse, "catalog.db"), warehouse, "", "lake.events", 0)
	scan := tbl.Scan()
	defer scan.Close()
	at, err := scan.ToArrowTable(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer at.Release()
	seen := map[int64]int{}
	tr := array.NewTableReader(at, 4096)
	defer tr.Release()
	for tr.Next() {
		for _, id := range tr.RecordBatch().Column(0).(*array.Int64).Int64Values() {
			seen[id]++
		}
	}
	mu.Lock()
	n := appended
	mu.Unlock()
	if len(seen) != n*100 {
		t.Errorf("the table holds %d distinct ids, want %d (every appended row)", len(seen), n*100)
	}
	for id := range int64(n * 100) {
		if seen[id] != 1 {
			t.Fatalf("id %d is in the table %d times", id, seen[id])
		}
	}
	var compaction *table.Snapshot
	for _, sn := range tbl.Metadata().Snapshots() {
		if sn.Summary != nil && sn.Summary.Properties["sluice.run"] == res.RunID {
			compaction = &sn
		}
	}
	if compaction == nil || compaction.Summary.Operation != table.OpReplace {
		t.Fatalf("no replace snapshot of %s", res.RunID)
	}
	t.Logf("%d windows appended, %d after the plan; the compaction rewrote %d groups", n, n-before, len(res.Groups))
}
