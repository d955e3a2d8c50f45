package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/protocol"
)

// landFile writes version v of the landing file name (rows rows) the way
// a producer should: under a hidden name, then renamed into place; and
// the same rows under a name of their own in ledger, which thus holds
// every version ever landed.
func landFile(t *testing.T, dir, ledger, name string, v, rows int) {
	t.Helper()
	var b []byte
	for i := range rows {
		b = fmt.Appendf(b, `{"file":%q,"version":%d,"row":%d,"note":"ünï, \"q\""}`+"\n", name, v, i)
	}
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Error(err)
		return
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Error(err)
	}
	if err := os.WriteFile(filepath.Join(ledger, fmt.Sprintf("%s.v%d.jsonl", name, v)), b, 0o644); err != nil {
		t.Error(err)
	}
}

// A landing directory receiving files while runs by arrival load it
// through the cluster: every file is loaded once, a rewritten file is
// loaded again (its new version once), and the target ends holding every
// version that landed, each once.
func TestFilesByArrival(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterConfig{workers: 2})
	land, ledger, out := t.TempDir(), t.TempDir(), filepath.Join(t.TempDir(), "out")
	y := fmt.Sprintf("name: landing\npattern: incremental\nsource: {kind: files, path: %s, format: jsonl}\nsink: {kind: files, path: %s, format: jsonl}\npartitioning: {max_files: 3}\nincremental: {by: modified}\n", land, out)
	c.applyYAML("landing", y)
	run := func() protocol.RunStatus {
		t.Helper()
		st := c.wait(c.run("landing").RunID)
		if st.State != protocol.RunCommitted {
			t.Fatalf("run %s %s: %s", st.RunID, st.State, st.Error)
		}
		return st
	}

	// A producer lands 40 files while runs go on.
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 40 {
			landFile(t, land, ledger, fmt.Sprintf("f%03d.jsonl", i), 1, 5+i%7)
			time.Sleep(15 * time.Millisecond)
		}
	})
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	runs := 0
	for loop := true; loop; runs++ {
		select {
		case <-done:
			loop = false
		default:
		}
		run()
	}
	// Two files rewritten: their new versions are loaded, once.
	landFile(t, land, ledger, "f003.jsonl", 2, 4)
	landFile(t, land, ledger, "f017.jsonl", 2, 9)
	st := run()
	if st.Tasks != 1 || st.Rows != 13 {
		t.Fatalf("the run after two rewrites: %d tasks, %d rows; want the two new versions, 13 rows", st.Tasks, st.Rows)
	}
	if st = run(); st.Tasks != 0 || st.Rows != 0 {
		t.Fatalf("a run with nothing new: %+v", st)
	}

	want, err := files.ReadChecksum(ledger, "jsonl")
	if err != nil {
		t.Fatal(err)
	}
	got, err := files.ReadChecksum(out, "jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("target: %d rows checksum %s; every landed version: %d rows checksum %s (after %d runs)", got.Rows, got, want.Rows, want, runs+2)
	}
	stat, err := c.client.Status(c.ctx(), protocol.StatusRequest{Pipeline: "landing"})
	if err != nil || stat.Pipelines[0].Watermark == "" {
		t.Fatalf("status: %+v, %v; want the manifest's watermark", stat.Pipelines, err)
	}
	t.Logf("%d runs; watermark %s", runs+2, stat.Pipelines[0].Watermark)
}
