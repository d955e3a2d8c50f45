package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/connectors/files/filestest"
	"github.com/sluicehq/sluice/devcluster"
)

// writeTree writes into dir n files of random bytes, total bytes in all,
// of sizes from one to nine parts, in nested date directories, beside a
// Delta log, a hidden file and directory and an empty _SUCCESS; it returns
// the tree's checksum.
func writeTree(dir string, n int, total int64, w io.Writer) (filestest.TreeSum, error) {
	fmt.Fprintf(w, "source tree: writing %d files, %.2f GiB into %s ... ", n, float64(total)/(1<<30), dir)
	start := time.Now()
	if err := os.RemoveAll(dir); err != nil {
		return filestest.TreeSum{}, err
	}
	write := func(rel string, data []byte) error {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		return os.WriteFile(p, data, 0o644)
	}
	for rel, content := range map[string]string{
		"table/_delta_log/00000000000000000000.json": `{"commitInfo":{}}` + "\n",
		".hidden/settings":                           "a=1\n",
		".keep":                                      "",
		"_SUCCESS":                                   "",
	} {
		if err := write(rel, []byte(content)); err != nil {
			return filestest.TreeSum{}, err
		}
	}
	weight := func(i int) int64 { return 1 + int64(i*37%9) }
	var weights int64
	for i := range n {
		weights += weight(i)
	}
	rng := rand.NewChaCha8([32]byte{'s', 'l', 'u', 'i', 'c', 'e'})
	buf := make([]byte, total*9/weights+1)
	var written int64
	for i := range n {
		size := total * weight(i) / weights
		if i == n-1 {
			size = total - written
		}
		data := buf[:size]
		rng.Read(data)
		rel := fmt.Sprintf("table/date=2026-%02d-%02d/part-%05d.parquet", 1+i%12, 1+i%28, i)
		if err := write(rel, data); err != nil {
			return filestest.TreeSum{}, err
		}
		written += size
	}
	sum, err := filestest.SumTree(dir)
	if err != nil {
		return filestest.TreeSum{}, err
	}
	fmt.Fprintf(w, "%.1fs: %s\n", time.Since(start).Seconds(), sum)
	return sum, nil
}

// copyTree times (a), cp -r of the source tree, and (a'), cp -r then
// sync -f of the copy's file system, each into a fresh directory, and
// checks the copies on the first repetition.
func (b *bench) copyTree(ctx context.Context) error {
	for _, k := range []string{"cp_r", "cp_r_sync"} {
		dst := filepath.Join(b.dir, "cp-out")
		if err := os.RemoveAll(dst); err != nil {
			return err
		}
		b.coldCache()
		cmds := [][]string{{"cp", "-r", b.srcTree, dst}}
		if k == "cp_r_sync" {
			cmds = append(cmds, []string{"sync", "-f", dst})
		}
		srv0 := measure.ServerCPU()
		var client float64
		start := time.Now()
		for _, args := range cmds {
			cmd := exec.CommandContext(ctx, args[0], args[1:]...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("%s: %w: %s", strings.Join(args[:2], " "), err, strings.TrimSpace(stderr.String()))
			}
			client += (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
		}
		secs := time.Since(start).Seconds()
		m := b.ms[k]
		if len(m.Seconds) == 0 {
			if err := b.checkTree(k, dst); err != nil {
				return err
			}
			m.Verified = "(first repetition) names and bytes of every file equal the source's (filestest.SumTree)"
		}
		m.add(secs, cpuUse{client: client, server: measure.ServerCPU() - srv0})
		if err := os.RemoveAll(dst); err != nil {
			return err
		}
		fmt.Fprintf(b.stdout, " %s %.2fs,", k, secs)
	}
	return nil
}

// startProfile profiles the CPU of repetition rep of measurement key
// into --cpuprofile's file when rep is the last; the function it returns
// stops it.
func (b *bench) startProfile(key string, rep int) (func(), error) {
	if b.cfg.profile == "" || rep != b.cfg.reps {
		return func() {}, nil
	}
	return harness.StartCPUProfile(b.cfg.profile + "." + key + ".pprof")
}

// checkTree compares a copy of the source tree with the source.
func (b *bench) checkTree(what, dir string) error {
	got, err := filestest.SumTree(dir)
	if err != nil {
		return err
	}
	if got != b.treeSum {
		return fmt.Errorf("%s: the copy %s holds %s; the source %s", what, dir, got, b.treeSum)
	}
	return nil
}

// sluiceFiles times (b), the first run of a files passthrough of the source
// tree into a fresh directory (a pipeline of its own per repetition, whose
// run copies everything), and checks the copy.
func (b *bench) sluiceFiles(ctx context.Context, c *devcluster.Cluster, rep int, apply func(string) error) error {
	name := fmt.Sprintf("bench-pass-files-%d", rep)
	out := filepath.Join(b.dir, fmt.Sprintf("sluice-out-%d", rep))
	err := apply(fmt.Sprintf("name: %s\npattern: passthrough\nsource: {kind: files, path: %q}\nsink: {kind: files, path: %q}\n"+
		"partitioning: {target_bytes: %d}\nretry: {max_attempts: 3, backoff: 1s}\n", name, b.srcTree, out, b.cfg.targetBytes))
	if err != nil {
		return err
	}
	b.coldCache()
	stop, err := b.startProfile("sluice_files", rep)
	if err != nil {
		return err
	}
	secs, cpu, st, err := timeRun(ctx, c, name)
	stop()
	if err != nil {
		return err
	}
	if err := b.checkTree("sluice files passthrough", out); err != nil {
		return err
	}
	if st.Rows != b.treeSum.Files {
		return fmt.Errorf("run %s copied %d files, the source has %d", st.RunID, st.Rows, b.treeSum.Files)
	}
	m := b.ms["sluice_files"]
	m.add(secs, cpu)
	m.Tasks = st.Tasks
	m.Verified = "names and bytes of every file equal the source's (filestest.SumTree); the run's unit count is the source's file count"
	for _, p := range []string{out, filepath.Join(b.dir, ".sluice-out-"+fmt.Sprint(rep)+".sluice")} {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	fmt.Fprintf(b.stdout, " sluice files %.2fs", secs)
	return nil
}
