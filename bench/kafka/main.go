// Command kafka benchmarks the Kafka connector against bare franz-go loops
// a user would otherwise write, all in the same run on the same topic of an
// in-process Kafka cluster (kfake, one broker on loopback):
//
//	(a) bare franz-go: consume the topic, decode each JSON value, write one
//	    Parquet file (pqarrow, zstd)                 baseline of (b)
//	(b) Sluice Kafka -> Parquet files                a full load through an
//	                                                 all-in-one cluster
//	(c) bare franz-go: consume the topic and produce each record to another
//	    topic in one transaction                     baseline of (d)
//	(d) Sluice Kafka -> Kafka                        a full load, the sink's
//	                                                 run in one transaction
//	(e) Sluice Kafka -> Kafka passthrough            records as they are,
//	                                                 partition to partition,
//	                                                 a task a partition, in
//	                                                 transactions of
//	                                                 --records-per-task with
//	                                                 the source offsets;
//	                                                 baseline (c)
//
// The topic holds --records JSON records over --partitions partitions. Each
// measurement runs --reps times interleaved and the best time counts; every
// output is checked (row counts, and the Sluice files' checksum against the
// run's). It prints records/s and each ratio to its baseline and writes the
// figures to --out. Run it with `make bench-kafka`; --smoke runs it at a
// small size with the same checks (`make bench-smoke`).
//
// kfake keeps everything in memory and answers at once: the figures say how
// much CPU the connector spends per record beside franz-go alone on the
// same machine, not what a real cluster sustains.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/kafka"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// Targets of issue 15 item 8.
const (
	targetParquet = 0.8 // Sluice Kafka -> Parquet vs a bare consume loop writing Parquet
	targetKafka   = 0.8 // Sluice Kafka -> Kafka vs a bare consume-and-produce loop
)

// The topics.
const (
	srcTopic        = "bench-src"
	bareOutTopic    = "bench-bare-out"
	sluiceOutTopic  = "bench-sluice-out"
	passOutTopic    = "bench-pass-out"
	parquetPipeline = "bench-kafka-parquet"
	kafkaPipeline   = "bench-kafka-kafka"
	passPipeline    = "bench-kafka-pass"
)

type config struct {
	smoke      bool
	records    int64
	partitions int
	reps       int
	out        string
	dir        string
	workers    int
	slots      int
	perTask    int64
	cpuProfile string
	only       string
}

func main() {
	var cfg config
	flag.BoolVar(&cfg.smoke, "smoke", false, "a small run (make bench-smoke): 20k records, 1 rep, 5k records a task, results in a temporary file; flags given override it")
	flag.Int64Var(&cfg.records, "records", 2_000_000, "records in the source topic")
	flag.IntVar(&cfg.partitions, "partitions", 6, "partitions of the source topic")
	flag.IntVar(&cfg.reps, "reps", 2, "repetitions of each measurement; the best counts")
	flag.StringVar(&cfg.out, "out", "bench/results/kafka.json", "where to write the results (JSON)")
	flag.StringVar(&cfg.dir, "dir", "", "work directory for the Parquet outputs (default: a temporary one, removed)")
	flag.IntVar(&cfg.workers, "workers", 2, "Sluice workers")
	flag.IntVar(&cfg.slots, "slots", 2, "task slots per worker")
	flag.Int64Var(&cfg.perTask, "records-per-task", 250_000, "records_per_task of the Sluice source")
	flag.StringVar(&cfg.only, "only", "", "run only these measurements, by letter (\"c,e\": the bare consume-and-produce loop and the passthrough); default all")
	flag.StringVar(&cfg.cpuProfile, "cpuprofile", "", "after the timed runs, profile one more run of each Sluice load into FILE.parquet.pprof, FILE.kafka.pprof and FILE.pass.pprof")
	flag.Parse()
	if cfg.smoke {
		err := harness.Smoke(flag.CommandLine, "kafka", map[string]string{"records": "20000", "reps": "1", "records-per-task": "5000"})
		if err != nil {
			fmt.Fprintln(os.Stderr, "kafka:", err)
			os.Exit(2)
		}
	}
	if cfg.records < 1 || cfg.partitions < 1 || cfg.reps < 1 || cfg.workers < 1 || cfg.slots < 1 || cfg.perTask < 1 {
		fmt.Fprintln(os.Stderr, "kafka: --records, --partitions, --reps, --workers, --slots and --records-per-task must be at least 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, cfg, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kafka:", err)
		os.Exit(1)
	}
}

// bench holds what the measurements share.
type bench struct {
	cfg     config
	stdout  io.Writer
	brokers []string
	cl      *kgo.Client // setup and verification
	ms      map[string]*measurement
	// srcBytes is the size of the source's values.
	srcBytes int64
	// bareParquet is the file of (a), sluiceParquet the dataset of (b).
	bareParquet, sluiceParquet string
	// passes counts the passthrough pipelines of (e): each rep applies a
	// new one, as a passthrough copies only what is new since its last run.
	passes int
	reg    *connectors.Registry
}

func run(ctx context.Context, cfg config, stdout io.Writer) error {
	hdr := harness.NewHeader("kafka", cfg.smoke,
		fmt.Sprintf("shared, noisy machine (2 cores, other builds and tests running): best of %d interleaved repetitions; kfake in process, so every figure includes the broker's CPU on the same cores; trust the ratios more than the absolute figures", cfg.reps))
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(cfg.partitions), srcTopic, bareOutTopic, sluiceOutTopic, passOutTopic))
	if err != nil {
		return fmt.Errorf("start kfake: %w", err)
	}
	defer kc.Close()
	b := &bench{cfg: cfg, stdout: stdout, brokers: kc.ListenAddrs()}
	if b.cl, err = kgo.NewClient(kgo.SeedBrokers(b.brokers...)); err != nil {
		return err
	}
	defer b.cl.Close()
	fmt.Fprintf(stdout, "producing %d records over %d partitions ... ", cfg.records, cfg.partitions)
	if b.srcBytes, err = b.fill(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%.1f MB of values\n", float64(b.srcBytes)/1e6)

	dir := cfg.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "sluice-bench-kafka-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	b.bareParquet = filepath.Join(dir, "bare.parquet")
	b.sluiceParquet = filepath.Join(dir, "sluice-parquet")
	b.ms = map[string]*measurement{
		"bare_consume_to_parquet":  {Key: "bare_consume_to_parquet", Label: "(a) franz-go consume loop -> one Parquet file (pqarrow, zstd)"},
		"sluice_kafka_to_parquet":  {Key: "sluice_kafka_to_parquet", Label: "(b) Sluice Kafka -> Parquet files (full load)", Baseline: "bare_consume_to_parquet", Target: targetParquet},
		"bare_consume_produce":     {Key: "bare_consume_produce", Label: "(c) franz-go consume loop -> produce, one transaction"},
		"sluice_kafka_to_kafka":    {Key: "sluice_kafka_to_kafka", Label: "(d) Sluice Kafka -> Kafka (full load, one transaction)", Baseline: "bare_consume_produce", Target: targetKafka},
		"sluice_kafka_passthrough": {Key: "sluice_kafka_passthrough", Label: "(e) Sluice Kafka -> Kafka passthrough (transactions per partition, offsets in them)", Baseline: "bare_consume_produce", Target: targetKafka},
	}

	reg := connectors.NewRegistry()
	files.Register(reg)
	kafka.Register(reg)
	b.reg = reg
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return devcluster.Run(ctx, devcluster.Config{
		DataDir: filepath.Join(dir, "cluster"), Workers: cfg.workers, Slots: cfg.slots,
		Log: log, Tracer: noop.NewTracerProvider(), Registry: reg,
	}, func(ctx context.Context, c *devcluster.Cluster) error {
		// The Parquet load declares the values' columns (typed rows), as
		// the bare loop's schema has them; the load into Kafka moves the
		// JSON values as they are, so it declares none.
		source := fmt.Sprintf("source: {kind: kafka, brokers: [%q], topic: %s, records_per_task: %d}\n", b.brokers[0], srcTopic, cfg.perTask)
		typed := strings.Replace(source, "}\n", ", columns: "+columnsYAML+"}\n", 1)
		for _, text := range []string{
			"name: " + parquetPipeline + "\npattern: full_load\n" + typed +
				fmt.Sprintf("sink: {kind: files, path: %q, format: parquet, keep_versions: 1}\n", b.sluiceParquet),
			"name: " + kafkaPipeline + "\npattern: full_load\n" + source +
				fmt.Sprintf("sink: {kind: kafka, brokers: [%q], topic: %s, key: [id]}\n", b.brokers[0], sluiceOutTopic),
		} {
			spec, err := pipeline.Load([]byte(text), "bench", reg, os.LookupEnv)
			if err != nil {
				return err
			}
			if _, err := c.Client.Apply(ctx, spec); err != nil {
				return fmt.Errorf("apply %s: %w", spec.Name, err)
			}
		}
		fmt.Fprintf(stdout, "cluster: embedded NATS, 1 coordinator, %d workers x %d slots; %d records a task\n", cfg.workers, cfg.slots, cfg.perTask)
		for rep := 1; rep <= cfg.reps; rep++ {
			fmt.Fprintf(stdout, "rep %d/%d:", rep, cfg.reps)
			for i, step := range []func(context.Context, *devcluster.Cluster) error{b.bareParquetLoop, b.sluiceToParquet, b.bareProduceLoop, b.sluiceToKafka, b.sluicePassthrough} {
				if cfg.only != "" && !strings.Contains(cfg.only, string(rune('a'+i))) {
					continue
				}
				if err := step(ctx, c); err != nil {
					return err
				}
			}
			fmt.Fprintln(stdout)
		}
		hdr.Finish()
		if err := writeResults(cfg, stdout, hdr, b.ms, b.srcBytes); err != nil {
			return err
		}
		if cfg.cpuProfile != "" {
			for _, p := range []struct{ pipeline, file string }{{parquetPipeline, ".parquet.pprof"}, {kafkaPipeline, ".kafka.pprof"}} {
				if err := profileRun(ctx, c, p.pipeline, cfg.cpuProfile+p.file); err != nil {
					return err
				}
				fmt.Fprintf(stdout, "profile of one more %s run (not timed): %s\n", p.pipeline, cfg.cpuProfile+p.file)
			}
			if err := profile(cfg.cpuProfile+".pass.pprof", func() error { return b.sluicePassthrough(ctx, c) }); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "\nprofile of one more passthrough run (not timed): %s\n", cfg.cpuProfile+".pass.pprof")
		}
		return nil
	})
}

// timed runs fn and records its wall time and this process's CPU (the
// cluster, kfake and the loops all run in it) into m.
func timed(m *measurement, fn func() error) (float64, error) {
	runtime.GC()
	cpu0 := measure.SelfCPU()
	start := time.Now()
	if err := fn(); err != nil {
		return 0, err
	}
	secs := time.Since(start).Seconds()
	m.add(secs, measure.SelfCPU()-cpu0)
	return secs, nil
}

// profileRun records a CPU profile of one run of a pipeline into path.
func profileRun(ctx context.Context, c *devcluster.Cluster, name, path string) error {
	return profile(path, func() error {
		_, err := runPipeline(ctx, c, name)
		return err
	})
}

// profile records a CPU profile of fn into path.
func profile(path string, fn func() error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	defer pprof.StopCPUProfile()
	return fn()
}

// runPipeline runs a pipeline and waits for its commit.
func runPipeline(ctx context.Context, c *devcluster.Cluster, name string) (protocol.RunStatus, error) {
	res, err := c.Client.Run(ctx, protocol.RunRequest{Pipeline: name})
	if err != nil {
		return protocol.RunStatus{}, fmt.Errorf("run %s: %w", name, err)
	}
	st, err := c.Client.WaitRun(ctx, res.RunID, 20*time.Millisecond, nil)
	if err != nil {
		return st, err
	}
	if st.State != protocol.RunCommitted {
		return st, fmt.Errorf("run %s %s: %s", st.RunID, st.State, st.Error)
	}
	return st, nil
}
