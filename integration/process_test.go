package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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
)

// TestMain removes the sluice binary built by the process tests.
func TestMain(m *testing.M) {
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
// skipped, or fails when $CI is set.
func binaries(t *testing.T) (sluice, natsServer string) {
	t.Helper()
	root := moduleRoot(t)
	natsServer = filepath.Join(root, "bin", "nats-server")
	if _, err := os.Stat(natsServer); err != nil {
		msg := fmt.Sprintf("%s is missing: run make services (%v)", natsServer, err)
		if os.Getenv("CI") != "" {
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
		cmd := exec.Command("go", "build", "-o", sluiceBin, "./cmd/sluice")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/sluice: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return sluiceBin, natsServer
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

// procCluster is a Sluice cluster of real processes.
type procCluster struct {
	t        *testing.T
	dir      string
	sluice   string
	natsURLs string
	procs    []*proc
	coords   map[string]*proc // by Raft node id
	workers  map[string]*proc // by worker id
	client   *coordinator.Client
	js       jetstream.JetStream
}

func newProcCluster(t *testing.T) *procCluster {
	t.Helper()
	sluice, natsServer := binaries(t)
	c := &procCluster{
		t: t, dir: t.TempDir(), sluice: sluice,
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
		c.start(name, natsServer, "-n", name, "-a", "127.0.0.1", "-p", fmt.Sprint(ports[i]),
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
			"--replicas", "3", "--nats", c.natsURLs}
		if i == 0 {
			args = append(args, "--bootstrap")
		}
		c.coords[id] = c.start("coordinator-"+id, sluice, args...)
	}
	for _, id := range []string{"w1", "w2"} {
		c.workers[id] = c.start("worker-"+id, sluice, "worker", "--id", id, "--slots", "2",
			"--drain-timeout", "30s", "--nats", c.natsURLs)
	}

	// Ready: a leader answers and both workers are heard from.
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	for {
		st, err := c.client.Status(ctx, protocol.StatusRequest{})
		if err == nil && st.Leader != "" && len(st.Workers) == 2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("cluster not ready within 45s: leader %q, workers %+v, err %v", st.Leader, st.Workers, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c
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

// busyWorker waits until a worker's heartbeat shows a task of run in flight
// and returns that heartbeat.
func (c *procCluster) busyWorker(runID string, d time.Duration) protocol.Heartbeat {
	c.t.Helper()
	ctx := c.ctx(d)
	for {
		st, err := c.client.Status(ctx, protocol.StatusRequest{})
		if err == nil {
			for _, hb := range st.Workers {
				if hb.Busy > 0 && slices.ContainsFunc(hb.Tasks, func(s string) bool { return strings.HasPrefix(s, runID+"/") }) {
					if _, ok := c.workers[hb.Worker]; ok {
						return hb
					}
				}
			}
		}
		if ctx.Err() != nil {
			c.t.Fatalf("no worker reported a task of %s in flight within %v (last err %v)", runID, d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countMessages counts the messages on subject in stream.
func (c *procCluster) countMessages(stream, subject string) int {
	c.t.Helper()
	ctx := c.ctx(10 * time.Second)
	s, err := c.js.Stream(ctx, stream)
	if err != nil {
		c.t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		c.t.Fatalf("stream %s info: %v", stream, err)
	}
	var n uint64
	for _, v := range info.State.Subjects {
		n += v
	}
	return int(n)
}

// logLines returns the lines of p's log that contain every one of words.
func logLines(t *testing.T, p *proc, words ...string) []string {
	t.Helper()
	f, err := os.Open(p.log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		ok := true
		for _, w := range words {
			if !bytes.Contains(line, []byte(w)) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, string(line))
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
	c := newProcCluster(t)
	in := writeDataset(t, 16, 30000)
	out := t.TempDir()
	c.apply("kill9", in, out, 1)
	res := c.run("kill9")

	hb := c.busyWorker(res.RunID, 30*time.Second)
	victim := c.workers[hb.Worker]
	victim.signal(t, syscall.SIGKILL)
	killed := time.Now()
	<-victim.done
	t.Logf("killed %s with SIGKILL; its last heartbeat had %v in flight", hb.Worker, hb.Tasks)

	st := c.wait(res.RunID, 75*time.Second)
	t.Logf("run %s ended %s after the kill", st.State, time.Since(killed).Round(time.Millisecond))
	if st.State != protocol.RunCommitted {
		t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	assertSameRows(t, in, out)
	full, err := c.client.GetRun(c.ctx(10*time.Second), res.RunID)
	if err != nil {
		t.Fatal(err)
	}
	var redelivered []protocol.TaskStatus
	for _, task := range full.TaskList {
		if task.Attempts > 1 {
			redelivered = append(redelivered, task)
		}
	}
	if len(redelivered) == 0 {
		t.Fatalf("no task was delivered twice; the kill did not interrupt a task: %+v", full.TaskList)
	}
	for _, task := range redelivered {
		if task.Worker == hb.Worker {
			t.Errorf("task %s (attempt %d) is reported done by the killed worker %s", task.TaskID, task.Attempts, hb.Worker)
		}
	}
}

// The coordinator process that leads Raft killed with SIGKILL mid-run: another
// coordinator takes over, continues the run, and the run commits exactly
// once.
func TestProcessLeaderKill9MidRun(t *testing.T) {
	c := newProcCluster(t)
	in := writeDataset(t, 16, 30000)
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
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("run %s made no progress: %v", res.RunID, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	old.signal(t, syscall.SIGKILL)
	killed := time.Now()
	<-old.done

	var next string
	for {
		st, err := c.client.Status(ctx, protocol.StatusRequest{})
		if err == nil && st.Leader != "" && st.Leader != st0.Leader {
			next = st.Leader
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no other leader answered within 60s: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("leader %s killed with SIGKILL; %s answered as leader %s later", st0.Leader, next, time.Since(killed).Round(time.Millisecond))

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
	if n := c.countMessages(protocol.StreamEvents, protocol.RunEventSubject("failover", "committed")); n != 1 {
		t.Errorf("%d committed run events, want 1", n)
	}
}

// A worker process sent SIGTERM with a task in flight finishes that task,
// reports it and exits 0 within its drain timeout; nothing it started runs
// twice.
func TestProcessWorkerSIGTERMDrains(t *testing.T) {
	const drainTimeout = 30 * time.Second // the workers' --drain-timeout
	c := newProcCluster(t)
	in := writeDataset(t, 16, 30000)
	out := t.TempDir()
	c.apply("drain", in, out, 1)
	res := c.run("drain")

	hb := c.busyWorker(res.RunID, 30*time.Second)
	victim := c.workers[hb.Worker]
	victim.signal(t, syscall.SIGTERM)
	termed := time.Now()
	select {
	case <-victim.done:
	case <-time.After(drainTimeout + 10*time.Second):
		t.Fatalf("%s still running %v after SIGTERM (drain timeout %v)", hb.Worker, time.Since(termed).Round(time.Millisecond), drainTimeout)
	}
	t.Logf("%s exited %v after SIGTERM: %v", hb.Worker, time.Since(termed).Round(time.Millisecond), victim.cmd.ProcessState)
	if victim.err != nil {
		t.Fatalf("%s after SIGTERM: %v, want exit status 0", hb.Worker, victim.err)
	}
	if took := time.Since(termed); took > drainTimeout {
		t.Errorf("%s took %v to stop, more than its drain timeout %v", hb.Worker, took, drainTimeout)
	}

	st := c.wait(res.RunID, 60*time.Second)
	if st.State != protocol.RunCommitted {
		t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	assertSameRows(t, in, out)

	// What the worker did, from its log: it had tasks in flight at SIGTERM,
	// and every task it started it finished.
	draining := logLines(t, victim, "draining tasks")
	if len(draining) == 0 {
		t.Fatalf("%s logged no 'draining tasks': it had no task in flight at SIGTERM", hb.Worker)
	}
	t.Logf("%s: %s", hb.Worker, draining[0])
	if lines := logLines(t, victim, "interrupted by shutdown"); len(lines) > 0 {
		t.Errorf("%s handed back tasks instead of finishing them: %q", hb.Worker, lines)
	}
	full, err := c.client.GetRun(c.ctx(10*time.Second), res.RunID)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]protocol.TaskStatus{}
	for _, task := range full.TaskList {
		byID[task.TaskID] = task
	}
	// The tasks of its last heartbeat before SIGTERM, and every task it
	// logged as done, must be its own, on their first attempt.
	mine := map[string]bool{}
	for _, rt := range hb.Tasks {
		if run, task, ok := strings.Cut(rt, "/"); ok && run == res.RunID {
			mine[task] = true
		}
	}
	for _, line := range logLines(t, victim, "task done", "run="+res.RunID) {
		mine[logField(line, "task")] = true
	}
	if len(mine) == 0 {
		t.Fatalf("%s ran no task of %s", hb.Worker, res.RunID)
	}
	for id := range mine {
		task, ok := byID[id]
		switch {
		case !ok:
			t.Errorf("task %s of %s's log is not in the run's task list", id, hb.Worker)
		case task.Worker != hb.Worker || task.Attempts != 1:
			t.Errorf("task %s: done by %s on attempt %d; want %s on attempt 1 (it drained rather than abandoned it)",
				id, task.Worker, task.Attempts, hb.Worker)
		}
	}
	if t.Failed() {
		t.Logf("task list: %+v", full.TaskList)
	}
	t.Logf("DEBUG %s", tail(victim.log, 30)); for _, w := range c.workers { t.Logf("DEBUG %s", tail(w.log, 30)) }
}
