//go:build unix

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The process tests run the sluice binary as a user does, from a shell in a
// directory of their own: sluice dev in the background and client commands
// beside it.

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// TestMain removes the binary the process tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binary builds the sluice binary once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "sluice-cli-test-"); buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "sluice")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// proc is a sluice process started in a directory, its output in a file.
type proc struct {
	cmd  *exec.Cmd
	out  string // path of stdout and stderr
	done chan struct{}
	err  error
}

// start starts `sluice args...` in dir with SLUICE_NATS unset.
func start(t *testing.T, dir string, args ...string) *proc {
	t.Helper()
	out := filepath.Join(dir, fmt.Sprintf("%s-%d.log", args[0], time.Now().UnixNano()))
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(binary(t), args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "SLUICE_NATS=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait waits up to d for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("%v still running after %s; output:\n%s", p.cmd.Args, d, p.output())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

func (p *proc) output() string {
	b, _ := os.ReadFile(p.out)
	return string(b)
}

// startDev starts sluice dev in dir and waits until it wrote nats.url (a
// file left by a killed one does not count).
func startDev(t *testing.T, dir string, args ...string) (*proc, string) {
	t.Helper()
	began := time.Now()
	p := start(t, dir, append([]string{"dev", "--http", "127.0.0.1:0", "--workers", "1", "--drain-timeout", "10s"}, args...)...)
	deadline := time.Now().Add(30 * time.Second)
	file := filepath.Join(dir, ".sluice", "nats.url")
	for {
		if fi, err := os.Stat(file); err == nil && !fi.ModTime().Before(began) {
			if b, err := os.ReadFile(file); err == nil {
				return p, strings.TrimSpace(string(b))
			}
		}
		select {
		case <-p.done:
			t.Fatalf("sluice dev exited: %v\n%s", p.err, p.output())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("sluice dev wrote no nats.url within 30s:\n%s", p.output())
		}
	}
}

// sluiceIn runs a client command in dir to its end.
func sluiceIn(t *testing.T, dir string, args ...string) (string, int) {
	t.Helper()
	p := start(t, dir, args...)
	code := p.wait(t, time.Minute)
	return p.output(), code
}

// Item 3: a second sluice dev on the same directory exits at once naming
// the first one's pid and leaves its nats.url alone; SIGTERM stops a dev
// within its drain timeout, also while it starts, and it removes nats.url
// and http.url.
func TestDevTwoOnOneDirectoryAndSIGTERM(t *testing.T) {
	dir := t.TempDir()
	first, url := startDev(t, dir)
	if _, err := os.Stat(filepath.Join(dir, ".sluice", "http.url")); err != nil {
		t.Errorf("http.url: %v", err)
	}
	if pid := pidOf(t, dir); pid != first.cmd.Process.Pid {
		t.Errorf("the lock file names pid %d, want the dev's %d", pid, first.cmd.Process.Pid)
	}
	began := time.Now()
	second := start(t, dir, "dev", "--http", "127.0.0.1:0")
	if code := second.wait(t, 10*time.Second); code == 0 || time.Since(began) > 5*time.Second {
		t.Fatalf("second dev on the directory: exit %d after %s", code, time.Since(began))
	}
	want := fmt.Sprintf("is in use by another sluice (pid %d)", first.cmd.Process.Pid)
	if out := second.output(); !strings.Contains(out, want) {
		t.Errorf("second dev said %q; want %q", out, want)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, ".sluice", "nats.url")); strings.TrimSpace(string(b)) != url {
		t.Errorf("nats.url is %q after the second dev, want the first's %q", b, url)
	}
	if out, code := sluiceIn(t, dir, "status"); code != 0 || !strings.Contains(out, "leader: dev") {
		t.Errorf("status beside the dev: exit %d\n%s", code, out)
	}

	began = time.Now()
	first.cmd.Process.Signal(syscall.SIGTERM)
	if code := first.wait(t, 15*time.Second); code != 0 {
		t.Errorf("dev after SIGTERM: exit %d\n%s", code, first.output())
	}
	if d := time.Since(began); d > 10*time.Second {
		t.Errorf("dev took %s to stop, more than its drain timeout", d)
	}
	for _, f := range []string{"nats.url", "http.url"} {
		if _, err := os.Stat(filepath.Join(dir, ".sluice", f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after the dev stopped: %v; want it removed", f, err)
		}
	}
	// Stopped while it starts: it exits within the drain timeout too.
	third := start(t, t.TempDir(), "dev", "--http", "", "--drain-timeout", "3s")
	time.Sleep(200 * time.Millisecond)
	began = time.Now()
	third.cmd.Process.Signal(syscall.SIGTERM)
	third.wait(t, 10*time.Second)
	if d := time.Since(began); d > 4*time.Second {
		t.Errorf("a starting dev took %s to stop after SIGTERM, more than its 3s drain timeout", d)
	}
}

// Item 5: run --wait notices a cluster killed under it within seconds,
// says which run goes on and how to follow it, and exits non-zero; its
// progress, written to a file, is whole lines.
func TestRunWaitLostCluster(t *testing.T) {
	dir := t.TempDir()
	dev, _ := startDev(t, dir)
	// A partition-based run waits for its partition: it stays in flight.
	spec := fmt.Sprintf(`name: waits
pattern: incremental
source: {kind: files, path: %s, format: jsonl, layout: "date={date}/hour={hour}", ready: success_file}
sink: {kind: files, path: %s, format: jsonl}
incremental: {window: 1h, start: 2026-01-01T00:00:00Z, lag: 0s, ready_timeout: 0s, ready_check: 1s}
`, filepath.Join(dir, "events"), filepath.Join(dir, "out"))
	writeSpec(t, dir, "waits.yaml", spec)
	if out, code := sluiceIn(t, dir, "apply", "-f", "waits.yaml"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	waiter := start(t, dir, "run", "waits", "--wait")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(waiter.output(), "waiting for its source input") {
		if time.Now().After(deadline) {
			t.Fatalf("run --wait did not start the run:\n%s", waiter.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // a few polls
	killed := time.Now()
	dev.cmd.Process.Kill()
	code := waiter.wait(t, 30*time.Second)
	took := time.Since(killed)
	out := waiter.output()
	t.Logf("run --wait gave up %s after the kill", took.Round(10*time.Millisecond))
	if code == 0 || took > 8*time.Second {
		t.Errorf("run --wait after the cluster was killed: exit %d after %s; want non-zero within seconds", code, took)
	}
	for _, want := range []string{"lost the cluster at nats://", "run waits-000001 goes on", "sluice status --run waits-000001 --wait"} {
		if !strings.Contains(out, want) {
			t.Errorf("run --wait said:\n%s\nwant %q", out, want)
		}
	}
	if strings.Contains(out, "\r") {
		t.Errorf("progress written to a file has carriage returns:\n%q", out)
	}
	// The cluster comes back: the run is still there to follow.
	began := time.Now()
	startDev(t, dir)
	t.Logf("dev restarted in %s", time.Since(began).Round(10*time.Millisecond))
	if out, code := sluiceIn(t, dir, "status", "--run", "waits-000001"); code != 0 || !strings.Contains(out, "waiting") {
		t.Errorf("status --run after the restart: exit %d\n%s", code, out)
	}
}

// pidOf reads the pid a dev wrote into its lock file.
func pidOf(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, ".sluice", "lock"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
