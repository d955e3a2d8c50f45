//go:build unix

package integration

import (
	"bytes"
	"context"
	"crypto/md5"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// The process tests run a cluster as a user runs one: a 3-node NATS cluster
// from the nats-server binary, three `sluice coordinator` processes and two
// `sluice worker` processes, each its own OS process, and inject real faults
// (SIGKILL, SIGTERM) into them.

var (
	buildOnce sync.Once
	buildDir  string
	sluiceBin string
	buildErr  error

	datasetOnce sync.Once
	datasetDir  string
	datasetErr  error
)

// Every process test loads the same source dataset, written once.
const (
	datasetFiles = 16
	datasetRows  = 30000 // per file: one task reads 2.5 MB
)

// TestMain runs the tests defaultParallel at once (unless -parallel says
// otherwise), then removes the sluice binary built by the process tests.
func TestMain(m *testing.M) {
	setParallel()
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// moduleRoot walks up from the working directory to the directory of go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// binaries returns the sluice binary, built once per test binary run, and the
// nats-server binary of `make services`. Without nats-server the test is
// skipped, or fails when $CI is set. In CI (or with SLUICE_TEST_RACE set) the
// binary is built with -race, and killAll fails the test when a process
// reported a data race.
func binaries(t *testing.T) (sluice, natsServer string) {
	t.Helper()
	root := moduleRoot(t)
	natsServer = filepath.Join(root, "bin", "nats-server")
	if _, err := os.Stat(natsServer); err != nil {
		msg := fmt.Sprintf("%s is missing: run make services (%v)", natsServer, err)
		if os.Getenv("CI") != "" || os.Getenv("SLUICE_CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "sluice-process-test-")
		if buildErr != nil {
			return
		}
		sluiceBin = filepath.Join(buildDir, "sluice")
		args := []string{"build", "-o", sluiceBin}
		if raceBuild() {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/sluice")...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go %s ./cmd/sluice: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return sluiceBin, natsServer
}

// raceBuild says whether the process tests' sluice binary is built with
// the race detector: always in CI, elsewhere when SLUICE_TEST_RACE is set
// (a race build takes longer and its processes run slower).
func raceBuild() bool {
	return os.Getenv("CI") != "" || os.Getenv("SLUICE_CI") != "" || os.Getenv("SLUICE_TEST_RACE") != ""
}

// processDataset returns a fresh directory holding the shared source dataset
// of the process tests: written once by writeDataset, then hard-linked into
// each test's own directory (the tests only read it).
func processDataset(t *testing.T) string {
	t.Helper()
	datasetOnce.Do(func() {
		src := writeDataset(t, datasetFiles, datasetRows)
		datasetDir = filepath.Join(buildDir, "dataset")
		datasetErr = linkFiles(src, datasetDir)
	})
	if datasetErr != nil {
		t.Fatal(datasetErr)
	}
	dir := t.TempDir()
	if err := linkFiles(datasetDir, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// linkFiles hard-links (or copies) the files of src into dst.
func linkFiles(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		from, to := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		if err := os.Link(from, to); err != nil {
			b, rerr := os.ReadFile(from)
			if rerr != nil {
				return rerr
			}
			if err := os.WriteFile(to, b, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// freePorts returns n distinct free TCP ports on loopback. The listeners
// stay open until all are picked, so the ports differ from each other.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// proc is one OS process of the cluster, its stderr and stdout in a file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when the process has exited
	err  error         // Wait's error, valid after done
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process.
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s to %s: %v", sig, p.name, err)
	}
}

// drainTimeout is the workers' --drain-timeout.
const drainTimeout = 30 * time.Second

// procCluster is a Sluice cluster of real processes.
type procCluster struct {
	t        *testing.T
	dir      string
	natsURLs string
	procs    []*proc
	coords   map[string]*proc // by Raft node id
	workers  map[string]*proc // by worker id
	// workerArgs are added to the command line of every worker started.
	workerArgs []string
	client     *coordinator.Client
	js         jetstream.JetStream
}

func newProcCluster(t *testing.T) *procCluster {
	t.Helper()
	return newProcClusterWith(t, procOptions{})
}

// procOptions change a process cluster from the default: three
// coordinators and the workers w1 and w2, with the product's timings.
type procOptions struct {
	// workers are the ids of the workers started (default w1, w2).
	workers []string
	// coordArgs and workerArgs are added to every coordinator's and
	// worker's command line.
	coordArgs, workerArgs []string
}

func newProcClusterWith(t *testing.T, o procOptions) *procCluster {
	t.Helper()
	if len(o.workers) == 0 {
		o.workers = []string{"w1", "w2"}
	}
	sluice, natsServer := binaries(t)
	c := &procCluster{
		t: t, dir: t.TempDir(),
		coords: map[string]*proc{}, workers: map[string]*proc{},
	}
	// Cleanups run last registered first: kill every process, then dump
	// the logs of a failed test.
	t.Cleanup(c.dumpLogsOnFailure)
	t.Cleanup(c.killAll)

	// A 3-node NATS cluster with JetStream.
	ports := freePorts(t, 9)
	var urls, routes []string
	for i := range 3 {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[3+i]))
	}
	c.natsURLs = strings.Join(urls, ",")
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		store := filepath.Join(c.dir, "nats-"+name)
		// JetStream reserves each capped stream's bytes out of
		// max_file_store (by default 75% of the disk's free space): a
		// nearly full test disk would refuse Sluice's streams.
		conf := filepath.Join(c.dir, "nats-"+name+".conf")
		if err := os.WriteFile(conf, []byte("jetstream {\n  max_file_store: 1TB\n}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c.start(name, natsServer, "-c", conf, "-n", name, "-a", "127.0.0.1", "-p", fmt.Sprint(ports[i]),
			"-js", "-sd", store, "--cluster_name", "sluice",
			"--cluster", routes[i], "--routes", strings.Join(routes, ","))
	}
	nc := c.connect("process-test-client")
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	c.js = js
	c.client = coordinator.NewClient(nc)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("JetStream of the NATS cluster not ready after 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Three coordinators, a bootstrapping; two workers.
	ids := []string{"a", "b", "c"}
	var peers []string
	for i, id := range ids {
		peers = append(peers, fmt.Sprintf("%s=127.0.0.1:%d", id, ports[6+i]))
	}
	for i, id := range ids {
		args := []string{"coordinator", "--node-id", id, "--raft-addr", fmt.Sprintf("127.0.0.1:%d", ports[6+i]),
			"--raft-peers", strings.Join(peers, ","), "--data-dir", filepath.Join(c.dir, "coord-"+id),
			"--replicas", "3", "--nats", c.natsURLs, "--log-level", "debug"}
		if i == 0 {
			args = append(args, "--bootstrap")
		}
		c.coords[id] = c.start("coordinator-"+id, sluice, append(args, o.coordArgs...)...)
	}
	c.workerArgs = o.workerArgs
	for _, id := range o.workers {
		c.startWorker(id)
	}

	// Ready: a leader answers and both workers are heard from.
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	for {
		st, err := c.client.Status(ctx, protocol.StatusRequest{})
		if err == nil && st.Leader != "" && slices.Equal(heardFrom(st.Workers), slices.Sorted(slices.Values(o.workers))) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("cluster not ready within 45s: leader %q, workers %+v, err %v", st.Leader, st.Workers, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c
}

// heardFrom returns the ids of the workers of a status, sorted.
func heardFrom(hbs []protocol.Heartbeat) []string {
	var ids []string
	for _, hb := range hbs {
		ids = append(ids, hb.Worker)
	}
	slices.Sort(ids)
	return ids
}

// startWorker starts the worker process id, with 2 slots.
func (c *procCluster) startWorker(id string) *proc {
	c.t.Helper()
	sluice, _ := binaries(c.t)
	args := []string{"worker", "--id", id, "--slots", "2",
		"--drain-timeout", drainTimeout.String(), "--nats", c.natsURLs, "--log-level", "debug"}
	p := c.start("worker-"+id, sluice, append(args, c.workerArgs...)...)
	c.workers[id] = p
	return p
}

// start starts a process of the cluster with its output in a log file.
func (c *procCluster) start(name, bin string, args ...string) *proc {
	c.t.Helper()
	logPath := filepath.Join(c.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Dir = c.dir
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	c.procs = append(c.procs, p)
	return p
}

func (c *procCluster) connect(name string) *nats.Conn {
	c.t.Helper()
	var nc *nats.Conn
	var err error
	deadline := time.Now().Add(15 * time.Second)
	for {
		nc, err = nats.Connect(c.natsURLs, nats.Name(name), nats.MaxReconnects(-1))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("connect to NATS at %s: %v", c.natsURLs, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

func (c *procCluster) killAll() {
	for _, p := range c.procs {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
		}
	}
	for _, p := range c.procs {
		<-p.done
	}
	// A race-built process prints its report when it detects a race and
	// goes on; the report is in its log.
	for _, p := range c.procs {
		b, err := os.ReadFile(p.log)
		if err == nil && bytes.Contains(b, []byte("WARNING: DATA RACE")) {
			c.t.Errorf("%s reported a data race (log %s):\n%s", p.name, p.log, raceReport(b))
		}
	}
}

// raceReport returns the first race report in a process's output.
func raceReport(b []byte) string {
	b = b[bytes.Index(b, []byte("WARNING: DATA RACE")):]
	if j := bytes.Index(b, []byte("\n==================")); j >= 0 {
		b = b[:j]
	}
	return string(b)
}

func (c *procCluster) dumpLogsOnFailure() {
	if !c.t.Failed() {
		return
	}
	for _, p := range c.procs {
		c.t.Logf("---- %s (%s) last lines of %s ----\n%s", p.name, p.cmd.ProcessState, p.log, tail(p.log, 40))
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (c *procCluster) ctx(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	c.t.Cleanup(cancel)
	return ctx
}

// apply stores a files-to-files full load from in to out, one task per
// maxFiles files.
func (c *procCluster) apply(name, in, out string, maxFiles int) {
	c.t.Helper()
	y := fmt.Sprintf("name: %s\npattern: full_load\nsource:\n  kind: files\n  path: %s\n  format: jsonl\nsink:\n  kind: files\n  path: %s\n  format: jsonl\npartitioning:\n  max_files: %d\n",
		name, in, out, maxFiles)
	s, err := pipeline.Parse([]byte(y), name+".yaml")
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.client.Apply(c.ctx(30*time.Second), s); err != nil {
		c.t.Fatalf("apply %s: %v", name, err)
	}
}

func (c *procCluster) run(name string) protocol.RunReply {
	c.t.Helper()
	res, err := c.client.Run(c.ctx(30*time.Second), protocol.RunRequest{Pipeline: name})
	if err != nil {
		c.t.Fatalf("run %s: %v", name, err)
	}
	return res
}

func (c *procCluster) wait(runID string, d time.Duration) protocol.RunStatus {
	c.t.Helper()
	st, err := c.client.WaitRun(c.ctx(d), runID, 100*time.Millisecond, nil)
	if err != nil {
		c.t.Fatalf("wait for %s: %v (last: %s, %d/%d tasks done)", runID, err, st.State, st.TasksDone, st.Tasks)
	}
	return st
}

// inFlight returns the tasks of run that worker p has started and not
// finished, from its log: "task started" (debug) and "task done" lines.
// The log is written unbuffered, so it is exact up to a few microseconds,
// and still exact after a SIGKILL.
func inFlight(t *testing.T, p *proc, runID string) []string {
	t.Helper()
	running := map[string]bool{}
	for _, line := range logLines(t, p, "run="+runID+" ") {
		switch {
		case strings.Contains(line, `msg="task started"`):
			running[logField(line, "task")] = true
		case strings.Contains(line, `msg="task done"`), strings.Contains(line, `msg="task failed`):
			delete(running, logField(line, "task"))
		}
	}
	var out []string
	for task := range running {
		out = append(out, task)
	}
	slices.Sort(out)
	return out
}

// busyWorker waits until a worker runs a task of run and returns its id and
// the tasks it runs. The workers' heartbeats (every 2s) are too coarse for
// tasks of about 100ms, so it watches their logs, every few milliseconds.
func (c *procCluster) busyWorker(runID string, d time.Duration) (string, []string) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	ids := slices.Sorted(maps.Keys(c.workers))
	for time.Now().Before(deadline) {
		for _, id := range ids {
			if tasks := inFlight(c.t, c.workers[id], runID); len(tasks) > 0 {
				return id, tasks
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	c.t.Fatalf("no worker started a task of %s within %v", runID, d)
	return "", nil
}

// logLines returns the complete lines of p's log that contain every one of
// words; a last line still being written is left out.
func logLines(t *testing.T, p *proc, words ...string) []string {
	t.Helper()
	b, err := os.ReadFile(p.log)
	if err != nil {
		t.Fatal(err)
	}
	b = b[:bytes.LastIndexByte(b, '\n')+1]
	var out []string
	for line := range bytes.Lines(b) {
		ok := true
		for _, w := range words {
			if !bytes.Contains(line, []byte(w)) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, string(bytes.TrimSuffix(line, []byte("\n"))))
		}
	}
	return out
}

// logField returns the value of key=value in a text slog line.
func logField(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	v := line[i+len(key)+2:]
	if j := strings.IndexByte(v, ' '); j >= 0 {
		v = v[:j]
	}
	return strings.Trim(v, `"`)
}

// A worker process killed with SIGKILL in the middle of a task: JetStream
// redelivers the task after AckWait (30s by default) to the other worker,
// and the committed output holds every source row exactly once.
func TestProcessWorkerKill9MidTask(t *testing.T) {
	t.Parallel()
	c := newProcCluster(t)
	in := processDataset(t)
	out := t.TempDir()
	c.apply("kill9", in, out, 1)
	res := c.run("kill9")

	id, _ := c.busyWorker(res.RunID, 30*time.Second)
	victim := c.workers[id]
	victim.signal(t, syscall.SIGKILL)
	killed := time.Now()
	<-victim.done
	// The log is complete up to the kill: what it started and did not
	// finish was in flight.
	interrupted := inFlight(t, victim, res.RunID)
	t.Logf("killed %s with SIGKILL with tasks %v in flight", id, interrupted)
	if len(interrupted) == 0 {
		t.Fatalf("%s had finished its tasks when it was killed; the test interrupted nothing", id)
	}

	st := c.wait(res.RunID, 75*time.Second)
	t.Logf("run %s %v after the kill", st.State, time.Since(killed).Round(time.Millisecond))
	if st.State != protocol.RunCommitted {
		t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	assertSameRows(t, in, out)
	// More than the workers' TTL (10s) has passed: status no longer lists it.
	if cs, err := c.client.Status(c.ctx(10*time.Second), protocol.StatusRequest{}); err != nil {
		t.Error(err)
	} else if slices.ContainsFunc(cs.Workers, func(hb protocol.Heartbeat) bool { return hb.Worker == id }) {
		t.Errorf("status still lists the killed worker %s %v after the kill: %+v", id, time.Since(killed).Round(time.Second), cs.Workers)
	}
	full, err := c.client.GetRun(c.ctx(10*time.Second), res.RunID)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]protocol.TaskStatus{}
	redelivered := 0
	for _, task := range full.TaskList {
		byID[task.TaskID] = task
		if task.Attempts > 1 {
			redelivered++
		}
	}
	if redelivered == 0 {
		t.Errorf("no task was delivered twice; the kill did not interrupt a task")
	}
	// A task killed between publishing its result and logging "task done"
	// counts as done by the victim; at least one was cut short mid-work.
	rerun := 0
	for _, tid := range interrupted {
		task := byID[tid]
		t.Logf("interrupted task %s: %s by %s on attempt %d", tid, task.State, task.Worker, task.Attempts)
		if task.State == protocol.TaskSucceeded && task.Worker != id && task.Attempts > 1 {
			rerun++
		}
	}
	if rerun == 0 {
		t.Errorf("none of the interrupted tasks %v was run again by another worker", interrupted)
	}
	if t.Failed() {
		t.Logf("task list: %+v", full.TaskList)
	}
}

// The coordinator process that leads Raft killed with SIGKILL mid-run: another
// coordinator takes over, continues the run, and the run commits exactly
// once.
func TestProcessLeaderKill9MidRun(t *testing.T) {
	t.Parallel()
	c := newProcCluster(t)
	in := processDataset(t)
	out := t.TempDir()
	c.apply("failover", in, out, 1)
	res := c.run("failover")

	st0, err := c.client.Status(c.ctx(10*time.Second), protocol.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	old := c.coords[st0.Leader]
	if old == nil {
		t.Fatalf("leader %q is not one of the coordinators", st0.Leader)
	}

	// Wait until the run is under way but not finished.
	ctx := c.ctx(60 * time.Second)
	for {
		st, err := c.client.GetRun(ctx, res.RunID)
		if err == nil && st.TasksDone >= 2 {
			if st.TasksDone == st.Tasks {
				t.Fatal("run finished before the leader could be killed; make the dataset larger")
			}
			t.Logf("killing leader %s at %d/%d tasks done", st0.Leader, st.TasksDone, st.Tasks)
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("run %s made no progress: %v", res.RunID, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	old.signal(t, syscall.SIGKILL)
	killed := time.Now()
	<-old.done

	// Each poll is bounded to 250ms, so that neither the client's retry
	// backoff nor a request lost while the old leader's subscription is
	// withdrawn inflates the figure.
	var next string
	for {
		pctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
		st, err := c.client.Status(pctx, protocol.StatusRequest{})
		cancel()
		if err == nil && st.Leader != "" && st.Leader != st0.Leader {
			next = st.Leader
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no other leader answered within 60s: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("leader %s killed with SIGKILL; %s answered as the new leader %v later",
		st0.Leader, next, time.Since(killed).Round(time.Millisecond))

	st := c.wait(res.RunID, 60*time.Second)
	if st.State != protocol.RunCommitted {
		t.Fatalf("run %s after failover: %s (%s)", st.RunID, st.State, st.Error)
	}
	if st.Version != 1 {
		t.Errorf("dataset version %d, want 1: the run committed more than once", st.Version)
	}
	versions, _ := filepath.Glob(filepath.Join(out, "v*"))
	if len(versions) != 1 {
		t.Errorf("versions on disk %v, want exactly one", versions)
	}
	assertSameRows(t, in, out)
	expectMessages(t, c.js, protocol.StreamEvents, protocol.RunEventSubject("failover", "committed"), 1)
}

// A worker process sent SIGTERM with tasks in flight finishes them, reports
// them and exits 0 within its drain timeout; nothing it started runs twice.
func TestProcessWorkerSIGTERMDrains(t *testing.T) {
	t.Parallel()
	c := newProcCluster(t)
	in := processDataset(t)
	out := t.TempDir()
	c.apply("drain", in, out, 1)
	res := c.run("drain")

	id, before := c.busyWorker(res.RunID, 30*time.Second)
	victim := c.workers[id]
	victim.signal(t, syscall.SIGTERM)
	termed := time.Now()
	// In flight at the signal: what it had started and not finished just
	// before, and just after.
	draining := slices.Compact(slices.Sorted(slices.Values(slices.Concat(before, inFlight(t, victim, res.RunID)))))
	select {
	case <-victim.done:
	case <-time.After(drainTimeout + 10*time.Second):
		t.Fatalf("%s still running %v after SIGTERM (drain timeout %v)", id, time.Since(termed).Round(time.Millisecond), drainTimeout)
	}
	took := time.Since(termed)
	t.Logf("%s exited %v after SIGTERM (%v); tasks %v were in flight", id, took.Round(time.Millisecond), victim.cmd.ProcessState, draining)
	if victim.err != nil {
		t.Errorf("%s after SIGTERM: %v, want exit status 0", id, victim.err)
	}
	if took > drainTimeout {
		t.Errorf("%s took %v to stop, more than its drain timeout %v", id, took, drainTimeout)
	}
	// The worker's own word that it had tasks in flight when the signal came.
	if lines := logLines(t, victim, `msg="draining tasks"`); len(lines) == 0 {
		t.Fatalf("%s logged no 'draining tasks': its tasks had finished before SIGTERM, nothing was drained", id)
	} else {
		t.Logf("%s: %s", id, lines[0])
	}

	st := c.wait(res.RunID, 60*time.Second)
	if st.State != protocol.RunCommitted {
		t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	assertSameRows(t, in, out)

	if lines := logLines(t, victim, "interrupted by shutdown"); len(lines) > 0 {
		t.Errorf("%s handed back tasks instead of finishing them: %q", id, lines)
	}
	if left := inFlight(t, victim, res.RunID); len(left) > 0 {
		t.Errorf("%s exited without finishing tasks %v", id, left)
	}
	full, err := c.client.GetRun(c.ctx(10*time.Second), res.RunID)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]protocol.TaskStatus{}
	for _, task := range full.TaskList {
		byID[task.TaskID] = task
	}
	// The tasks in flight at SIGTERM, and every task it logged as done,
	// are its own, done on their first attempt.
	mine := map[string]bool{}
	for _, tid := range draining {
		mine[tid] = true
	}
	for _, line := range logLines(t, victim, `msg="task done"`, "run="+res.RunID+" ") {
		mine[logField(line, "task")] = true
	}
	for _, tid := range slices.Sorted(maps.Keys(mine)) {
		task, ok := byID[tid]
		switch {
		case !ok:
			t.Errorf("task %s of %s's log is not in the run's task list", tid, id)
		case task.State != protocol.TaskSucceeded || task.Worker != id || task.Attempts != 1:
			t.Errorf("task %s: %s by %q on attempt %d; want succeeded by %s on attempt 1 (it drained rather than abandoned it)",
				tid, task.State, task.Worker, task.Attempts, id)
		}
	}
	if t.Failed() {
		t.Logf("task list: %+v", full.TaskList)
	}
}

// The coordinator process that leads Raft killed with SIGKILL in the middle
// of two PostgreSQL full loads, into PostgreSQL and into CSV files: the
// snapshot the runs were planned on dies with it, the next leader plans
// each run again as attempt 2 on a fresh snapshot (rows inserted meanwhile
// are in it), and each run commits exactly once, equal to the source. The
// workers are frozen (SIGSTOP) once the first run has a task done, so that
// the kill lands mid-run however fast the machine, and thawed right after
// it: their tasks of attempt 1 finish late or find the snapshot gone.
func TestProcessLeaderKill9ReplansPostgresRuns(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	src, dst := schema+".orders", schema+".orders_copy"
	createOrders(t, conn, src, 40000)
	c := newProcCluster(t)
	out := t.TempDir()
	for name, sink := range map[string]string{
		"pgpg":    fmt.Sprintf("  kind: postgres\n  dsn: %s\n  table: %s", dsn, dst),
		"pgfiles": fmt.Sprintf("  kind: files\n  path: %s\n  format: csv", out),
	} {
		y := fmt.Sprintf("name: %s\npattern: full_load\nsource:\n  kind: postgres\n  dsn: %s\n  table: %s\nsink:\n%s\npartitioning:\n  target_rows: 2500\n", name, dsn, src, sink)
		s, err := pipeline.Parse([]byte(y), name+".yaml")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.client.Apply(c.ctx(30*time.Second), s); err != nil {
			t.Fatalf("apply %s: %v", name, err)
		}
	}
	runs := []string{c.run("pgpg").RunID, c.run("pgfiles").RunID}

	// The workers take the tasks in the order they were published: the
	// first run's, then the second's.
	ctx := c.ctx(60 * time.Second)
	for {
		st, err := c.client.GetRun(ctx, runs[0])
		if err == nil && st.TasksDone >= 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("run %s made no progress: %v", runs[0], err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	for _, w := range c.workers {
		w.signal(t, syscall.SIGSTOP)
	}
	for _, id := range runs {
		st, err := c.client.GetRun(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if st.TasksDone == st.Tasks {
			t.Fatalf("run %s finished before the leader could be killed; make the table larger", id)
		}
		t.Logf("run %s: %d/%d tasks done when the workers froze", id, st.TasksDone, st.Tasks)
	}
	addOrders(t, conn, src, 40001, 41000)

	st0, err := c.client.Status(ctx, protocol.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	old := c.coords[st0.Leader]
	old.signal(t, syscall.SIGKILL)
	<-old.done
	for _, w := range c.workers {
		w.signal(t, syscall.SIGCONT)
	}
	t.Logf("leader %s killed with SIGKILL mid-run", st0.Leader)

	for _, id := range runs {
		c.wait(id, 90*time.Second)
		st, err := c.client.GetRun(c.ctx(10*time.Second), id)
		if err != nil {
			t.Fatal(err)
		}
		checkReplanned(t, st, "")
		t.Logf("run %s: attempt 1 given up: %s", id, st.Replans[0].Reason)
		if st.Rows != 41000 {
			t.Errorf("run %s wrote %d rows, want the fresh snapshot's 41000", id, st.Rows)
		}
		// What `sluice status --run` shows.
		sluice, _ := binaries(t)
		view, err := exec.Command(sluice, "status", "--run", id, "--nats", c.natsURLs).CombinedOutput()
		if err != nil {
			t.Fatalf("sluice status --run %s: %v\n%s", id, err, view)
		}
		if !strings.Contains(string(view), "attempt: 2, planned again") || !strings.Contains(string(view), "attempt 1 given up at ") {
			t.Errorf("sluice status --run %s does not show the attempts:\n%s", id, view)
		}
		expectMessages(t, c.js, protocol.StreamEvents, protocol.RunEventSubject(st.Pipeline, "committed"), 1)
	}
	if got, want := rowsMD5(t, conn, dst), rowsMD5(t, conn, src); got != want {
		t.Errorf("PostgreSQL target %s, source %s", got, want)
	}
	if got, want := csvLinesMD5(t, filepath.Join(out, "current")), sourceCSVMD5(t, conn, src); got != want {
		t.Errorf("CSV files %s, source %s", got, want)
	}
	if versions, _ := filepath.Glob(filepath.Join(out, "v*")); len(versions) != 1 {
		t.Errorf("versions on disk %v, want exactly one", versions)
	}
}

// csvLinesMD5 is the count and md5 of the sorted data lines of the CSV
// files in dir (each file's header line left out; the rows hold no line
// breaks).
func csvLinesMD5(t *testing.T, dir string) string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.csv"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("CSV files in %s: %v %v", dir, paths, err)
	}
	var lines []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		ls := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if ls[0] != "id,name,amount" {
			t.Fatalf("%s: header %q", p, ls[0])
		}
		lines = append(lines, ls[1:]...)
	}
	return linesMD5(lines)
}

// sourceCSVMD5 is csvLinesMD5 of table's rows as PostgreSQL writes them
// in CSV.
func sourceCSVMD5(t *testing.T, conn *pgx.Conn, table string) string {
	t.Helper()
	var b bytes.Buffer
	if _, err := conn.PgConn().CopyTo(context.Background(), &b, "COPY "+table+" TO STDOUT WITH (FORMAT csv)"); err != nil {
		t.Fatal(err)
	}
	return linesMD5(strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n"))
}

func linesMD5(lines []string) string {
	slices.Sort(lines)
	return fmt.Sprintf("%d lines, md5 %x", len(lines), md5.Sum([]byte(strings.Join(lines, "\n"))))
}
