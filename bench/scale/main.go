// Command scale benchmarks how a Sluice cluster scales out, on this
// machine, with a coordinator process and 1 to 8 worker processes around
// an embedded NATS server, beside what JetStream alone does in the same
// run:
//
//	(a) control plane: runs of no-op tasks (a source that reads nothing,
//	    a sink that keeps nothing), tasks dispatched (on SLUICE_TASKS) and
//	    committed per second, by worker processes and by run size (1,000
//	    to 100,000 tasks in one run), beside the limit: the same number of
//	    task messages, of the same size, published and consumed, each
//	    answered by a result message consumed in turn, on plain JetStream
//	    streams;
//	(b) data plane: runs of I/O-bound tasks (each reads a file through a
//	    reader throttled to a bandwidth) on 1, 2, 4 and 8 worker
//	    processes: the speed-up over one worker process and the
//	    efficiency (speed-up / workers);
//	(c) a backfill of 100,000 windows (one task each): windows committed
//	    per second by tenth of the backfill, the coordinator's resident
//	    memory and its Raft snapshots' sizes as it goes.
//
// The benchmark's connector kind (scale_bench) is registered only in its
// own processes: the command re-executes itself as the coordinator and as
// each worker. Run it with `make bench-scale`; --smoke runs it at a small
// size (`make bench-smoke`), checking each run's output as a full run does.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/bench/harness"
)

// Targets of issue 19 item 4.
const (
	targetTasksPerSec = 5000 // no-op tasks committed per second
	targetFlat        = 0.2  // the spread of that rate from the smallest to the largest run
	targetEfficiency  = 0.8  // speed-up / workers for I/O-bound tasks
)

type config struct {
	smoke        bool
	out          string
	dir          string
	workers      string
	slots        int
	tasks        int
	sizes        string
	sizeWorkers  int
	ioTasks      int
	ioBytes      int64
	ioRate       int64
	ioSlots      int
	windows      int
	concurrency  int
	bfWorkers    int
	only         string
	cpuProfile   string
	reps         int
	workerCounts []int
	sizeCounts   []int
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == childArg {
		if err := childMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "scale:", err)
			os.Exit(1)
		}
		return
	}
	var cfg config
	flag.BoolVar(&cfg.smoke, "smoke", false, "a small run (make bench-smoke): 1 and 2 workers, runs of 200 to 2,000 no-op tasks, 16 I/O tasks, a backfill of 200 windows, results in a temporary file; flags given override it")
	flag.StringVar(&cfg.out, "out", "bench/results/scale.json", "where to write the results (JSON)")
	flag.StringVar(&cfg.dir, "dir", "", "work directory (default: a temporary one, removed)")
	flag.StringVar(&cfg.workers, "workers", "1,2,4,8", "(a), (b): the worker process counts measured")
	flag.IntVar(&cfg.slots, "slots", 8, "(a), (c): task slots per worker process")
	flag.IntVar(&cfg.tasks, "tasks", 10000, "(a): no-op tasks of the run measured for each worker count")
	flag.StringVar(&cfg.sizes, "sizes", "1000,10000,100000", "(a): no-op tasks of the runs measured by size")
	flag.IntVar(&cfg.sizeWorkers, "size-workers", 4, "(a): worker processes of the runs measured by size")
	flag.IntVar(&cfg.ioTasks, "io-tasks", 256, "(b): tasks of each I/O-bound run")
	flag.Int64Var(&cfg.ioBytes, "io-bytes", 256<<10, "(b): bytes each I/O-bound task reads")
	flag.Int64Var(&cfg.ioRate, "io-rate", 1<<20, "(b): bytes per second each I/O-bound task reads at")
	flag.IntVar(&cfg.ioSlots, "io-slots", 4, "(b): task slots per worker process")
	flag.IntVar(&cfg.windows, "windows", 100000, "(c): windows of the backfill (at most 100,000)")
	flag.IntVar(&cfg.concurrency, "concurrency", 64, "(c): windows of the backfill loading at once")
	flag.IntVar(&cfg.bfWorkers, "backfill-workers", 4, "(c): worker processes")
	flag.StringVar(&cfg.only, "only", "", `"control", "data" or "backfill": run only that part`)
	flag.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of the coordinator process of (a) to FILE.control.pprof and of (c) to FILE.backfill.pprof")
	flag.IntVar(&cfg.reps, "reps", 1, "(a): repetitions of each measurement; the best counts")
	flag.Parse()
	if cfg.smoke {
		err := harness.Smoke(flag.CommandLine, "scale", map[string]string{
			"workers": "1,2", "tasks": "500", "sizes": "200,2000", "size-workers": "2",
			"io-tasks": "16", "io-bytes": "32768", "io-rate": "262144", "windows": "200", "concurrency": "16", "backfill-workers": "2",
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "scale:", err)
			os.Exit(2)
		}
	}
	var err error
	if cfg.workerCounts, err = counts(cfg.workers); err == nil {
		cfg.sizeCounts, err = counts(cfg.sizes)
	}
	switch {
	case err != nil:
	case cfg.only != "" && cfg.only != "control" && cfg.only != "data" && cfg.only != "backfill":
		err = fmt.Errorf(`--only must be "control", "data" or "backfill"`)
	case cfg.slots < 1 || cfg.tasks < 1 || cfg.sizeWorkers < 1 || cfg.ioTasks < 1 || cfg.ioBytes < 1 || cfg.ioRate < 1 || cfg.ioSlots < 1 ||
		cfg.windows < 1 || cfg.windows > 100000 || cfg.concurrency < 1 || cfg.concurrency > 64 || cfg.bfWorkers < 1 || cfg.reps < 1:
		err = fmt.Errorf("want positive sizes, at most 100,000 windows and a concurrency of 1 to 64")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

// counts parses a comma-separated list of positive numbers.
func counts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q: want positive numbers separated by commas", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func run(ctx context.Context, cfg config, stdout io.Writer) error {
	began := time.Now()
	res := results{Header: harness.NewHeader("scale", cfg.smoke,
		"shared, noisy machine (2 cores; other processes ran meanwhile: see the load average): trust the ratios to the same-run limits more than the absolute figures"),
		Cluster: map[string]any{"nats": "embedded, one server in the benchmark's process", "coordinators": "1 process (single-node Raft)",
			"workers": "separate processes"}}
	dir, cleanup, err := workDir(cfg.dir)
	if err != nil {
		return err
	}
	defer cleanup()
	if cfg.only == "" || cfg.only == "control" {
		cp, err := controlPlane(ctx, cfg, dir, stdout)
		if err != nil {
			return fmt.Errorf("(a) control plane: %w", err)
		}
		res.Control = cp
	}
	if cfg.only == "" || cfg.only == "data" {
		dp, err := dataPlane(ctx, cfg, dir, stdout)
		if err != nil {
			return fmt.Errorf("(b) data plane: %w", err)
		}
		res.Data = dp
	}
	if cfg.only == "" || cfg.only == "backfill" {
		bf, err := backfill(ctx, cfg, dir, stdout)
		if err != nil {
			return fmt.Errorf("(c) backfill: %w", err)
		}
		res.Backfill = bf
	}
	return writeResults(cfg, stdout, res, began)
}
