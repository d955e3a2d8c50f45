package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/builtin"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/embednats"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/telemetry"
	"github.com/sluicehq/sluice/worker"
)

// cluster is an in-process Sluice cluster: one embedded NATS server with
// JetStream, three Raft coordinators on an in-memory transport, and workers.
type cluster struct {
	t       *testing.T
	url     string
	reg     *connectors.Registry
	log     *slog.Logger
	coords  []*node
	workers []*workerProc
	client  *coordinator.Client
	js      jetstream.JetStream
	cfg     clusterConfig
	// dirs are where the cluster keeps its files: JetStream's store and
	// the coordinators' data directories.
	dirs []string
	// workerMetrics are the workers' metrics (one process's), served at
	// workerMetricsURL, with clusterConfig.metrics.
	workerMetrics    *telemetry.Metrics
	workerMetricsURL string
}

type node struct {
	c *coordinator.Coordinator
	// transport is the node's Raft transport: DisconnectAll cuts the
	// node's messages to its peers.
	transport *raft.InmemTransport
	cancel    context.CancelFunc
	done      chan error
	killed    bool
	// metricsURL serves the node's metrics, with clusterConfig.metrics.
	metricsURL string
}

type workerProc struct {
	w      *worker.Worker
	cancel context.CancelFunc
	done   chan error
}

type clusterConfig struct {
	coordinators int
	workers      int
	slots        int
	ackWait      time.Duration
	// register, when set, adds connectors of the test's own to the
	// registry before anything uses it.
	register func(*connectors.Registry)
	// logs, when set, receives every log line of the cluster, at debug
	// level; tracer, when set, is the tracer provider of every process.
	logs   io.Writer
	tracer trace.TracerProvider
	// metrics gives each coordinator, and the workers together, Prometheus
	// metrics served over HTTP (metrics_test.go).
	metrics bool
	// raftTimeout, when set, is every coordinator's Raft heartbeat,
	// election and leader lease timeout (default: the coordinator's).
	raftTimeout time.Duration
}

func newCluster(t *testing.T, cfg clusterConfig) *cluster {
	t.Helper()
	if cfg.coordinators == 0 {
		cfg.coordinators = 3
	}
	if cfg.slots == 0 {
		cfg.slots = 2
	}
	if cfg.ackWait == 0 {
		cfg.ackWait = 10 * time.Second
	}
	store := t.TempDir()
	ns, err := embednats.Start(embednats.Config{StoreDir: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	level := slog.LevelWarn
	if os.Getenv("SLUICE_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	var logs io.Writer = os.Stderr
	if cfg.logs != nil {
		logs, level = cfg.logs, slog.LevelDebug
	}
	if cfg.tracer == nil {
		cfg.tracer = noop.NewTracerProvider()
	}
	c := &cluster{
		t: t, url: ns.ClientURL(), reg: connectors.NewRegistry(), cfg: cfg,
		log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level})), dirs: []string{store},
	}
	builtin.Register(c.reg)
	if cfg.register != nil {
		cfg.register(c.reg)
	}

	// Raft nodes on an in-memory transport, fully connected.
	var transports []*raft.InmemTransport
	var peers []coordinator.Peer
	for i := range cfg.coordinators {
		addr, tr := raft.NewInmemTransport(raft.ServerAddress(fmt.Sprintf("node-%d", i)))
		transports = append(transports, tr)
		peers = append(peers, coordinator.Peer{ID: fmt.Sprintf("c%d", i), Addr: string(addr)})
	}
	for i, a := range transports {
		for j, b := range transports {
			if i != j {
				a.Connect(b.LocalAddr(), b)
			}
		}
	}
	for i := range cfg.coordinators {
		nc := c.connect(fmt.Sprintf("coordinator-%d", i))
		dataDir := t.TempDir()
		c.dirs = append(c.dirs, dataDir)
		m, murl := c.newMetrics()
		co, err := coordinator.New(coordinator.Config{
			NodeID: peers[i].ID, DataDir: dataDir, Peers: peers, Bootstrap: i == 0,
			Transport: transports[i], InmemStore: true, AckWait: cfg.ackWait,
			DefaultBackoff: 100 * time.Millisecond, Metrics: m,
			HeartbeatTimeout: cfg.raftTimeout, ElectionTimeout: cfg.raftTimeout, LeaderLeaseTimeout: cfg.raftTimeout,
		}, nc, c.reg, c.log.With("node", peers[i].ID), cfg.tracer)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		n := &node{c: co, transport: transports[i], cancel: cancel, done: make(chan error, 1), metricsURL: murl}
		go func() { n.done <- co.Run(ctx) }()
		c.coords = append(c.coords, n)
	}
	t.Cleanup(func() {
		for _, w := range c.workers {
			w.cancel()
			<-w.done
		}
		for _, n := range c.coords {
			if !n.killed {
				n.cancel()
				<-n.done
			}
		}
	})
	c.client = coordinator.NewClient(c.connect("client"))
	js, err := jetstream.New(c.connect("inspector"))
	if err != nil {
		t.Fatal(err)
	}
	c.js = js
	c.workerMetrics, c.workerMetricsURL = c.newMetrics()
	for range cfg.workers {
		c.addWorker()
	}
	c.leader() // wait for an elected leader
	return c
}

func (c *cluster) connect(name string) *nats.Conn {
	c.t.Helper()
	nc, err := nats.Connect(c.url, nats.Name(name))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

func (c *cluster) addWorker() *workerProc {
	c.t.Helper()
	// Not registered for cleanup: Kill closes it, Run's drain needs it open.
	nc, err := nats.Connect(c.url, nats.Name(fmt.Sprintf("worker-%d", len(c.workers))))
	if err != nil {
		c.t.Fatal(err)
	}
	w, err := worker.New(worker.Config{ID: fmt.Sprintf("w%d", len(c.workers)), Slots: c.cfg.slots, ProgressEvery: c.cfg.ackWait / 3, Metrics: c.workerMetrics},
		nc, c.reg, c.log.With("worker", len(c.workers)), c.cfg.tracer)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &workerProc{w: w, cancel: cancel, done: make(chan error, 1)}
	go func() {
		p.done <- w.Run(ctx)
		nc.Close()
	}()
	c.workers = append(c.workers, p)
	return p
}

// leader waits for a leader among the live coordinators and returns it.
func (c *cluster) leader() *node {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range c.coords {
			if !n.killed && n.c.IsLeader() {
				return n
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatal("no coordinator became leader within 30s")
	return nil
}

func (c *cluster) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	c.t.Cleanup(cancel)
	return ctx
}

// apply stores a files-to-files pipeline.
func (c *cluster) apply(name, in, out string, maxFiles int, extra string) pipeline.Spec {
	c.t.Helper()
	y := fmt.Sprintf("name: %s\npattern: full_load\nsource:\n  kind: files\n  path: %s\n  format: jsonl\nsink:\n  kind: files\n  path: %s\n  format: jsonl\npartitioning:\n  max_files: %d\n%s",
		name, in, out, maxFiles, extra)
	s, err := pipeline.Parse([]byte(y), name+".yaml")
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.client.Apply(c.ctx(), s); err != nil {
		c.t.Fatalf("apply %s: %v", name, err)
	}
	return s
}

func (c *cluster) run(pipeline string) protocol.RunReply {
	c.t.Helper()
	res, err := c.client.Run(c.ctx(), protocol.RunRequest{Pipeline: pipeline})
	if err != nil {
		c.t.Fatalf("run %s: %v", pipeline, err)
	}
	return res
}

func (c *cluster) wait(runID string) protocol.RunStatus {
	c.t.Helper()
	st, err := c.client.WaitRun(c.ctx(), runID, 100*time.Millisecond, nil)
	if err != nil {
		c.t.Fatalf("wait for %s: %v", runID, err)
	}
	return st
}

// expectMessages waits until stream holds want messages on subject (they
// are published after the Raft entry that ends a run, so they may lag the
// run's state a little), then checks that no more arrive. The stream's
// info is asked again while it fails: on a NATS cluster being faulted a
// request may find no responders, or time out, while the meta or the
// stream leader moves.
func expectMessages(t testing.TB, js jetstream.JetStream, stream, subject string, want int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	count := func() int {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			s, err := js.Stream(ctx, stream)
			var info *jetstream.StreamInfo
			if err == nil {
				info, err = s.Info(ctx, jetstream.WithSubjectFilter(subject))
			}
			cancel()
			if err == nil {
				var n uint64
				for _, v := range info.State.Subjects {
					n += v
				}
				return int(n)
			}
			if time.Now().After(deadline) {
				t.Fatalf("info of stream %s: %v", stream, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	n := count()
	for n < want && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		n = count()
	}
	if n == want {
		time.Sleep(300 * time.Millisecond)
		n = count()
	}
	if n != want {
		t.Fatalf("%d messages on %s in %s, want %d", n, subject, stream, want)
	}
}

// writeDataset writes nfiles JSONL files of rows rows each, with distinct
// ids, and returns the directory.
func writeDataset(t *testing.T, nfiles, rows int) string {
	t.Helper()
	dir := t.TempDir()
	id := 0
	for f := range nfiles {
		var b bytes.Buffer
		for range rows {
			id++
			line, _ := json.Marshal(map[string]any{"id": id, "file": f, "name": fmt.Sprintf("row-%d-ünï", id), "amount": float64(id) / 7, "ok": id%3 == 0})
			b.Write(line)
			b.WriteByte('\n')
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("part-%04d.jsonl", f)), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// assertSameRows checks that the exposed version of the dataset at out holds
// exactly the rows of in: same count, same order-independent checksum.
func assertSameRows(t *testing.T, in, out string) connectors.Checksum {
	t.Helper()
	want, err := files.ReadChecksum(in, "jsonl")
	if err != nil {
		t.Fatal(err)
	}
	cur, err := files.Current(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := files.ReadChecksum(cur, "jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("output %s has %d rows checksum %s; source has %d rows checksum %s", cur, got.Rows, got, want.Rows, want)
	}
	assertRowsInOrder(t, in, cur)
	return got
}

// assertRowsInOrder checks, without the code under test, that the JSONL
// files under out hold exactly the rows of the JSONL files under in (every
// column compared, each row as many times as in the source) and that the
// rows of one source file keep their order within each output file.
func assertRowsInOrder(t *testing.T, in, out string) {
	t.Helper()
	// A row is its line, or its canonical JSON (keys sorted, numbers as
	// written) when the sink wrote it another way.
	type pos struct{ file, line int }
	byLine := map[string][]pos{}
	var canon map[string][]pos
	srcFiles := jsonlFiles(t, in)
	total := 0
	for fi, p := range srcFiles {
		for li, line := range jsonlLines(t, p) {
			byLine[line] = append(byLine[line], pos{fi, li})
			total++
		}
	}
	canonical := func(line string) string {
		d := json.NewDecoder(strings.NewReader(line))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			t.Fatalf("row %q: %v", line, err)
		}
		b, _ := json.Marshal(v)
		return string(b)
	}
	seen := 0
	for _, p := range jsonlFiles(t, out) {
		last := map[int]int{} // source file -> its last line seen in this output file
		for _, line := range jsonlLines(t, p) {
			key, m := line, byLine
			if canon == nil && len(byLine[line]) == 0 {
				// From here on rows are matched by their canonical form,
				// against what is left of the source.
				canon = map[string][]pos{}
				for l, ps := range byLine {
					c := canonical(l)
					canon[c] = append(canon[c], ps...)
				}
			}
			if canon != nil {
				key, m = canonical(line), canon
			}
			ps := m[key]
			if len(ps) == 0 {
				t.Fatalf("%s holds a row the source does not (or holds it more often): %s", p, line)
			}
			at := ps[0]
			m[key] = ps[1:]
			seen++
			if prev, ok := last[at.file]; ok && at.line < prev {
				t.Fatalf("%s: line %d of %s comes after its line %d: the source's order is lost", p, at.line+1, srcFiles[at.file], prev+1)
			}
			last[at.file] = at.line
		}
	}
	if seen != total {
		t.Fatalf("%s holds %d rows, the source %d", out, seen, total)
	}
}

// jsonlFiles lists the JSONL files under dir, hidden ones (staging,
// markers) left out, sorted.
func jsonlFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir && (strings.HasPrefix(d.Name(), "_") || strings.HasPrefix(d.Name(), ".")) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), ".jsonl") {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// jsonlLines returns the non-empty lines of a file.
func jsonlLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for line := range strings.SplitSeq(string(b), "\n") {
		if line = strings.TrimSuffix(line, "\r"); line != "" {
			lines = append(lines, line)
		}
	}
	return lines
}

// killWhenBusy waits until worker i runs a task, then kills it (no ack, no
// nak, no result: a crash).
func (c *cluster) killWhenBusy(i int) {
	c.t.Helper()
	victim := c.workers[i]
	deadline := time.Now().Add(time.Minute)
	for victim.w.Stats().Busy == 0 {
		if time.Now().After(deadline) {
			c.t.Fatalf("worker %d never started a task", i)
		}
		time.Sleep(time.Millisecond)
	}
	victim.w.Kill()
}

// assertRedelivered checks that some task of the run was delivered more
// than once: the kill really interrupted a task.
func (c *cluster) assertRedelivered(runID string) {
	c.t.Helper()
	full, err := c.client.GetRun(c.ctx(), runID)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, task := range full.TaskList {
		if task.Attempts > 1 {
			return
		}
	}
	if full.Attempt > 1 {
		// A leader elected meanwhile (a loaded machine) re-planned the
		// run: every task of the attempt the kill interrupted ran again
		// in the next one.
		c.t.Logf("run %s was planned again (%+v): the killed worker's task ran again in attempt %d", runID, full.Replans, full.Attempt)
		return
	}
	c.t.Fatalf("no task of %s was delivered twice; the kill interrupted nothing: %+v", runID, full.TaskList)
}
