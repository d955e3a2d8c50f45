package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/protocol"
)

// controlResults are the figures of (a).
type controlResults struct {
	Slots int `json:"slots_per_worker"`
	// ByWorkers are runs of the same size on 1 to 8 worker processes,
	// each beside its limit (the same run of the benchmark).
	ByWorkers []controlSample `json:"by_workers"`
	// BySize are runs of 1,000 to 100,000 tasks on the same workers.
	BySize []controlSample `json:"by_size"`
	// Spread is (fastest - slowest) / fastest of the committed rates of
	// BySize: 0 is flat.
	Spread float64 `json:"by_size_spread"`
}

// controlSample is one run of no-op tasks and its limit.
type controlSample struct {
	Sluice runSample   `json:"sluice"`
	Limit  limitSample `json:"limit"`
	// OfLimit is Sluice's committed rate over the limit's.
	OfLimit float64 `json:"of_limit"`
}

const noopSpec = `name: %s
pattern: full_load
source: {kind: scale_bench, tasks: %d}
sink: {kind: scale_bench}
`

func controlPlane(ctx context.Context, cfg config, dir string, stdout io.Writer) (*controlResults, error) {
	c, err := startCluster(filepath.Join(dir, "control"), cfg.slots, os.Stderr)
	if err != nil {
		return nil, err
	}
	defer c.close()
	profile := ""
	if cfg.cpuProfile != "" {
		profile = cfg.cpuProfile + ".control.pprof"
	}
	if err := c.startCoordinator(ctx, profile); err != nil {
		return nil, err
	}
	out := &controlResults{Slots: cfg.slots}
	fmt.Fprintf(stdout, "(a) control plane: no-op tasks, %d slots per worker process\n", cfg.slots)
	measureOne := func(workers, tasks int) (controlSample, error) {
		name := fmt.Sprintf("noop-%d", tasks)
		if err := c.apply(ctx, fmt.Sprintf(noopSpec, name, tasks)); err != nil {
			return controlSample{}, err
		}
		var best controlSample
		for range cfg.reps {
			s, err := c.timeRun(ctx, name, tasks)
			if err != nil {
				return best, err
			}
			if s.Rows != 0 || s.Bytes != 0 {
				return best, fmt.Errorf("run of %s: %d rows, %d bytes from no-op tasks", name, s.Rows, s.Bytes)
			}
			if s.taskMsg == nil || s.resultMsg == nil {
				return best, errors.New("no task or result message seen")
			}
			lim, err := c.limit(ctx, tasks, workers, s.taskMsg, s.resultMsg)
			if err != nil {
				return best, err
			}
			cs := controlSample{Sluice: s, Limit: lim, OfLimit: measure.Round(s.CommittedPerSec/lim.PerSec, 3)}
			fmt.Fprintf(stdout, "  %d workers, %7d tasks: dispatched %7s/s, committed %7s/s in %6.2fs (coordinator %5.1f CPU-s, peak %4.0f MiB); limit %7s/s (%.2f of it)\n",
				workers, tasks, measure.Thousands(s.DispatchedPerSec), measure.Thousands(s.CommittedPerSec), s.Seconds, s.CoordinatorCPU, s.CoordinatorPeakRSS,
				measure.Thousands(lim.PerSec), cs.OfLimit)
			if best.Sluice.Seconds == 0 || s.Seconds < best.Sluice.Seconds {
				best = cs
			}
		}
		return best, nil
	}
	for _, w := range cfg.workerCounts {
		if err := c.startWorkers(ctx, w); err != nil {
			return nil, err
		}
		if err := c.warm(ctx, w*cfg.slots*4); err != nil {
			return nil, err
		}
		s, err := measureOne(w, cfg.tasks)
		if err2 := c.stopWorkers(); err == nil {
			err = err2
		}
		if err != nil {
			return nil, err
		}
		out.ByWorkers = append(out.ByWorkers, s)
	}
	if err := c.startWorkers(ctx, cfg.sizeWorkers); err != nil {
		return nil, err
	}
	if err := c.warm(ctx, cfg.sizeWorkers*cfg.slots*4); err != nil {
		return nil, err
	}
	for _, n := range cfg.sizeCounts {
		s, err := measureOne(cfg.sizeWorkers, n)
		if err != nil {
			return nil, err
		}
		out.BySize = append(out.BySize, s)
	}
	if err := c.stopWorkers(); err != nil {
		return nil, err
	}
	lo, hi := 0.0, 0.0
	for i, s := range out.BySize {
		r := s.Sluice.CommittedPerSec
		if i == 0 || r < lo {
			lo = r
		}
		hi = max(hi, r)
	}
	if hi > 0 {
		out.Spread = measure.Round((hi-lo)/hi, 3)
	}
	return out, nil
}

// warm runs tasks no-op tasks on the workers started, untimed: the first
// run on new worker processes pays for their first connections.
func (c *cluster) warm(ctx context.Context, tasks int) error {
	name := fmt.Sprintf("warm-%d", tasks)
	if err := c.apply(ctx, fmt.Sprintf(noopSpec, name, tasks)); err != nil {
		return err
	}
	_, err := c.timeRun(ctx, name, tasks)
	return err
}

// dataResults are the figures of (b).
type dataResults struct {
	Tasks       int          `json:"tasks"`
	TaskBytes   int64        `json:"bytes_per_task"`
	Rate        int64        `json:"bytes_per_sec_per_task"`
	TaskSeconds float64      `json:"io_seconds_per_task"`
	Slots       int          `json:"slots_per_worker"`
	Runs        []dataSample `json:"by_workers"`
}

// dataSample is one I/O-bound run.
type dataSample struct {
	Workers int     `json:"workers"`
	Seconds float64 `json:"seconds"`
	// Ideal is tasks x I/O time / (workers x slots): the run's time with
	// no cost but the tasks' I/O.
	Ideal      float64 `json:"ideal_seconds"`
	Speedup    float64 `json:"speedup"`
	Efficiency float64 `json:"efficiency"`
	Verified   string  `json:"verified"`
}

const ioSpec = `name: %s
pattern: full_load
source: {kind: scale_bench, tasks: %d, file: %q, rate: %d}
sink: {kind: scale_bench}
`

func dataPlane(ctx context.Context, cfg config, dir string, stdout io.Writer) (*dataResults, error) {
	file := filepath.Join(dir, "io-input.jsonl")
	line := `{"id":1234567,"name":"some text of an event","amount":"12.34"}` + "\n"
	lines := int(cfg.ioBytes) / len(line)
	if lines < 1 {
		return nil, fmt.Errorf("--io-bytes %d holds no line of %d bytes", cfg.ioBytes, len(line))
	}
	if err := os.WriteFile(file, []byte(strings.Repeat(line, lines)), 0o644); err != nil {
		return nil, err
	}
	size := int64(lines * len(line))
	c, err := startCluster(filepath.Join(dir, "data"), cfg.ioSlots, os.Stderr)
	if err != nil {
		return nil, err
	}
	defer c.close()
	if err := c.startCoordinator(ctx, ""); err != nil {
		return nil, err
	}
	out := &dataResults{Tasks: cfg.ioTasks, TaskBytes: size, Rate: cfg.ioRate, Slots: cfg.ioSlots,
		TaskSeconds: measure.Round(float64(size)/float64(cfg.ioRate), 3)}
	fmt.Fprintf(stdout, "(b) data plane: %d tasks of %s each read at %s/s (%.3fs of I/O), %d slots per worker process\n",
		cfg.ioTasks, measure.Thousands(float64(size)), measure.Thousands(float64(cfg.ioRate)), out.TaskSeconds, cfg.ioSlots)
	name := "io"
	if err := c.apply(ctx, fmt.Sprintf(ioSpec, name, cfg.ioTasks, file, cfg.ioRate)); err != nil {
		return nil, err
	}
	var one float64
	for _, w := range cfg.workerCounts {
		if err := c.startWorkers(ctx, w); err != nil {
			return nil, err
		}
		if err := c.warm(ctx, w*cfg.ioSlots); err != nil {
			return nil, err
		}
		s, err := c.timeRun(ctx, name, cfg.ioTasks)
		if err2 := c.stopWorkers(); err == nil {
			err = err2
		}
		if err != nil {
			return nil, err
		}
		if want := int64(cfg.ioTasks) * size; s.Bytes != want || s.Rows != int64(cfg.ioTasks*lines) {
			return nil, fmt.Errorf("I/O run on %d workers: %d rows, %d bytes, want %d, %d", w, s.Rows, s.Bytes, cfg.ioTasks*lines, want)
		}
		if one == 0 {
			one = s.Seconds * float64(cfg.workerCounts[0])
		}
		d := dataSample{Workers: w, Seconds: s.Seconds,
			Ideal:    measure.Round(float64(cfg.ioTasks)*out.TaskSeconds/float64(w*cfg.ioSlots), 3),
			Speedup:  measure.Round(one/s.Seconds, 2),
			Verified: fmt.Sprintf("rows and bytes of the run (%d, %d) = tasks x the file's", s.Rows, s.Bytes)}
		d.Efficiency = measure.Round(d.Speedup/float64(w), 3)
		fmt.Fprintf(stdout, "  %d workers: %6.2fs (ideal %6.2fs), speed-up %5.2f, efficiency %.2f\n", w, d.Seconds, d.Ideal, d.Speedup, d.Efficiency)
		out.Runs = append(out.Runs, d)
	}
	return out, nil
}

// backfillResults are the figures of (c).
type backfillResults struct {
	Windows     int     `json:"windows"`
	Concurrency int     `json:"concurrency"`
	Workers     int     `json:"workers"`
	Seconds     float64 `json:"seconds"`
	PerSec      float64 `json:"windows_per_sec"`
	// PerSecByTenth is the windows committed per second in each tenth of
	// the backfill: flat when dispatch keeps its rate.
	PerSecByTenth []float64 `json:"windows_per_sec_by_tenth"`
	// RSSByTenth is the coordinator's resident memory at the end of each
	// tenth, MiB.
	RSSByTenth []float64 `json:"coordinator_rss_mib_by_tenth"`
	PeakRSS    float64   `json:"coordinator_peak_rss_mib"`
	// Snapshots are the sizes of the Raft snapshots the coordinator took
	// during the backfill, in order, with the windows committed when each
	// was seen.
	Snapshots []snapshotSeen `json:"raft_snapshots"`
	// SnapshotSettings are the coordinator's Raft snapshot settings.
	SnapshotSettings string  `json:"raft_snapshot_settings"`
	RaftLogBytes     int64   `json:"raft_log_bytes"`
	CoordinatorCPU   float64 `json:"coordinator_cpu_seconds"`
	Verified         string  `json:"verified"`
}

type snapshotSeen struct {
	Bytes     int64 `json:"bytes"`
	Committed int   `json:"windows_committed"`
}

const backfillSpec = `name: %s
pattern: incremental
source: {kind: scale_bench}
sink: {kind: scale_bench}
incremental:
  delta_column: id
  window: 2
  start: 0
`

func backfill(ctx context.Context, cfg config, dir string, stdout io.Writer) (*backfillResults, error) {
	c, err := startCluster(filepath.Join(dir, "backfill"), cfg.slots, os.Stderr)
	if err != nil {
		return nil, err
	}
	defer c.close()
	const snapEvery, snapThreshold = "10s", "8192"
	c.coordArgs = []string{"--snapshot-interval", snapEvery, "--snapshot-threshold", snapThreshold}
	profile := ""
	if cfg.cpuProfile != "" {
		profile = cfg.cpuProfile + ".backfill.pprof"
	}
	if err := c.startCoordinator(ctx, profile); err != nil {
		return nil, err
	}
	if err := c.startWorkers(ctx, cfg.bfWorkers); err != nil {
		return nil, err
	}
	name := "backfill"
	if err := c.apply(ctx, fmt.Sprintf(backfillSpec, name)); err != nil {
		return nil, err
	}
	out := &backfillResults{Windows: cfg.windows, Concurrency: cfg.concurrency, Workers: cfg.bfWorkers,
		SnapshotSettings: fmt.Sprintf("SnapshotInterval %s, SnapshotThreshold %s entries", snapEvery, snapThreshold)}
	fmt.Fprintf(stdout, "(c) backfill of %d windows, %d at once, %d worker processes\n", cfg.windows, cfg.concurrency, cfg.bfWorkers)
	evs, stopEvents, err := c.events(name)
	if err != nil {
		return nil, err
	}
	defer stopEvents()
	pid := c.coord.cmd.Process.Pid
	cpu0 := cpuOf(pid)
	start := time.Now()
	// Windows of 2 values over [0, 2 x windows - 1): the last one of 1
	// value (the FSM takes at most 99,999 whole windows and a part).
	rg := protocol.ValueWindow(0, 2*int64(cfg.windows)-1)
	st, err := c.client.Backfill(ctx, protocol.BackfillRequest{Pipeline: name, Range: &rg, Concurrency: cfg.concurrency})
	if err != nil {
		return nil, err
	}
	if st.Total != cfg.windows {
		return nil, fmt.Errorf("backfill %s has %d windows, want %d", st.ID, st.Total, cfg.windows)
	}
	committed := 0
	seen := map[string]bool{}
	runs := map[string]bool{}
	var tenth []float64
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastProgress := time.Now()
	for committed < cfg.windows {
		select {
		case ev := <-evs:
			if ev.Outcome != protocol.RunCommitted {
				return nil, fmt.Errorf("window run %s %s: %s", ev.RunID, ev.Outcome, ev.Error)
			}
			if !runs[ev.RunID] {
				runs[ev.RunID] = true
				committed++
				lastProgress = time.Now()
			}
			for len(tenth) < 10 && committed*10 >= cfg.windows*(len(tenth)+1) {
				tenth = append(tenth, time.Since(start).Seconds())
				out.RSSByTenth = append(out.RSSByTenth, measure.Round(memoryOf(pid).RSS, 1))
			}
			continue
		case <-tick.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if err := c.checkAlive(); err != nil {
			return nil, err
		}
		for name, size := range snapshotSizes(c.coordDir) {
			if !seen[name] {
				seen[name] = true
				out.Snapshots = append(out.Snapshots, snapshotSeen{Bytes: size, Committed: committed})
			}
		}
		if time.Since(lastProgress) > 2*time.Minute {
			return nil, fmt.Errorf("no window committed for 2 minutes (%d of %d)", committed, cfg.windows)
		}
	}
	secs := time.Since(start).Seconds()
	out.Seconds = measure.Round(secs, 2)
	out.PerSec = measure.Round(float64(cfg.windows)/secs, 0)
	prev := 0.0
	for _, t := range tenth {
		out.PerSecByTenth = append(out.PerSecByTenth, measure.Round(float64(cfg.windows)/10/max(t-prev, 1e-3), 0))
		prev = t
	}
	out.PeakRSS = measure.Round(memoryOf(pid).Peak, 1)
	out.CoordinatorCPU = measure.Round(cpuOf(pid)-cpu0, 1)
	// The backfill's end is recorded after its last run's.
	for {
		st, err = c.client.GetBackfill(ctx, st.ID)
		if err != nil {
			return nil, err
		}
		if st.State == protocol.BackfillDone || time.Since(start).Seconds() > secs+30 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st.State != protocol.BackfillDone || st.Committed != cfg.windows {
		return nil, fmt.Errorf("backfill %s: %s, %d of %d windows committed", st.ID, st.State, st.Committed, cfg.windows)
	}
	for name, size := range snapshotSizes(c.coordDir) {
		if !seen[name] {
			out.Snapshots = append(out.Snapshots, snapshotSeen{Bytes: size, Committed: committed})
		}
	}
	out.RaftLogBytes = fileSize(filepath.Join(c.coordDir, "raft.db"))
	out.Verified = fmt.Sprintf("one committed run event per window (%d) and the backfill's status (%d committed, done)", len(runs), st.Committed)
	fmt.Fprintf(stdout, "  %d windows in %.1fs: %s windows/s; by tenth %v; coordinator RSS by tenth %v MiB, peak %.0f MiB; snapshots %v; raft.db %s bytes\n",
		cfg.windows, secs, measure.Thousands(out.PerSec), out.PerSecByTenth, out.RSSByTenth, out.PeakRSS, out.Snapshots, measure.Thousands(float64(out.RaftLogBytes)))
	slices.SortFunc(out.Snapshots, func(a, b snapshotSeen) int { return a.Committed - b.Committed })
	return out, nil
}
