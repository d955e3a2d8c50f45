package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// hourlySource lays out JSONL files as <root>/date=YYYY-MM-DD/hour=HH/.
type hourlySource struct {
	t     *testing.T
	root  string
	start time.Time
	next  int // next row id
}

func (s *hourlySource) hour(h int) time.Time { return s.start.Add(time.Duration(h) * time.Hour) }

func (s *hourlySource) dir(h int) string {
	at := s.hour(h)
	return filepath.Join(s.root, "date="+at.Format("2006-01-02"), "hour="+at.Format("15"))
}

func (s *hourlySource) window(h int) connectors.Window {
	return connectors.Window{From: s.hour(h), To: s.hour(h + 1)}
}

// write adds a file of rows rows to hour h's partition, written to a
// hidden name and renamed, as a producer would.
func (s *hourlySource) write(h int, name string, rows int) {
	s.t.Helper()
	var b bytes.Buffer
	for range rows {
		s.next++
		line, _ := json.Marshal(map[string]any{"id": s.next, "hour": h, "name": fmt.Sprintf("row-%d-ünï", s.next), "amount": float64(s.next) / 7})
		b.Write(line)
		b.WriteByte('\n')
	}
	dir := s.dir(h)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		s.t.Fatal(err)
	}
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, b.Bytes(), 0o644); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		s.t.Fatal(err)
	}
}

// done writes hour h's _SUCCESS.
func (s *hourlySource) done(h int) {
	s.t.Helper()
	if err := os.WriteFile(filepath.Join(s.dir(h), files.SuccessFile), nil, 0o644); err != nil {
		s.t.Fatal(err)
	}
}

func checksumOf(t *testing.T, dir string) connectors.Checksum {
	t.Helper()
	sum, err := files.ReadChecksum(dir, "jsonl")
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// applyPartitioned stores an hourly partition-based pipeline from in to
// out; source and incremental add lines to those sections.
func applyPartitioned(t *testing.T, c *cluster, name, in, out string, start time.Time, source, incremental string) {
	t.Helper()
	y := fmt.Sprintf(`name: %s
pattern: incremental
source:
  kind: files
  path: %s
  format: jsonl
  layout: "date={date}/hour={hour}"
%s
sink: {kind: files, path: %s, format: jsonl}
partitioning:
  max_files: 1
incremental:
  window: 1h
  start: %s
  lag: 0s
  ready_check: 100ms
%s`, name, in, source, out, start.Format(time.RFC3339), incremental)
	s, err := pipeline.Load([]byte(y), name+".yaml", c.reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.client.Apply(c.ctx(), s); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) taskStreamSeq() uint64 {
	c.t.Helper()
	s, err := c.js.Stream(c.ctx(), protocol.StreamTasks)
	if err != nil {
		c.t.Fatal(err)
	}
	info, err := s.Info(c.ctx())
	if err != nil {
		c.t.Fatal(err)
	}
	return info.State.LastSeq
}

// Hourly partitions written progressively: the runs of the first two
// hours load them; the run of the third waits on the coordinator while
// its partition has no _SUCCESS (no task published, the task stream's
// sequence does not move, status shows it waiting for the partition),
// even as more files land in it, and loads exactly that hour once the
// marker appears. The window directories of the sink then hold exactly
// the source rows, and a backfill replacing all three hours keeps them
// exact.
func TestPartitionedIncrementalWaitsForReadyPartition(t *testing.T) {
	t.Parallel()
	src := &hourlySource{t: t, root: filepath.Join(t.TempDir(), "events"), start: time.Now().UTC().Truncate(time.Hour).Add(-72 * time.Hour)}
	out := filepath.Join(t.TempDir(), "out")
	src.write(0, "part-a.jsonl", 70)
	src.write(0, "part-b.jsonl", 50)
	src.done(0)
	src.write(1, "part-a.jsonl", 80)
	src.done(1)
	src.write(2, "part-a.jsonl", 40) // still being written

	c := newCluster(t, clusterConfig{workers: 1, slots: 2})
	applyPartitioned(t, c, "ev", src.root, out, src.start, "", "")

	for h, want := range []int64{120, 80} {
		res := c.run("ev")
		if res.Window == nil || *res.Window != src.window(h) || res.Tasks == 0 || res.WaitingFor != "" {
			t.Fatalf("run of hour %d: %+v, want window %s planned at once", h, res, src.window(h))
		}
		st := c.wait(res.RunID)
		if st.State != protocol.RunCommitted || st.Rows != want {
			t.Fatalf("run %s of hour %d: %s, %d rows, want %d (%s)", st.RunID, h, st.State, st.Rows, want, st.Error)
		}
		if got := checksumOf(t, filepath.Join(out, files.WindowDir(src.window(h)))); got != checksumOf(t, src.dir(h)) {
			t.Fatalf("window of hour %d holds %d rows %s; its partition %d rows %s", h, got.Rows, got, checksumOf(t, src.dir(h)).Rows, checksumOf(t, src.dir(h)))
		}
	}

	seq := c.taskStreamSeq()
	res := c.run("ev")
	if res.WaitingFor != src.dir(2) || res.Tasks != 0 || res.Window == nil || *res.Window != src.window(2) {
		t.Fatalf("run of hour 2 = %+v; want it waiting for %s with no task", res, src.dir(2))
	}
	waiting := func(d time.Duration) {
		t.Helper()
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			st, err := c.client.GetRun(c.ctx(), res.RunID)
			if err != nil {
				t.Fatal(err)
			}
			if st.State != protocol.RunWaiting || st.WaitingFor != src.dir(2) || st.WaitingSince.IsZero() || st.Tasks != 0 {
				t.Fatalf("run %s: %s, waiting for %q since %v, %d tasks; want waiting for %s with no task", st.RunID, st.State, st.WaitingFor, st.WaitingSince, st.Tasks, src.dir(2))
			}
			if got := c.taskStreamSeq(); got != seq {
				t.Fatalf("task stream moved from sequence %d to %d while the run waits: a task was published", seq, got)
			}
		}
		status, err := c.client.Status(c.ctx(), protocol.StatusRequest{Pipeline: "ev"})
		if err != nil {
			t.Fatal(err)
		}
		if len(status.Runs) == 0 || status.Runs[0].RunID != res.RunID || status.Runs[0].State != protocol.RunWaiting || status.Runs[0].WaitingFor != src.dir(2) {
			t.Fatalf("status runs %+v; want %s first, waiting for %s", status.Runs, res.RunID, src.dir(2))
		}
		for _, w := range status.Workers {
			if w.Busy != 0 {
				t.Fatalf("worker %s has %d busy slots while the only run waits", w.Worker, w.Busy)
			}
		}
	}
	waiting(time.Second)
	src.write(2, "part-b.jsonl", 25) // more data lands: still not ready
	waiting(600 * time.Millisecond)
	// A new leader goes on waiting from the FSM: same partition, same
	// start of the wait, still no task.
	old := c.leader()
	before, err := c.client.GetRun(c.ctx(), res.RunID)
	if err != nil {
		t.Fatal(err)
	}
	old.c.Kill()
	old.killed = true
	if c.leader() == old {
		t.Fatal("the killed node is still leader")
	}
	waiting(600 * time.Millisecond)
	if after, err := c.client.GetRun(c.ctx(), res.RunID); err != nil || !after.WaitingSince.Equal(before.WaitingSince) {
		t.Fatalf("after the leader change the run waits since %v (%v), before since %v", after.WaitingSince, err, before.WaitingSince)
	}
	if wm := watermark(t, c, "ev"); wm != src.hour(2).Format(time.RFC3339) {
		t.Fatalf("watermark %q while hour 2 waits, want %s", wm, src.hour(2).Format(time.RFC3339))
	}
	src.done(2)
	st := c.wait(res.RunID)
	if st.State != protocol.RunCommitted || st.Rows != 65 || st.Tasks != 2 {
		t.Fatalf("run %s of hour 2: %s, %d rows in %d tasks, want 65 in 2 (%s)", st.RunID, st.State, st.Rows, st.Tasks, st.Error)
	}
	if wm := watermark(t, c, "ev"); wm != src.hour(3).Format(time.RFC3339) {
		t.Fatalf("watermark %q after hour 2, want %s", wm, src.hour(3).Format(time.RFC3339))
	}
	// The next hour has no partition at all yet: its run waits too.
	if next := c.run("ev"); next.WaitingFor != src.dir(3) {
		t.Fatalf("run of hour 3 = %+v, want waiting for %s", next, src.dir(3))
	}

	exact := func(what string) {
		t.Helper()
		var got connectors.Checksum
		for h := range 3 {
			w := checksumOf(t, filepath.Join(out, files.WindowDir(src.window(h))))
			if p := checksumOf(t, src.dir(h)); w != p {
				t.Fatalf("%s: window of hour %d holds %d rows %s; its partition %d rows %s", what, h, w.Rows, w, p.Rows, p)
			}
			got.Merge(w)
		}
		want := checksumOf(t, src.root)
		if got != want || want.Rows != 265 {
			t.Fatalf("%s: the sink's windows hold %d rows %s; the source %d rows %s", what, got.Rows, got, want.Rows, want)
		}
		entries, err := os.ReadDir(out)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), "_") && !strings.HasPrefix(e.Name(), ".") {
				names = append(names, e.Name())
			}
		}
		if len(names) != 3 {
			t.Fatalf("%s: sink holds %v, want the 3 window directories", what, names)
		}
	}
	exact("three live runs")

	// A backfill over the three partitions, replacing them: each hour is
	// loaded again and replaces its window, never doubles it.
	bf, err := c.client.Backfill(c.ctx(), protocol.BackfillRequest{Pipeline: "ev", From: src.hour(0), To: src.hour(3), Concurrency: 2, Replace: true})
	if err != nil {
		t.Fatal(err)
	}
	bf, err = c.client.WaitBackfill(c.ctx(), bf.ID, 100*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bf.Committed != 3 || bf.Rows != 265 {
		t.Fatalf("backfill %s: %d of %d windows committed, %d rows: %+v", bf.ID, bf.Committed, bf.Total, bf.Rows, bf.Windows)
	}
	exact("backfill --replace")
	// A backfill range that cuts a partition is refused.
	if _, err := c.client.Backfill(c.ctx(), protocol.BackfillRequest{Pipeline: "ev", From: src.hour(0).Add(30 * time.Minute), To: src.hour(2)}); err == nil {
		t.Fatal("a backfill from the middle of a partition was accepted")
	}
}

// Under the next-partition convention an hour is ready once the next hour
// exists. A run whose partition stays not ready fails after ready_timeout
// with an error naming the partition, and leaves the watermark: the next
// run loads that hour once it is ready.
func TestPartitionedReadyTimeoutAndNextPartition(t *testing.T) {
	t.Parallel()
	src := &hourlySource{t: t, root: filepath.Join(t.TempDir(), "events"), start: time.Now().UTC().Truncate(time.Hour).Add(-48 * time.Hour)}
	out := filepath.Join(t.TempDir(), "out")
	src.write(0, "part-a.jsonl", 30)
	src.write(1, "part-a.jsonl", 20)

	c := newCluster(t, clusterConfig{workers: 1})
	applyPartitioned(t, c, "nx", src.root, out, src.start, "  ready: next_partition", "  ready_timeout: 1s\n")

	// Hour 0: no _SUCCESS, but hour 1 exists.
	res := c.run("nx")
	if st := c.wait(res.RunID); st.State != protocol.RunCommitted || st.Rows != 30 {
		t.Fatalf("run %s of hour 0: %s, %d rows (%s)", st.RunID, st.State, st.Rows, st.Error)
	}
	// Hour 1: nothing after it.
	began := time.Now()
	res = c.run("nx")
	if res.WaitingFor != src.dir(1) {
		t.Fatalf("run of hour 1 = %+v, want waiting for %s", res, src.dir(1))
	}
	st := c.wait(res.RunID)
	if st.State != protocol.RunFailed || !strings.Contains(st.Error, src.dir(1)) || !strings.Contains(st.Error, "ready_timeout") {
		t.Fatalf("run %s: %s (%s); want failed naming ready_timeout and %s", st.RunID, st.State, st.Error, src.dir(1))
	}
	if d := time.Since(began); d < time.Second {
		t.Fatalf("run failed after %s, before its ready timeout of 1s", d)
	}
	if wm := watermark(t, c, "nx"); wm != src.hour(1).Format(time.RFC3339) {
		t.Fatalf("watermark %q after the timeout, want %s", wm, src.hour(1).Format(time.RFC3339))
	}
	// Hour 2 appears: the next run loads hour 1.
	src.write(2, "part-a.jsonl", 5)
	res = c.run("nx")
	if st := c.wait(res.RunID); st.State != protocol.RunCommitted || st.Rows != 20 || *st.Window != src.window(1) {
		t.Fatalf("run %s: %s, %d rows, window %v (%s)", st.RunID, st.State, st.Rows, st.Window, st.Error)
	}
	for h := range 2 {
		if w, p := checksumOf(t, filepath.Join(out, files.WindowDir(src.window(h)))), checksumOf(t, src.dir(h)); w != p {
			t.Fatalf("window of hour %d: %d rows %s; partition %d rows %s", h, w.Rows, w, p.Rows, p)
		}
	}
}
