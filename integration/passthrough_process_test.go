//go:build unix

package integration

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors/files/filestest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// writePassTree writes a tree to copy as is: nested directories, a Delta
// log, hidden files and directories, an empty _SUCCESS, files of random
// bytes, and a sparse file of big bytes (split into ranges by a
// passthrough) with data at its ends. It returns each file's size by its
// slash-separated name.
func writePassTree(t *testing.T, dir string, small int, big int64) map[string]int64 {
	t.Helper()
	write := func(rel string, data []byte) {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for rel, content := range map[string]string{
		"table/_delta_log/00000000000000000000.json": `{"commitInfo":{}}` + "\n",
		"table/_delta_log/00000000000000000001.json": `{"add":{"path":"part-0.parquet"}}` + "\n",
		".hidden":          "dot file",
		".config/settings": "a=1",
		"_SUCCESS":         "",
		"a/b/c/deep.txt":   "deep",
	} {
		write(rel, []byte(content))
	}
	for i := range small {
		b := make([]byte, 256<<10+i)
		rand.Read(b)
		write(fmt.Sprintf("table/date=2026-01-%02d/part-%03d.parquet", 1+i%3, i), b)
	}
	p := filepath.Join(dir, "big", "blob.bin")
	write("big/blob.bin", nil)
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(big); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, big / 2, big - 16} {
		if _, err := f.WriteAt([]byte(fmt.Sprintf("%016d", off)), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	sizes := map[string]int64{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		sizes[filepath.ToSlash(rel)] = info.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sizes
}

// watchTarget looks at the target tree every few milliseconds until stop
// is closed and reports every file it saw there at another size than the
// source's (a partial file) or that the source does not have (a
// temporary or staged file).
func watchTarget(dir string, sizes map[string]int64, stop <-chan struct{}) func() []string {
	var mu sync.Mutex
	seen := map[string]bool{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return nil // a directory made or removed meanwhile
				}
				rel, _ := filepath.Rel(dir, p)
				rel = filepath.ToSlash(rel)
				info, err := d.Info()
				if err != nil {
					return nil
				}
				if want, ok := sizes[rel]; !ok || info.Size() != want {
					mu.Lock()
					seen[fmt.Sprintf("%s (%d bytes, source %d)", rel, info.Size(), want)] = true
					mu.Unlock()
				}
				return nil
			})
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return func() []string {
		<-done
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for s := range seen {
			out = append(out, s)
		}
		return out
	}
}

// inodes returns the inode and modification time of every file of a tree.
func inodes(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out[p] = fmt.Sprintf("inode %d mtime %s", info.Sys().(*syscall.Stat_t).Ino, info.ModTime())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A files passthrough whose worker process is killed with SIGKILL in the
// middle of a copy: the task goes to the other worker, the run commits a
// target equal to the source by a checksum of every name and byte, no
// partial or staged file was ever visible in the target, nothing stays
// staged, and a rerun copies nothing again (every file keeps its inode).
func TestProcessPassthroughKill9MidCopy(t *testing.T) {
	t.Parallel()
	c := newProcCluster(t)
	dir := t.TempDir()
	src, out := filepath.Join(dir, "src"), filepath.Join(dir, "out")
	sizes := writePassTree(t, src, 48, 2*64<<20+4321)
	y := fmt.Sprintf("name: pass9\npattern: passthrough\nsource: {kind: files, path: %s}\nsink: {kind: files, path: %s, mirror: true}\npartitioning: {target_bytes: 67108864, max_files: 8}\n", src, out)
	s, err := pipeline.Parse([]byte(y), "pass9.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.client.Apply(c.ctx(30*time.Second), s); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	partial := watchTarget(out, sizes, stop)
	res := c.run("pass9")

	id, _ := c.busyWorker(res.RunID, 30*time.Second)
	victim := c.workers[id]
	victim.signal(t, syscall.SIGKILL)
	<-victim.done
	interrupted := inFlight(t, victim, res.RunID)
	t.Logf("killed %s with SIGKILL with tasks %v in flight", id, interrupted)
	if len(interrupted) == 0 {
		t.Fatalf("%s had finished its tasks when it was killed; the test interrupted nothing", id)
	}
	st := c.wait(res.RunID, 2*time.Minute)
	close(stop)
	if st.State != protocol.RunCommitted {
		t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	if seen := partial(); len(seen) > 0 {
		t.Errorf("the target showed files the source does not have whole: %v", seen)
	}
	got, err := filestest.SumTree(out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := filestest.SumTree(src)
	if err != nil {
		t.Fatal(err)
	}
	if got != want || want.Files != int64(len(sizes)) {
		t.Fatalf("target %s; source %s (%d files written)", got, want, len(sizes))
	}
	full, err := c.client.GetRun(c.ctx(10*time.Second), res.RunID)
	if err != nil {
		t.Fatal(err)
	}
	var units int64
	again := 0
	for _, task := range full.TaskList {
		units += task.Rows
		if task.Attempts > 1 && task.State == protocol.TaskSucceeded && task.Worker != id {
			again++
		}
	}
	if again == 0 {
		t.Errorf("no task was run again by the other worker: %+v", full.TaskList)
	}
	// Each file counted once, the big one in its three ranges.
	if units != int64(len(sizes))+2 {
		t.Errorf("the run's tasks wrote %d units, want %d (every file once, the big one in 3 ranges)", units, len(sizes)+2)
	}
	if es, err := os.ReadDir(filepath.Join(dir, ".out.sluice", "staging")); err != nil && !errors.Is(err, fs.ErrNotExist) || len(es) > 0 {
		t.Errorf("staging holds %v after the commit (%v)", es, err)
	}

	before := inodes(t, out)
	st2 := c.wait(c.run("pass9").RunID, time.Minute)
	if st2.State != protocol.RunCommitted || st2.Tasks != 0 {
		t.Errorf("rerun: %s with %d tasks (%s); want committed with nothing to copy", st2.State, st2.Tasks, st2.Error)
	}
	after := inodes(t, out)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		for p, b := range before {
			if after[p] != b {
				t.Errorf("rerun rewrote %s: %s, then %s", strings.TrimPrefix(p, out), b, after[p])
			}
		}
	}
}
