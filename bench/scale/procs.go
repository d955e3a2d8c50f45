package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/worker"
)

// childArg, as the first argument, makes the command a process of the
// benchmark's cluster (a coordinator or a worker) instead of the
// benchmark: it re-executes itself for each, so that the coordinator and
// every worker are processes of their own, as in a deployment, and all
// know the benchmark's connector kind.
const childArg = "cluster-process"

// childMain runs one process of the cluster until SIGTERM.
func childMain(args []string) error {
	fs := flag.NewFlagSet(childArg, flag.ContinueOnError)
	role := fs.String("role", "", "coordinator or worker")
	url := fs.String("nats", "", "NATS URL")
	dir := fs.String("dir", "", "coordinator: its data directory")
	id := fs.String("id", "", "worker: its id")
	slots := fs.Int("slots", 8, "worker: its task slots")
	snapEvery := fs.Duration("snapshot-interval", 0, "coordinator: Raft snapshot interval (0: the default)")
	snapThreshold := fs.Uint64("snapshot-threshold", 0, "coordinator: Raft snapshot threshold (0: the default)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole process life to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	nc, err := nats.Connect(*url, nats.Name("scale-"+*role+*id), nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	reg := connectors.NewRegistry()
	register(reg)
	switch *role {
	case "coordinator":
		c, err := coordinator.New(coordinator.Config{NodeID: "scale", DataDir: *dir, RaftBind: "127.0.0.1:0", Bootstrap: true,
			SnapshotInterval: *snapEvery, SnapshotThreshold: *snapThreshold}, nc, reg, log, nil)
		if err != nil {
			return err
		}
		return c.Run(ctx)
	case "worker":
		w, err := worker.New(worker.Config{ID: *id, Slots: *slots, DrainTimeout: 5 * time.Second}, nc, reg, log, nil)
		if err != nil {
			return err
		}
		return w.Run(ctx)
	}
	return fmt.Errorf("unknown role %q", *role)
}

// proc is a child process of the cluster.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan error
}

// spawn starts a process of the cluster with args after childArg; its
// output goes to stderr, each line as it is.
func spawn(name string, stderr io.Writer, args ...string) (*proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, append([]string{childArg}, args...)...)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	return p, nil
}

// stop sends SIGTERM and waits for the process to end (SIGKILL after
// 30 s).
func (p *proc) stop() error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop %s: %w", p.name, err)
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		return nil
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		return fmt.Errorf("%s did not stop within 30s of SIGTERM", p.name)
	}
}

// exited returns the process's exit error when it has ended; false while
// it runs.
func (p *proc) exited() (error, bool) {
	select {
	case err := <-p.done:
		p.done <- err
		if err == nil {
			err = fmt.Errorf("%s exited", p.name)
		}
		return fmt.Errorf("%s: %w", p.name, err), true
	default:
		return nil, false
	}
}

// memory is a process's resident set now and at its peak, in MiB.
type memory struct {
	RSS  float64 `json:"rss_mib"`
	Peak float64 `json:"peak_rss_mib"`
}

// memoryOf reads /proc/<pid>/status; zero when it cannot.
func memoryOf(pid int) memory {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}
	}
	var m memory
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[0], 64)
		switch k {
		case "VmRSS":
			m.RSS = kb / 1024
		case "VmHWM":
			m.Peak = kb / 1024
		}
	}
	return m
}

// snapshotSizes returns the sizes of the Raft snapshots kept now in dir
// (a coordinator's data directory: <dir>/snapshots/<name>/state.bin), by
// name; Raft keeps the newest two.
func snapshotSizes(dir string) map[string]int64 {
	ents, err := os.ReadDir(filepath.Join(dir, "snapshots"))
	if err != nil {
		return nil
	}
	out := map[string]int64{}
	for _, e := range ents {
		if fi, err := os.Stat(filepath.Join(dir, "snapshots", e.Name(), "state.bin")); err == nil && !strings.HasSuffix(e.Name(), ".tmp") {
			out[e.Name()] = fi.Size()
		}
	}
	return out
}

// fileSize is the size of path, 0 when it cannot tell.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// cpuOf is the user and system CPU time of process pid in seconds, 0
// when /proc cannot tell.
func cpuOf(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	sy, _ := strconv.ParseFloat(f[12], 64)
	return (u + sy) / 100
}
