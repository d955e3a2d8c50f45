// Command cdc benchmarks Sluice's PostgreSQL change capture (the
// connectors/pgcdc Reader) beside bare pglogrepl loops, in the same run on
// the same WAL:
//
//	(a) bare pglogrepl loop: START_REPLICATION (pgoutput, proto_version 1),
//	    pglogrepl.Parse of every XLogData, a count of the inserts, updates
//	    and deletes, standby status updates     baseline of (b)
//	(b) Sluice pgcdc Reader -> JetStream: every change encoded as a
//	    protocol.ChangeEvent, the events of one table in one transaction
//	    packed into SLUICE_CDC messages (file storage) on an embedded NATS
//	    server, until JetStream stored every event
//	(c) the bare loop of (a) also publishing the raw pgoutput messages of
//	    the changes to SLUICE_CDC, packed as the Reader packs its events
//	    (async, same headers): the floor of this design of a pgoutput ->
//	    JetStream path on this machine
//	(d) the same with one message per change, as the Reader published
//	    before it packed (--no-unpacked skips it): what packing saves
//	latency: the Reader streaming live while single-row INSERT
//	    transactions arrive at a steady rate, from the return of each
//	    COMMIT to the event's arrival at an ordered consumer of the stream
//	    (and at a core NATS subscriber); then the same load decoded by a
//	    bare loop, its baseline
//
// For (a) to (d) it creates a 6-column table in the schema --schema
// (sluice_bench_cdc), a publication and a template slot, then generates the
// workload (--inserts, then --updates, then --deletes, in transactions of
// --tx-rows rows). Each measurement decodes its own copy of the template
// slot (pg_copy_logical_replication_slot), so all decode the same WAL,
// one after the other, --reps times in rotating order; the best time of
// each counts (the machine is shared). A message of SLUICE_CDC holds one or
// more events (its Sluice-Events header counts them), so the clock of (b)
// and (c) stops when the headers of the stored messages, followed by a
// headers-only consumer, add up to the workload's change count; after each
// run every message is read back and checked: every change of every
// transaction exactly once. --replicas 3 runs three JetStream servers in
// this process, clustered on loopback, with SLUICE_CDC replicated on them
// (each publish then waits for a round trip between servers); --no-batches
// makes the Reader publish one message at a time there, as it did before
// it gathered messages into atomic batches: with --tx-rows 1 the pair
// shows what batching lifts. It prints changes/s, MB/s of WAL, CPU per
// change, messages and events per message, the ratios and the latency
// percentiles, and writes every figure to --out. Slots, the publication
// and the schema are dropped at the end, also on error; a run waits for
// another on the same schema and database to end. Run it with `make
// bench-cdc`; --smoke runs it at a small size with the same checks (`make
// bench-smoke`).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

const (
	// tableName is the source table in the benchmark's schema.
	tableName = "cdc_src"
	// The pipelines (subject tokens) of the throughput and latency events.
	pipelineThroughput = "bench-cdc"
	pipelineLatency    = "bench-cdc-lat"
)

// Targets of the CDC issue on a 2-core machine.
const (
	targetRatio = 0.9 // Sluice Reader vs the bare pglogrepl loop
	targetP99Ms = 50  // commit to JetStream, p99
)

type config struct {
	smoke                     bool
	schema                    string
	inserts, updates, deletes int64
	txRows                    int64
	reps                      int
	out                       string
	dsn                       string
	rate                      int
	duration                  time.Duration
	conns                     int
	drain                     time.Duration
	timeout                   time.Duration
	cpuProfile                string
	skipLatency               bool
	skipThroughput            bool
	skipLatencyBaseline       bool
	skipUnpacked              bool
	maxInFlight               int
	messageEvents             int
	replicas                  int
	noBatches                 bool
}

// srcTable is the source table, schema-qualified.
func (c config) srcTable() string { return c.schema + "." + tableName }

// publication is the publication of the source table.
func (c config) publication() string { return c.schema + "_pub" }

// slotPrefix starts the name of every slot the benchmark creates; an
// inactive slot with it is a leftover of a killed run and is dropped at the
// start.
func (c config) slotPrefix() string { return c.schema + "_" }

// msgEvents is the most events (changes, in (c)) of one message: the
// Readers' MessageEvents.
func (c config) msgEvents() int {
	if c.messageEvents == 0 {
		return pgcdc.DefaultMessageEvents
	}
	return c.messageEvents
}

func main() {
	var cfg config
	flag.BoolVar(&cfg.smoke, "smoke", false, "a small run (make bench-smoke): 40k changes, 1 rep, 2 s of latency, schema sluice_bench_smoke_cdc, results in a temporary file; flags given override it")
	flag.StringVar(&cfg.schema, "schema", "sluice_bench_cdc", "the schema the benchmark creates and drops; it also names the publication and the slots")
	flag.Int64Var(&cfg.inserts, "inserts", 100_000, "rows inserted by the throughput workload")
	flag.Int64Var(&cfg.updates, "updates", 50_000, "rows then updated (at most --inserts)")
	flag.Int64Var(&cfg.deletes, "deletes", 50_000, "rows then deleted (at most --inserts)")
	flag.Int64Var(&cfg.txRows, "tx-rows", 100, "rows per transaction of the throughput workload")
	flag.IntVar(&cfg.reps, "reps", 5, "repetitions of each throughput measurement, interleaved, each on its own copy of the slot; the best counts")
	flag.StringVar(&cfg.out, "out", "bench/results/cdc.json", "where to write the results (JSON)")
	flag.StringVar(&cfg.dsn, "dsn", pgtest.DSN(), "PostgreSQL to use ($SLUICE_TEST_PG)")
	flag.IntVar(&cfg.rate, "rate", 500, "latency: single-row INSERT transactions per second")
	flag.DurationVar(&cfg.duration, "duration", 20*time.Second, "latency: how long to insert")
	flag.IntVar(&cfg.conns, "conns", 4, "latency: connections the inserts are spread over")
	flag.DurationVar(&cfg.drain, "drain", 10*time.Second, "latency: how long to wait for the last events after the last commit")
	flag.DurationVar(&cfg.timeout, "timeout", 5*time.Minute, "bound of each throughput decode")
	flag.StringVar(&cfg.cpuProfile, "cpuprofile", "", "after the timed runs, profile one more (untimed) Reader decode of the workload into FILE")
	flag.IntVar(&cfg.maxInFlight, "max-in-flight", 0, "the Readers' MaxInFlight (0: the Reader's default)")
	flag.IntVar(&cfg.messageEvents, "message-events", 0, "the Readers' MessageEvents, and the most changes of a message in (c) (0: the Reader's default, 1000)")
	flag.IntVar(&cfg.replicas, "replicas", 1, "NATS servers, clustered in this process, and SLUICE_CDC's replicas (1: one embedded server)")
	flag.BoolVar(&cfg.noBatches, "no-batches", false, "the Readers' NoBatches: one message at a time also on a replicated SLUICE_CDC (the Reader before atomic batches)")
	flag.BoolVar(&cfg.skipLatency, "no-latency", false, "skip the latency measurement")
	flag.BoolVar(&cfg.skipLatencyBaseline, "no-latency-baseline", false, "skip the latency of the bare pglogrepl loop")
	flag.BoolVar(&cfg.skipThroughput, "no-throughput", false, "skip the throughput measurements")
	flag.BoolVar(&cfg.skipUnpacked, "no-unpacked", false, "skip (d), the bare loop publishing one message per change")
	flag.Parse()
	if cfg.smoke {
		err := harness.Smoke(flag.CommandLine, "cdc", map[string]string{
			"schema": "sluice_bench_smoke_cdc", "inserts": "20000", "updates": "10000", "deletes": "10000",
			"reps": "1", "rate": "200", "duration": "2s", "timeout": "2m",
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "cdc:", err)
			os.Exit(2)
		}
	}
	if err := harness.CheckSchema(cfg.schema); err != nil {
		fmt.Fprintln(os.Stderr, "cdc: --schema:", err)
		os.Exit(2)
	}
	if cfg.inserts < 1 || cfg.updates < 0 || cfg.deletes < 0 || cfg.updates > cfg.inserts || cfg.deletes > cfg.inserts ||
		cfg.txRows < 1 || cfg.reps < 1 || cfg.rate < 1 || cfg.conns < 1 || cfg.duration <= 0 || cfg.messageEvents < 0 || cfg.replicas < 1 {
		fmt.Fprintln(os.Stderr, "cdc: --inserts, --tx-rows, --reps, --rate, --conns and --duration must be positive; --updates and --deletes between 0 and --inserts; --message-events not negative")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, cfg, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cdc:", err)
		os.Exit(1)
	}
}

// bench holds what the measurements share.
type bench struct {
	cfg    config
	stdout io.Writer
	log    *slog.Logger
	conn   *pgx.Conn // setup, workload and cleanup
	js     jetstream.JetStream
	stream jetstream.Stream
	// mon watches the stream on a connection of its own, so that its
	// requests do not queue behind the Reader's publishes.
	mon   jetstream.Stream
	slots []string // created by this run, dropped at the end
}

// run sets up the benchmark (its schema, an embedded NATS server), runs
// the measurements cfg asks for, and writes the results.
func run(ctx context.Context, cfg config, stdout io.Writer) error {
	began := time.Now()
	hdr := harness.NewHeader("cdc", cfg.smoke, fmt.Sprintf("shared, noisy machine: throughput is the best of %d interleaved repetitions, "+
		"each decoding the same WAL from its own copy of one slot; trust the ratio more than the absolute figures", cfg.reps))
	conn, err := pgx.Connect(ctx, cfg.dsn)
	if err != nil {
		return fmt.Errorf("connect to %s (run `make services`): %w", cfg.dsn, err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&hdr.PostgreSQL); err != nil {
		return err
	}
	if err := harness.Lock(ctx, conn, cfg.schema, stdout); err != nil {
		return err
	}
	b := &bench{cfg: cfg, stdout: stdout, conn: conn,
		log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if err := b.dropLeftovers(ctx); err != nil {
		return err
	}
	defer b.cleanup()
	if err := b.createTable(ctx); err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "sluice-bench-cdc-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := startNATS(dir, cfg.replicas)
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		return err
	}
	defer nc.Close()
	if b.js, err = jetstream.New(nc); err != nil {
		return err
	}
	if err := ensureStream(ctx, b.js, cfg.replicas); err != nil {
		return err
	}
	if b.stream, err = b.js.Stream(ctx, protocol.StreamCDC); err != nil {
		return err
	}
	monNC, err := nats.Connect(srv.URL())
	if err != nil {
		return err
	}
	defer monNC.Close()
	monJS, err := jetstream.New(monNC)
	if err != nil {
		return err
	}
	if b.mon, err = monJS.Stream(ctx, protocol.StreamCDC); err != nil {
		return err
	}

	res := results{
		Header: hdr, Reps: cfg.reps, MaxInFlight: cfg.maxInFlight,
		NATS: map[string]any{"server": natsDescription(cfg.replicas), "stream": protocol.StreamCDC,
			"storage": "file", "replicas": cfg.replicas, "reader_batches": !cfg.noBatches && cfg.replicas > 1},
		Packing: map[string]any{
			"unit":       "one transaction's consecutive changes of one table, in change order",
			"max_events": cfg.msgEvents(), "max_bytes": pgcdc.MaxMessageBytes,
			"events": "the encoded protocol.ChangeEvents joined by '\\n' (the Reader's packing)",
			"raw":    "each pgoutput message after its length (4 bytes, big-endian), in (c) and (d)",
		},
	}
	if !cfg.skipThroughput {
		if err := b.throughput(ctx, &res); err != nil {
			return err
		}
	}
	if !cfg.skipLatency {
		lat, err := b.latency(ctx)
		if err != nil {
			return err
		}
		res.Latency = lat
		res.Targets = append(res.Targets, target{Name: "latency: commit -> stored event, p99", Want: fmt.Sprintf("< %d ms", targetP99Ms),
			Value: lat.Stored.P99, Met: lat.Stored.P99 < targetP99Ms && lat.StoredMissing == 0})
	}
	res.Finish()
	res.TotalSeconds = measure.Round(time.Since(began).Seconds(), 1)
	return writeResults(cfg, stdout, res)
}

// natsDescription says what NATS servers a run used.
func natsDescription(replicas int) string {
	if replicas <= 1 {
		return "embedded (embednats), in this process"
	}
	return fmt.Sprintf("%d JetStream servers in this process, clustered on loopback", replicas)
}
