package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// scrapeSamples returns the samples of url whose line starts with prefix,
// by the series as exposed.
func scrapeSamples(t *testing.T, url, prefix string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// sluice dev --metrics serves the coordinator's and the workers' metrics at
// one address: a run loaded through the CLI is counted with its rows; a
// taken --metrics address stops a process before it joins the cluster.
func TestDevMetricsFlag(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	if err := os.MkdirAll(in, 0o755); err != nil {
		t.Fatal(err)
	}
	const files, perFile = 3, 40
	for f := range files {
		var b strings.Builder
		for i := range perFile {
			fmt.Fprintf(&b, "{\"id\":%d}\n", f*perFile+i)
		}
		if err := os.WriteFile(filepath.Join(in, fmt.Sprintf("part-%d.jsonl", f)), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	spec := filepath.Join(dir, "p.yaml")
	y := fmt.Sprintf("name: met\npattern: full_load\nsource: {kind: files, path: %s, format: jsonl}\nsink: {kind: files, path: %s, format: jsonl}\npartitioning: {max_files: 1}\n", in, out)
	if err := os.WriteFile(spec, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	dev, _ := startDev(t, dir, "--metrics", addr)
	if o, code := sluiceIn(t, dir, "apply", "-f", spec); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, o)
	}
	if o, code := sluiceIn(t, dir, "run", "met", "--wait"); code != 0 {
		t.Fatalf("run: exit %d\n%s", code, o)
	}
	url := "http://" + addr + "/metrics"
	want := map[string]float64{
		`sluice_runs_total{outcome="committed",pipeline="met"}`:                  1,
		`sluice_run_rows_total{pipeline="met"}`:                                  files * perFile,
		`sluice_task_attempts_total{outcome="succeeded",pipeline="met"}`:         files,
		`sluice_task_rows_total{pipeline="met"}`:                                 files * perFile,
		`sluice_worker_slots{worker="dev-worker-1"}`:                             2,
		`sluice_raft_leader`:                                                     1,
		`sluice_workers`:                                                         1,
		`sluice_stream_messages{stream="SLUICE_TASKS"}`:                          0,
		`sluice_raft_commit_seconds_bucket{command="run committed",le="+Inf"}`:   1,
		`sluice_run_duration_seconds_count{outcome="committed",pipeline="met"}`:  1,
		`sluice_task_duration_seconds_count{outcome="succeeded",pipeline="met"}`: files,
		`sluice_run_task_attempts_count{pipeline="met"}`:                         files,
		`sluice_raft_leader_changes_total`:                                       1,
		`sluice_cluster_slots`:                                                   2,
		`sluice_run_bytes_total{pipeline="met"}`:                                 -1, // present
		`sluice_task_bytes_total{pipeline="met"}`:                                -1,
		`sluice_cluster_slots_busy`:                                              0,
		`sluice_worker_slots_busy{worker="dev-worker-1"}`:                        0,
		`sluice_stream_messages{stream="SLUICE_DLQ"}`:                            0,
		`sluice_runs_active{pipeline="met"}`:                                     -2, // absent: no run in flight
	}
	var got map[string]float64
	deadline := time.Now().Add(20 * time.Second)
	for {
		got = scrapeSamples(t, url, "sluice_")
		bad := []string{}
		for k, v := range want {
			g, ok := got[k]
			switch {
			case v == -1 && (!ok || g <= 0), v == -2 && ok, v >= 0 && (!ok || g != v):
				bad = append(bad, fmt.Sprintf("%s = %v (present %v), want %v", k, g, ok, v))
			}
		}
		if len(bad) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics of sluice dev:\n%s", strings.Join(bad, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The address is taken: a worker refuses it before connecting.
	w := start(t, dir, "worker", "--metrics", addr, "--nats", "nats://127.0.0.1:1")
	if code := w.wait(t, 20*time.Second); code == 0 || !strings.Contains(w.output(), "--metrics") {
		t.Fatalf("worker on a taken --metrics address: exit %d\n%s", code, w.output())
	}
	dev.cmd.Process.Signal(os.Interrupt)
	dev.wait(t, 20*time.Second)
}
