// Command cdc benchmarks Sluice's PostgreSQL change capture (the
// connectors/pgcdc Reader) beside bare pglogrepl loops, in the same run on
// the same WAL:
//
//	(a) bare pglogrepl loop: START_REPLICATION (pgoutput, proto_version 1),
//	    pglogrepl.Parse of every XLogData, a count of the inserts, updates
//	    and deletes, standby status updates     baseline of (b)
//	(b) Sluice pgcdc Reader -> JetStream: every change encoded as a
//	    protocol.ChangeEvent and published to SLUICE_CDC (file storage) on
//	    an embedded NATS server, until JetStream stored every event
//	(c) the bare loop of (a) also publishing each raw pgoutput message to
//	    SLUICE_CDC as the Reader publishes (async, same headers): the floor
//	    of any pgoutput -> JetStream path on this machine
//	latency: the Reader streaming live while single-row INSERT
//	    transactions arrive at a steady rate, from the return of each
//	    COMMIT to the event's arrival at an ordered consumer of the stream
//	    (and at a core NATS subscriber); then the same load decoded by a
//	    bare loop, its baseline
//
// For (a) to (c) it creates a 6-column table in the schema
// sluice_bench_cdc, a publication and a template slot, then generates the
// workload (--inserts, then --updates, then --deletes, in transactions of
// --tx-rows rows). Each measurement decodes its own copy of the template
// slot (pg_copy_logical_replication_slot), so all decode the same WAL,
// one after the other, --reps times in rotating order; the best time of
// each counts (the machine is shared). It prints changes/s, MB/s of WAL,
// CPU per change, the ratios and the latency percentiles, and writes every
// figure to --out. Slots, the publication and the schema are dropped at
// the end, also on error. Run it with `make bench-cdc`.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/embednats"
	"github.com/sluicehq/sluice/protocol"
)

const (
	schema      = "sluice_bench_cdc"
	tableName   = "cdc_src"
	srcTable    = schema + "." + tableName
	publication = "sluice_bench_cdc_pub"
	// slotPrefix starts the name of every slot the benchmark creates; an
	// inactive slot with it is a leftover of a killed run and is dropped at
	// the start.
	slotPrefix = "sluice_bench_cdc_"
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
	maxInFlight               int
}

func main() {
	var cfg config
	flag.Int64Var(&cfg.inserts, "inserts", 100_000, "rows inserted by the throughput workload")
	flag.Int64Var(&cfg.updates, "updates", 50_000, "rows then updated (at most --inserts)")
	flag.Int64Var(&cfg.deletes, "deletes", 50_000, "rows then deleted (at most --inserts)")
	flag.Int64Var(&cfg.txRows, "tx-rows", 100, "rows per transaction of the throughput workload")
	flag.IntVar(&cfg.reps, "reps", 3, "repetitions of each throughput measurement, interleaved, each on its own copy of the slot; the best counts")
	flag.StringVar(&cfg.out, "out", "bench/results/cdc.json", "where to write the results (JSON)")
	flag.StringVar(&cfg.dsn, "dsn", pgtest.DSN(), "PostgreSQL to use ($SLUICE_TEST_PG)")
	flag.IntVar(&cfg.rate, "rate", 500, "latency: single-row INSERT transactions per second")
	flag.DurationVar(&cfg.duration, "duration", 20*time.Second, "latency: how long to insert")
	flag.IntVar(&cfg.conns, "conns", 4, "latency: connections the inserts are spread over")
	flag.DurationVar(&cfg.drain, "drain", 10*time.Second, "latency: how long to wait for the last events after the last commit")
	flag.DurationVar(&cfg.timeout, "timeout", 5*time.Minute, "bound of each throughput decode")
	flag.StringVar(&cfg.cpuProfile, "cpuprofile", "", "after the timed runs, profile one more (untimed) Reader decode of the workload into FILE")
	flag.IntVar(&cfg.maxInFlight, "max-in-flight", 0, "the Readers' MaxInFlight (0: the Reader's default)")
	flag.BoolVar(&cfg.skipLatency, "no-latency", false, "skip the latency measurement")
	flag.BoolVar(&cfg.skipLatencyBaseline, "no-latency-baseline", false, "skip the latency of the bare pglogrepl loop")
	flag.BoolVar(&cfg.skipThroughput, "no-throughput", false, "skip the throughput measurements")
	flag.Parse()
	if cfg.inserts < 1 || cfg.updates < 0 || cfg.deletes < 0 || cfg.updates > cfg.inserts || cfg.deletes > cfg.inserts ||
		cfg.txRows < 1 || cfg.reps < 1 || cfg.rate < 1 || cfg.conns < 1 || cfg.duration <= 0 {
		fmt.Fprintln(os.Stderr, "cdc: --inserts, --tx-rows, --reps, --rate, --conns and --duration must be positive; --updates and --deletes between 0 and --inserts")
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

// measurement is one timed decode of the workload, repeated.
type measurement struct {
	Label string `json:"label"`
	// EndCondition says when the clock stopped.
	EndCondition string `json:"end_condition"`
	// Seconds are the wall times of each repetition.
	Seconds       []float64 `json:"seconds"`
	BestSeconds   float64   `json:"best_seconds"`
	ChangesPerSec float64   `json:"changes_per_sec"`
	WALMBPerSec   float64   `json:"wal_mb_per_sec"`
	// ClientCPU is this process's CPU time in the best repetition (for
	// Sluice: the Reader and the embedded NATS server); ServerCPU is
	// PostgreSQL's, when readable from /proc: every server process, so
	// other sessions on a shared server count too.
	ClientCPU          float64 `json:"client_cpu_seconds"`
	ClientCPUPerChange float64 `json:"client_cpu_us_per_change"`
	ServerCPU          float64 `json:"server_cpu_seconds,omitempty"`
	// StreamBytes is what SLUICE_CDC stored (messages with their subjects
	// and headers), for the measurements that publish.
	StreamBytes int64 `json:"stream_bytes,omitempty"`
	// ConfirmedSeconds (Sluice only) is when, in the best repetition,
	// Reader.Status().ConfirmedLSN reached the end of the last transaction:
	// every ack seen by the Reader, the slot confirmable.
	ConfirmedSeconds float64 `json:"confirmed_seconds,omitempty"`
	Verified         string  `json:"verified"`
	cpu              []cpuUse
	confirmed        []float64
}

type cpuUse struct{ client, server float64 }

func (m *measurement) add(r decodeResult) {
	m.Seconds = append(m.Seconds, measure.Round(r.secs, 3))
	m.cpu = append(m.cpu, r.cpu)
	m.confirmed = append(m.confirmed, r.confirmed)
	if r.streamBytes > 0 {
		m.StreamBytes = r.streamBytes
	}
}

func (m *measurement) finish(changes, walBytes int64) {
	i := 0
	for j, s := range m.Seconds {
		if s < m.Seconds[i] {
			i = j
		}
	}
	m.BestSeconds = m.Seconds[i]
	m.ChangesPerSec = measure.Round(float64(changes)/m.BestSeconds, 0)
	m.WALMBPerSec = measure.Round(float64(walBytes)/1e6/m.BestSeconds, 2)
	m.ClientCPU, m.ServerCPU = measure.Round(m.cpu[i].client, 2), measure.Round(m.cpu[i].server, 2)
	m.ClientCPUPerChange = measure.Round(m.cpu[i].client/float64(changes)*1e6, 1)
	m.ConfirmedSeconds = measure.Round(m.confirmed[i], 3)
}

type workload struct {
	Table        string  `json:"table"`
	Columns      int     `json:"columns"`
	Inserts      int64   `json:"inserts"`
	Updates      int64   `json:"updates"`
	Deletes      int64   `json:"deletes"`
	TxRows       int64   `json:"rows_per_transaction"`
	Transactions int64   `json:"transactions"`
	Changes      int64   `json:"changes"`
	WALBytes     int64   `json:"wal_bytes"`
	StartLSN     string  `json:"start_lsn"`
	EndLSN       string  `json:"end_lsn"`
	Seconds      float64 `json:"generate_seconds"`
}

// percentiles are in milliseconds.
type percentiles struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
	// Negative counts events that arrived before the client saw its
	// COMMIT return (the walsender is woken by the WAL flush, before the
	// backend answers): they count as their measured (negative) latency.
	Negative int `json:"negative,omitempty"`
}

type latency struct {
	Definition  string  `json:"definition"`
	Rate        int     `json:"rate_per_sec"`
	AchievedTPS float64 `json:"achieved_tx_per_sec"`
	Seconds     float64 `json:"seconds"`
	Conns       int     `json:"connections"`
	Sent        int     `json:"transactions"`
	// Stored: COMMIT returned -> the event delivered by an ordered consumer
	// of SLUICE_CDC (stored by JetStream first, so after the ack JetStream
	// sends the Reader): the headline figure, an upper bound of
	// commit-to-ack.
	Stored        percentiles `json:"commit_to_stored_event"`
	StoredMissing int         `json:"stored_missing"`
	// Published: COMMIT returned -> the event at a core NATS subscriber of
	// the subject (the server routes it there as it hands it to the
	// stream, before storing it): a lower bound of commit-to-ack.
	Published        percentiles `json:"commit_to_published_event"`
	PublishedMissing int         `json:"published_missing"`
	// Commit is how long each INSERT (autocommit) took at the client.
	Commit percentiles `json:"commit_duration"`
	// BareDecode: COMMIT returned -> the change decoded by a bare pglogrepl
	// loop on its own slot, under the same load just after: what
	// PostgreSQL and the machine cost without Sluice or JetStream.
	BareDecode        percentiles `json:"commit_to_bare_decode,omitempty"`
	BareDecodeMissing int         `json:"bare_decode_missing,omitempty"`
	// Reader is the Reader's configuration.
	Reader map[string]any `json:"reader"`
}

type target struct {
	Name  string  `json:"name"`
	Want  string  `json:"want"`
	Value float64 `json:"value"`
	Met   bool    `json:"met"`
}

type results struct {
	Benchmark   string         `json:"benchmark"`
	Date        time.Time      `json:"date"`
	GoVersion   string         `json:"go_version"`
	NumCPU      int            `json:"num_cpu"`
	OS          string         `json:"os"`
	Note        string         `json:"note"`
	PostgreSQL  string         `json:"postgresql"`
	LoadAverage [2]string      `json:"load_average_before_after"`
	Workload    *workload      `json:"workload,omitempty"`
	Reps        int            `json:"reps"`
	NATS        map[string]any `json:"nats"`
	// MaxInFlight is the Readers' MaxInFlight when --max-in-flight set it.
	MaxInFlight  int                     `json:"reader_max_in_flight,omitempty"`
	Measurements map[string]*measurement `json:"measurements,omitempty"`
	// Ratio is Sluice's changes/s over the bare loop's (the target);
	// RatioToBareJetStream over the bare loop that also publishes the raw
	// pgoutput messages to JetStream: the share of the gap that is the
	// Reader's own.
	Ratio                float64  `json:"ratio,omitempty"`
	RatioToBareJetStream float64  `json:"ratio_to_bare_jetstream,omitempty"`
	Latency              *latency `json:"latency,omitempty"`
	Targets              []target `json:"targets"`
	TotalSeconds         float64  `json:"total_seconds"`
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

func run(ctx context.Context, cfg config, stdout io.Writer) error {
	began, load := time.Now(), measure.LoadAverage()
	conn, err := pgx.Connect(ctx, cfg.dsn)
	if err != nil {
		return fmt.Errorf("connect to %s (run `make services`): %w", cfg.dsn, err)
	}
	defer conn.Close(context.Background())
	var pgVersion string
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&pgVersion); err != nil {
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
	srv, err := embednats.Start(embednats.Config{StoreDir: dir, Name: "sluice-bench-cdc"})
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		return err
	}
	defer nc.Close()
	if b.js, err = jetstream.New(nc); err != nil {
		return err
	}
	if err := pgcdc.EnsureStream(ctx, b.js, pgcdc.StreamConfig{}); err != nil {
		return err
	}
	if b.stream, err = b.js.Stream(ctx, protocol.StreamCDC); err != nil {
		return err
	}
	monNC, err := nats.Connect(srv.ClientURL())
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
		Benchmark: "cdc", GoVersion: runtime.Version(), NumCPU: runtime.NumCPU(),
		OS: runtime.GOOS + "/" + runtime.GOARCH, PostgreSQL: pgVersion, Reps: cfg.reps, MaxInFlight: cfg.maxInFlight,
		Note: fmt.Sprintf("shared, noisy machine: throughput is the best of %d interleaved repetitions, each decoding the same WAL from its own copy of one slot; trust the ratio more than the absolute figures", cfg.reps),
		NATS: map[string]any{"server": "embedded (embednats), in this process", "stream": protocol.StreamCDC,
			"storage": "file", "replicas": 1},
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
	res.Date = time.Now().UTC().Truncate(time.Second)
	res.LoadAverage = [2]string{load, measure.LoadAverage()}
	res.TotalSeconds = measure.Round(time.Since(began).Seconds(), 1)
	return writeResults(cfg, stdout, res)
}

// dropLeftovers drops what an earlier, killed run left: inactive slots of
// the benchmark, the publication and the schema.
func (b *bench) dropLeftovers(ctx context.Context) error {
	if _, err := b.conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
		WHERE slot_name LIKE $1 AND NOT active`, slotPrefix+"%"); err != nil {
		return fmt.Errorf("drop leftover slots: %w", err)
	}
	for _, sql := range []string{
		"DROP PUBLICATION IF EXISTS " + publication,
		"DROP SCHEMA IF EXISTS " + schema + " CASCADE",
	} {
		if _, err := b.conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("drop leftovers: %w", err)
		}
	}
	return nil
}

// cleanup drops the slots this run created, the publication and the
// schema. A walsender may still be exiting: a slot in use is retried.
func (b *bench) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, slot := range slices.Clone(b.slots) {
		b.dropSlot(slot)
	}
	for _, sql := range []string{
		"DROP PUBLICATION IF EXISTS " + publication,
		"DROP SCHEMA IF EXISTS " + schema + " CASCADE",
	} {
		if _, err := b.conn.Exec(ctx, sql); err != nil {
			fmt.Fprintf(os.Stderr, "cdc: %s: %v\n", sql, err)
		}
	}
}

// createTable creates the source table and the publication. The
// publication exists before any slot: pgoutput looks it up as of the WAL
// position it decodes.
func (b *bench) createTable(ctx context.Context) error {
	for _, sql := range []string{
		"CREATE SCHEMA " + schema,
		`CREATE TABLE ` + srcTable + ` (
			id         bigint PRIMARY KEY,
			customer   text NOT NULL,
			amount     numeric(12,2) NOT NULL,
			created_at timestamptz NOT NULL,
			attrs      jsonb,
			quantity   integer)`,
		"CREATE PUBLICATION " + publication + " FOR TABLE " + srcTable,
	} {
		if _, err := b.conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("create the source table: %w", err)
		}
	}
	return nil
}

// copySlot copies the slot src (never streamed, so at the workload's start)
// into dst.
func (b *bench) copySlot(ctx context.Context, src, dst string) error {
	if _, err := b.conn.Exec(ctx, "SELECT pg_copy_logical_replication_slot($1, $2)", src, dst); err != nil {
		return fmt.Errorf("copy slot %q to %q: %w", src, dst, err)
	}
	b.slots = append(b.slots, dst)
	return nil
}

// dropSlot drops a slot this run created, retrying while its walsender
// exits; a failure is reported and the slot left to cleanup.
func (b *bench) dropSlot(slot string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	for i := 0; i < 50; i++ {
		if _, err = b.conn.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", slot); err == nil {
			b.slots = slices.DeleteFunc(b.slots, func(s string) bool { return s == slot })
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "cdc: drop slot %s: %v\n", slot, err)
}

// createSlot creates a pgoutput slot and returns its start position.
func (b *bench) createSlot(ctx context.Context, name string) (pglogrepl.LSN, error) {
	var lsn pglogrepl.LSN
	err := b.conn.QueryRow(ctx, "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", name).Scan(&lsn)
	if err != nil {
		return 0, fmt.Errorf("create slot %q: %w", name, err)
	}
	b.slots = append(b.slots, name)
	return lsn, nil
}

// throughput creates the template slot, generates the workload and times
// decoding it with the bare loops and the Reader, each on a copy of the
// template slot made just before and dropped just after.
func (b *bench) throughput(ctx context.Context, res *results) error {
	cfg := b.cfg
	template := slotPrefix + "template"
	start, err := b.createSlot(ctx, template)
	if err != nil {
		return err
	}
	wl, err := b.generate(ctx, start)
	if err != nil {
		return err
	}
	res.Workload = wl

	bare := &measurement{Label: "(a) bare pglogrepl loop (parse + count)",
		EndCondition: "the last insert/update/delete message decoded (change count reached)"}
	bareJS := &measurement{Label: "(c) bare loop + raw JetStream publish",
		EndCondition: "SLUICE_CDC holds every event (stream message count reached)"}
	sluice := &measurement{Label: "(b) Sluice pgcdc Reader -> JetStream",
		EndCondition: "SLUICE_CDC holds every event (stream message count reached, so JetStream stored and acknowledged every publish)"}
	var endLSN pglogrepl.LSN // of the last transaction, from the bare loop
	decode := func(which string, slot string, profile io.Writer) (decodeResult, error) {
		if err := b.copySlot(ctx, template, slot); err != nil {
			return decodeResult{}, err
		}
		defer b.dropSlot(slot)
		switch which {
		case "bare":
			return b.bareDecode(ctx, slot, wl, false)
		case "bare+js":
			return b.bareDecode(ctx, slot, wl, true)
		default:
			return b.sluiceDecode(ctx, slot, wl, endLSN, profile)
		}
	}
	// Rep 1 starts with the bare loop (which learns the end LSN of the last
	// transaction); then the order rotates.
	order := []string{"bare", "bare+js", "sluice"}
	for rep := 1; rep <= cfg.reps; rep++ {
		fmt.Fprintf(b.stdout, "rep %d/%d:", rep, cfg.reps)
		for k := range order {
			which := order[(k+len(order)-(rep-1)%len(order))%len(order)]
			r, err := decode(which, fmt.Sprintf("%s%s_%d", slotPrefix, strings.ReplaceAll(which, "+", "_"), rep), nil)
			if err != nil {
				return err
			}
			switch which {
			case "bare":
				if endLSN != 0 && r.endLSN != endLSN {
					return fmt.Errorf("bare loop: last commit ends at %s, %s before", r.endLSN, endLSN)
				}
				endLSN = r.endLSN
				bare.add(r)
				bare.Verified = fmt.Sprintf("counts of inserts, updates and deletes equal the workload's; last transaction ends at %s", endLSN)
			case "bare+js":
				bareJS.add(r)
				bareJS.Verified = "counts as (a); after the loop stopped, SLUICE_CDC held exactly the workload's event count"
			case "sluice":
				sluice.add(r)
				sluice.Verified = "after the Reader stopped, SLUICE_CDC held exactly the workload's event count; the last event is the delete of the last deleted id"
			}
			fmt.Fprintf(b.stdout, " %s %.2fs", which, r.secs)
		}
		fmt.Fprintln(b.stdout)
	}
	bare.finish(wl.Changes, wl.WALBytes)
	bareJS.finish(wl.Changes, wl.WALBytes)
	sluice.finish(wl.Changes, wl.WALBytes)
	res.Measurements = map[string]*measurement{"bare_pglogrepl": bare, "bare_pglogrepl_jetstream": bareJS, "sluice_reader": sluice}
	res.Ratio = measure.Round(sluice.ChangesPerSec/bare.ChangesPerSec, 3)
	res.RatioToBareJetStream = measure.Round(sluice.ChangesPerSec/bareJS.ChangesPerSec, 3)
	res.Targets = append(res.Targets, target{Name: "throughput: Sluice Reader / bare pglogrepl loop", Want: fmt.Sprintf(">= %.1fx", targetRatio),
		Value: res.Ratio, Met: res.Ratio >= targetRatio})

	if cfg.cpuProfile != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.cpuProfile), 0o755); err != nil {
			return err
		}
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		r, err := decode("sluice", slotPrefix+"sluice_profile", f)
		f.Close()
		if err != nil {
			return err
		}
		fmt.Fprintf(b.stdout, "profile of one more Reader decode (%.2fs, not counted): %s\n", r.secs, cfg.cpuProfile)
	}
	b.dropSlot(template)
	// The throughput events are no longer needed.
	return b.stream.Purge(ctx)
}

// generate runs the workload: inserts, then updates, then deletes, each in
// transactions of cfg.txRows rows.
func (b *bench) generate(ctx context.Context, start pglogrepl.LSN) (*workload, error) {
	cfg := b.cfg
	wl := &workload{Table: srcTable, Columns: 6, Inserts: cfg.inserts, Updates: cfg.updates, Deletes: cfg.deletes,
		TxRows: cfg.txRows, Changes: cfg.inserts + cfg.updates + cfg.deletes, StartLSN: start.String()}
	fmt.Fprintf(b.stdout, "workload: %d inserts, %d updates, %d deletes in transactions of %d rows ... ", cfg.inserts, cfg.updates, cfg.deletes, cfg.txRows)
	began := time.Now()
	// The commit records are the same with synchronous_commit off; it
	// only spares the fsync of each.
	if _, err := b.conn.Exec(ctx, "SET synchronous_commit = off"); err != nil {
		return nil, err
	}
	defer b.conn.Exec(context.Background(), "RESET synchronous_commit")
	for _, step := range []struct {
		rows int64
		sql  string
	}{
		{cfg.inserts, `INSERT INTO ` + srcTable + `
			SELECT i, 'customer ' || substr(md5(i::text), 1, 12), round(i * 1.37 % 100000, 2),
				timestamptz '2024-01-01 00:00:00+00' + i * interval '15.123457 second',
				jsonb_build_object('tier', i % 5, 'tags', jsonb_build_array('a', i % 7), 'ref', md5(i::text)),
				CASE WHEN i % 50 = 0 THEN NULL ELSE (i * 7) % 1000 END
			FROM generate_series($1::bigint, $2::bigint) AS i`},
		{cfg.updates, `UPDATE ` + srcTable + ` SET amount = amount + 1, quantity = coalesce(quantity, 0) + 1,
			attrs = attrs || '{"updated": true}', created_at = created_at + interval '1 day'
			WHERE id BETWEEN $1 AND $2`},
		{cfg.deletes, `DELETE FROM ` + srcTable + ` WHERE id BETWEEN $1 AND $2`},
	} {
		for lo := int64(1); lo <= step.rows; lo += cfg.txRows {
			hi := min(lo+cfg.txRows-1, step.rows)
			tag, err := b.conn.Exec(ctx, step.sql, lo, hi)
			if err != nil {
				return nil, fmt.Errorf("workload: %w", err)
			}
			if tag.RowsAffected() != hi-lo+1 {
				return nil, fmt.Errorf("workload: %q changed %d rows, want %d", tag.String(), tag.RowsAffected(), hi-lo+1)
			}
			wl.Transactions++
		}
	}
	var end pglogrepl.LSN
	if err := b.conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&end); err != nil {
		return nil, err
	}
	if err := b.conn.QueryRow(ctx, "SELECT pg_wal_lsn_diff($1, $2)::bigint", end.String(), start.String()).Scan(&wl.WALBytes); err != nil {
		return nil, err
	}
	wl.EndLSN = end.String()
	wl.Seconds = measure.Round(time.Since(began).Seconds(), 2)
	fmt.Fprintf(b.stdout, "%.1fs, %d transactions, %.1f MB of WAL\n", wl.Seconds, wl.Transactions, float64(wl.WALBytes)/1e6)
	return wl, nil
}

type decodeResult struct {
	secs      float64
	confirmed float64
	cpu       cpuUse
	endLSN    pglogrepl.LSN
	// streamBytes is what SLUICE_CDC stored, when the decode published.
	streamBytes int64
}

// bareDecode streams slot with a minimal pglogrepl loop until it has seen
// every change of the workload, and returns the time to the last change.
// It confirms the received position on each standby status update (every
// 10 s, as the Reader's default, and when the server asks). With publish,
// it also publishes each change's raw pgoutput message to SLUICE_CDC
// (PublishMsgAsync, with a Nats-Msg-Id and the expected stream, as the
// Reader) and stops the clock when the stream holds them all.
func (b *bench) bareDecode(ctx context.Context, slot string, wl *workload, publish bool) (decodeResult, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.timeout)
	defer cancel()
	pcfg, err := pgconn.ParseConfig(b.cfg.dsn)
	if err != nil {
		return decodeResult{}, err
	}
	pcfg.RuntimeParams["replication"] = "database"
	if publish {
		if err := b.stream.Purge(ctx); err != nil {
			return decodeResult{}, err
		}
	}
	subject := protocol.CDCSubject(pipelineThroughput+"-raw", schema, tableName)
	runtime.GC()
	cpu0, srv0 := measure.SelfCPU(), measure.ServerCPU()
	start := time.Now()
	rc, err := pgconn.ConnectConfig(ctx, pcfg)
	if err != nil {
		return decodeResult{}, fmt.Errorf("bare loop: replication connect: %w", err)
	}
	defer rc.Close(context.Background())
	err = pglogrepl.StartReplication(ctx, rc, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + publication + "'", "messages 'true'"},
	})
	if err != nil {
		return decodeResult{}, fmt.Errorf("bare loop: start replication on %s: %w", slot, err)
	}
	const statusInterval = 10 * time.Second
	var pos pglogrepl.LSN
	var ins, upd, del int64
	var res decodeResult
	nextStatus := time.Now().Add(statusInterval)
	for {
		if !time.Now().Before(nextStatus) {
			if err := pglogrepl.SendStandbyStatusUpdate(ctx, rc, pglogrepl.StandbyStatusUpdate{WALWritePosition: pos}); err != nil {
				return decodeResult{}, fmt.Errorf("bare loop: standby status update: %w", err)
			}
			nextStatus = time.Now().Add(statusInterval)
		}
		rctx, rcancel := context.WithDeadline(ctx, nextStatus)
		raw, err := rc.ReceiveMessage(rctx)
		rcancel()
		if err != nil {
			if ctx.Err() == nil && pgconn.Timeout(err) {
				continue
			}
			return decodeResult{}, fmt.Errorf("bare loop: receive (%d of %d changes): %w", ins+upd+del, wl.Changes, err)
		}
		m, ok := raw.(*pgproto3.CopyData)
		if !ok {
			if e, ok := raw.(*pgproto3.ErrorResponse); ok {
				return decodeResult{}, fmt.Errorf("bare loop: %w", pgconn.ErrorResponseToPgError(e))
			}
			return decodeResult{}, fmt.Errorf("bare loop: unexpected message %T", raw)
		}
		if len(m.Data) == 0 {
			continue
		}
		switch m.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
			if err != nil {
				return decodeResult{}, err
			}
			if ka.ReplyRequested {
				nextStatus = time.Time{}
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(m.Data[1:])
			if err != nil {
				return decodeResult{}, err
			}
			msg, err := pglogrepl.Parse(xld.WALData)
			if err != nil {
				return decodeResult{}, fmt.Errorf("bare loop: parse at %s: %w", xld.WALStart, err)
			}
			pos = xld.WALStart + pglogrepl.LSN(len(xld.WALData))
			change := true
			switch msg := msg.(type) {
			case *pglogrepl.InsertMessage:
				ins++
			case *pglogrepl.UpdateMessage:
				upd++
			case *pglogrepl.DeleteMessage:
				del++
			case *pglogrepl.CommitMessage:
				change = false
				if ins+upd+del == wl.Changes {
					if ins != wl.Inserts || upd != wl.Updates || del != wl.Deletes {
						return decodeResult{}, fmt.Errorf("bare loop: %d inserts, %d updates, %d deletes; want %d, %d, %d",
							ins, upd, del, wl.Inserts, wl.Updates, wl.Deletes)
					}
					res.endLSN = msg.TransactionEndLSN
					if !publish {
						return res, nil
					}
					if err := b.waitStored(ctx, wl.Changes, nil); err != nil {
						return decodeResult{}, fmt.Errorf("bare loop: %w", err)
					}
					res.secs = time.Since(start).Seconds()
					res.cpu = cpuUse{client: measure.SelfCPU() - cpu0, server: measure.ServerCPU() - srv0}
					return res, b.verifyStream(ctx, wl, &res, false)
				}
			default:
				change = false
			}
			if change && publish {
				pm := &nats.Msg{Subject: subject, Data: bytes.Clone(xld.WALData), Header: nats.Header{}}
				pm.Header.Set(jetstream.MsgIDHeader, slot+":"+strconv.FormatInt(ins+upd+del, 10))
				if _, err := b.js.PublishMsgAsync(pm, jetstream.WithExpectStream(protocol.StreamCDC)); err != nil {
					return decodeResult{}, fmt.Errorf("bare loop: publish: %w", err)
				}
			}
			if !publish && change && ins+upd+del == wl.Changes {
				res.secs = time.Since(start).Seconds()
				res.cpu = cpuUse{client: measure.SelfCPU() - cpu0, server: measure.ServerCPU() - srv0}
			}
		}
	}
}

// waitStored polls SLUICE_CDC every 5 ms until it holds want messages, or
// until stop delivers (a Reader that stopped).
func (b *bench) waitStored(ctx context.Context, want int64, stop <-chan error) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		info, err := b.mon.Info(ctx)
		if err != nil {
			return err
		}
		if int64(info.State.Msgs) >= want {
			return nil
		}
		select {
		case err := <-stop:
			return fmt.Errorf("stopped early: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// sluiceDecode runs a Reader on slot until SLUICE_CDC holds every event of
// the workload and its status confirms endLSN, then stops it and checks
// the stream. With profile set, it records a CPU profile of the run into
// it.
func (b *bench) sluiceDecode(ctx context.Context, slot string, wl *workload, endLSN pglogrepl.LSN, profile io.Writer) (decodeResult, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.timeout)
	defer cancel()
	if err := b.stream.Purge(ctx); err != nil {
		return decodeResult{}, err
	}
	r, err := pgcdc.NewReader(pgcdc.Config{
		DSN: b.cfg.dsn, Slot: slot, Publication: publication, Tables: []string{srcTable}, Pipeline: pipelineThroughput,
		MaxInFlight: b.cfg.maxInFlight,
	}, b.js, b.log)
	if err != nil {
		return decodeResult{}, err
	}
	if profile != nil {
		if err := pprof.StartCPUProfile(profile); err != nil {
			return decodeResult{}, err
		}
		defer pprof.StopCPUProfile()
	}
	runtime.GC()
	cpu0, srv0 := measure.SelfCPU(), measure.ServerCPU()
	start := time.Now()
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()

	if err := b.waitStored(ctx, wl.Changes, done); err != nil {
		return decodeResult{}, fmt.Errorf("reader on %s: %w", slot, err)
	}
	res := decodeResult{secs: time.Since(start).Seconds(), cpu: cpuUse{client: measure.SelfCPU() - cpu0, server: measure.ServerCPU() - srv0}}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for endLSN != 0 {
		if lsn, err := pglogrepl.ParseLSN(r.Status().ConfirmedLSN); err == nil && lsn >= endLSN {
			res.confirmed = time.Since(start).Seconds()
			break
		}
		select {
		case err := <-done:
			return decodeResult{}, fmt.Errorf("reader on %s stopped early: %v", slot, err)
		case <-ctx.Done():
			return decodeResult{}, fmt.Errorf("reader on %s: %w", slot, ctx.Err())
		case <-tick.C:
		}
	}
	stop()
	if err := <-done; err != nil {
		return decodeResult{}, fmt.Errorf("reader on %s: %w", slot, err)
	}
	return res, b.verifyStream(ctx, wl, &res, true)
}

// verifyStream checks that SLUICE_CDC holds exactly the workload's events,
// records their size in res, and with events, that the last one is a
// change event of the last change.
func (b *bench) verifyStream(ctx context.Context, wl *workload, res *decodeResult, events bool) error {
	info, err := b.mon.Info(ctx)
	if err != nil {
		return err
	}
	if int64(info.State.Msgs) != wl.Changes {
		return fmt.Errorf("verify: SLUICE_CDC holds %d events, want %d", info.State.Msgs, wl.Changes)
	}
	res.streamBytes = int64(info.State.Bytes)
	if !events {
		return nil
	}
	last, err := b.mon.GetMsg(ctx, info.State.LastSeq)
	if err != nil {
		return err
	}
	ev, err := protocol.DecodeChangeEvent(last.Data)
	if err != nil {
		return err
	}
	// The last change: the last delete, else the last update, else the
	// last insert.
	op, row, want := protocol.OpInsert, ev.After, wl.Inserts
	if wl.Deletes > 0 {
		op, row, want = protocol.OpDelete, ev.Before, wl.Deletes
	} else if wl.Updates > 0 {
		op, row, want = protocol.OpUpdate, ev.After, wl.Updates
	}
	id := row["id"]
	if ev.Op != op || id != protocol.Text(strconv.FormatInt(want, 10)) {
		return fmt.Errorf("verify: last event is the %s of id %v, want the %s of id %d", ev.Op, id.Text, op, want)
	}
	return nil
}

// arrivals records when the events of the paced inserts arrive, by row id:
// ids base+i for i < len(at), and warm-up ids from base-warmupSpan that
// only signal warm.
type arrivals struct {
	base int64
	warm chan struct{}

	mu      sync.Mutex
	at      []time.Time
	arrived int
}

// warmupSpan separates the warm-up ids from the measured ones.
const warmupSpan = 100_000_000

func newArrivals(base int64, n int) *arrivals {
	return &arrivals{base: base, warm: make(chan struct{}, 1), at: make([]time.Time, n)}
}

func (a *arrivals) record(id int64, now time.Time) {
	if id >= a.base-warmupSpan && id < a.base {
		select {
		case a.warm <- struct{}{}:
		default:
		}
		return
	}
	if i := id - a.base; i >= 0 && i < int64(len(a.at)) {
		a.mu.Lock()
		if a.at[i].IsZero() {
			a.at[i] = now
			a.arrived++
		}
		a.mu.Unlock()
	}
}

// recordEvent records a change event by the id of its After row.
func (a *arrivals) recordEvent(data []byte, now time.Time) {
	ev, err := protocol.DecodeChangeEvent(data)
	if err != nil {
		return
	}
	if id, err := strconv.ParseInt(ev.After["id"].Text, 10, 64); err == nil {
		a.record(id, now)
	}
}

func (a *arrivals) complete() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.arrived == len(a.at)
}

// since summarizes the arrivals after from[i], and returns how many never
// arrived.
func (a *arrivals) since(from []time.Time) (percentiles, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ds []time.Duration
	for i, t := range a.at {
		if !t.IsZero() {
			ds = append(ds, t.Sub(from[i]))
		}
	}
	return summarize(ds), len(a.at) - len(ds)
}

// latency measures, with the Reader streaming live and then with a bare
// pglogrepl loop, the time from the return of each single-row INSERT's
// COMMIT to the arrival of its event, while cfg.rate such transactions a
// second arrive for cfg.duration.
func (b *bench) latency(ctx context.Context) (*latency, error) {
	cfg := b.cfg
	n := int(float64(cfg.rate) * cfg.duration.Seconds())
	lat := &latency{
		Definition: "from the return of each single-row INSERT's COMMIT at the client to the arrival of its event " +
			"(keyed by the row id in After) at an ordered consumer of SLUICE_CDC: JetStream stores an event before it " +
			"acks the Reader's publish and before it delivers it, so this bounds commit-to-JetStream-ack from above; " +
			"commit_to_published_event (a core NATS subscriber on the subject) bounds it from below; " +
			"commit_to_bare_decode is the same load decoded by a bare pglogrepl loop (no JetStream), measured after",
		Rate: cfg.rate, Conns: cfg.conns, Sent: n,
		Reader: map[string]any{"heartbeat": "default (10s)", "status_interval": "default (10s)", "max_in_flight": "default (10000)"},
	}
	if cfg.maxInFlight != 0 {
		lat.Reader["max_in_flight"] = cfg.maxInFlight
	}
	if err := b.latencySluice(ctx, lat, n); err != nil {
		return nil, err
	}
	if !cfg.skipLatencyBaseline {
		if err := b.latencyBare(ctx, lat, n); err != nil {
			return nil, err
		}
	}
	return lat, nil
}

// latencySluice runs a Reader on a new slot with two subscribers of its
// subject and measures the paced inserts.
func (b *bench) latencySluice(ctx context.Context, lat *latency, n int) error {
	cfg := b.cfg
	const base = 1_000_000_000
	subject := protocol.CDCSubject(pipelineLatency, schema, tableName)
	slot := slotPrefix + "lat"
	b.slots = append(b.slots, slot)
	defer b.dropSlot(slot)

	stored, published := newArrivals(base, n), newArrivals(base, n)
	oc, err := b.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject}, DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return err
	}
	cc, err := oc.Consume(func(m jetstream.Msg) { stored.recordEvent(m.Data(), time.Now()) })
	if err != nil {
		return err
	}
	defer cc.Stop()
	subNC, err := nats.Connect(b.js.Conn().ConnectedUrl())
	if err != nil {
		return err
	}
	defer subNC.Close()
	sub, err := subNC.Subscribe(subject, func(m *nats.Msg) { published.recordEvent(m.Data, time.Now()) })
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()

	r, err := pgcdc.NewReader(pgcdc.Config{
		DSN: cfg.dsn, Slot: slot, Publication: publication, Tables: []string{srcTable}, Pipeline: pipelineLatency,
		MaxInFlight: cfg.maxInFlight,
	}, b.js, b.log)
	if err != nil {
		return err
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()

	fmt.Fprintf(b.stdout, "latency, Sluice Reader: waiting for it to stream ... ")
	began := time.Now()
	if err := b.warmUp(ctx, base, stored.warm, done); err != nil {
		return err
	}
	fmt.Fprintf(b.stdout, "%.1fs; %d single-row INSERT transactions at %d/s from %d connections ... ", time.Since(began).Seconds(), n, cfg.rate, cfg.conns)
	committed, durs, secs, err := b.paced(ctx, base, n)
	if err != nil {
		return err
	}
	lat.Seconds = measure.Round(secs, 2)
	lat.AchievedTPS = measure.Round(float64(n)/secs, 1)
	drain(cfg.drain, func() bool { return stored.complete() && published.complete() })
	cc.Stop()
	stop()
	if err := <-done; err != nil {
		return fmt.Errorf("latency reader: %w", err)
	}
	fmt.Fprintf(b.stdout, "%.1fs\n", secs)
	lat.Stored, lat.StoredMissing = stored.since(committed)
	lat.Published, lat.PublishedMissing = published.since(committed)
	lat.Commit = summarize(durs)
	return nil
}

// latencyBare measures the paced inserts decoded by a bare pglogrepl loop
// on a new slot: the floor of the Reader's latency on this machine.
func (b *bench) latencyBare(ctx context.Context, lat *latency, n int) error {
	cfg := b.cfg
	const base = 2_000_000_000
	slot := slotPrefix + "lat_bare"
	if _, err := b.createSlot(ctx, slot); err != nil {
		return err
	}
	defer b.dropSlot(slot)
	decoded := newArrivals(base, n)
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- b.bareStream(lctx, slot, decoded) }()

	fmt.Fprintf(b.stdout, "latency, bare pglogrepl loop: the same inserts ... ")
	if err := b.warmUp(ctx, base, decoded.warm, done); err != nil {
		return err
	}
	committed, _, secs, err := b.paced(ctx, base, n)
	if err != nil {
		return err
	}
	drain(cfg.drain, decoded.complete)
	stop()
	if err := <-done; err != nil {
		return err
	}
	fmt.Fprintf(b.stdout, "%.1fs\n", secs)
	lat.BareDecode, lat.BareDecodeMissing = decoded.since(committed)
	return nil
}

// bareStream streams slot until ctx ends and records the arrival of each
// insert by its first column (the id).
func (b *bench) bareStream(ctx context.Context, slot string, a *arrivals) error {
	pcfg, err := pgconn.ParseConfig(b.cfg.dsn)
	if err != nil {
		return err
	}
	pcfg.RuntimeParams["replication"] = "database"
	rc, err := pgconn.ConnectConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("bare latency loop: replication connect: %w", err)
	}
	defer rc.Close(context.Background())
	err = pglogrepl.StartReplication(ctx, rc, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + publication + "'", "messages 'true'"},
	})
	if err != nil {
		return fmt.Errorf("bare latency loop: start replication on %s: %w", slot, err)
	}
	const statusInterval = 10 * time.Second
	var pos pglogrepl.LSN
	nextStatus := time.Now().Add(statusInterval)
	for {
		if !time.Now().Before(nextStatus) {
			if err := pglogrepl.SendStandbyStatusUpdate(ctx, rc, pglogrepl.StandbyStatusUpdate{WALWritePosition: pos}); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("bare latency loop: standby status update: %w", err)
			}
			nextStatus = time.Now().Add(statusInterval)
		}
		rctx, rcancel := context.WithDeadline(ctx, nextStatus)
		raw, err := rc.ReceiveMessage(rctx)
		rcancel()
		now := time.Now()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("bare latency loop: receive: %w", err)
		}
		m, ok := raw.(*pgproto3.CopyData)
		if !ok || len(m.Data) == 0 {
			if e, ok := raw.(*pgproto3.ErrorResponse); ok {
				return fmt.Errorf("bare latency loop: %w", pgconn.ErrorResponseToPgError(e))
			}
			continue
		}
		switch m.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
			if err != nil {
				return err
			}
			if ka.ReplyRequested {
				nextStatus = time.Time{}
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(m.Data[1:])
			if err != nil {
				return err
			}
			pos = xld.WALStart + pglogrepl.LSN(len(xld.WALData))
			msg, err := pglogrepl.Parse(xld.WALData)
			if err != nil {
				return fmt.Errorf("bare latency loop: parse at %s: %w", xld.WALStart, err)
			}
			if ins, ok := msg.(*pglogrepl.InsertMessage); ok && ins.Tuple != nil && len(ins.Tuple.Columns) > 0 {
				if id, err := strconv.ParseInt(string(ins.Tuple.Columns[0].Data), 10, 64); err == nil {
					a.record(id, now)
				}
			}
		}
	}
}

// warmUp inserts a row of a warm-up id below base every 200 ms until warm
// delivers (the decoder streams), stopped delivers, or a minute passed.
func (b *bench) warmUp(ctx context.Context, base int64, warm <-chan struct{}, stopped <-chan error) error {
	began := time.Now()
	for k := int64(0); ; k++ {
		if _, err := b.conn.Exec(ctx, "INSERT INTO "+srcTable+" VALUES ($1, 'warm-up', 0, now(), '{}', 0)", base-warmupSpan+k); err != nil {
			return err
		}
		select {
		case <-warm:
			return nil
		case err := <-stopped:
			return fmt.Errorf("latency: the decoder stopped: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
			if time.Since(began) > time.Minute {
				return errors.New("latency: no event after 1 min")
			}
		}
	}
}

// paced issues n single-row INSERT transactions (autocommit) of the ids
// base+i at cfg.rate from cfg.conns connections, and returns when each
// COMMIT returned, how long each took, and the wall time of the whole.
func (b *bench) paced(ctx context.Context, base int64, n int) ([]time.Time, []time.Duration, float64, error) {
	cfg := b.cfg
	issued := make([]time.Time, n)
	committed := make([]time.Time, n)
	jobs := make(chan int, n)
	g, gctx := errgroup.WithContext(ctx)
	for range cfg.conns {
		c, err := pgx.Connect(ctx, cfg.dsn)
		if err != nil {
			return nil, nil, 0, err
		}
		defer c.Close(context.Background())
		// Prepared once, off the clock.
		if _, err := c.Prepare(ctx, "ins", "INSERT INTO "+srcTable+" VALUES ($1, 'latency', 1.5, now(), '{\"k\": 1}', 1)"); err != nil {
			return nil, nil, 0, err
		}
		g.Go(func() error {
			for i := range jobs {
				issued[i] = time.Now()
				if _, err := c.Exec(gctx, "ins", base+int64(i)); err != nil {
					return fmt.Errorf("latency insert: %w", err)
				}
				committed[i] = time.Now()
			}
			return nil
		})
	}
	// Paced on a schedule (the i-th insert is due at start + i/rate), so
	// that a late wake-up is caught up instead of dropped as a ticker's
	// tick would be.
	period := time.Second / time.Duration(cfg.rate)
	start := time.Now()
	g.Go(func() error {
		defer close(jobs)
		for i := range n {
			if d := time.Until(start.Add(time.Duration(i) * period)); d > 0 {
				select {
				case <-time.After(d):
				case <-gctx.Done():
					return nil
				}
			}
			jobs <- i
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, nil, 0, err
	}
	secs := time.Since(start).Seconds()
	durs := make([]time.Duration, n)
	for i := range n {
		durs[i] = committed[i].Sub(issued[i])
	}
	return committed, durs, secs, nil
}

// drain waits up to d for done to hold.
func drain(d time.Duration, done func() bool) {
	for deadline := time.Now().Add(d); time.Now().Before(deadline) && !done(); {
		time.Sleep(20 * time.Millisecond)
	}
}

func summarize(ds []time.Duration) percentiles {
	if len(ds) == 0 {
		return percentiles{}
	}
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return measure.Round(float64(d)/1e6, 2) }
	// nearest rank
	at := func(p float64) time.Duration {
		i := int(p*float64(len(ds))+0.999999) - 1
		return ds[max(0, min(i, len(ds)-1))]
	}
	var sum time.Duration
	neg := 0
	for _, d := range ds {
		sum += d
		if d < 0 {
			neg++
		}
	}
	return percentiles{Count: len(ds), P50: ms(at(0.50)), P90: ms(at(0.90)), P99: ms(at(0.99)),
		Max: ms(ds[len(ds)-1]), Mean: ms(sum / time.Duration(len(ds))), Negative: neg}
}

// writeResults prints the results and writes them to cfg.out.
func writeResults(cfg config, stdout io.Writer, res results) error {
	report(stdout, res)
	if err := os.MkdirAll(filepath.Dir(cfg.out), 0o755); err != nil {
		return err
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(res); err != nil {
		return err
	}
	if err := os.WriteFile(cfg.out, b.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "results: %s\n", cfg.out)
	return nil
}

func report(w io.Writer, r results) {
	fmt.Fprintf(w, "\ncdc: %d CPUs, %s, PostgreSQL %s, %s\n", r.NumCPU, r.GoVersion, r.PostgreSQL, r.Date.Format(time.RFC3339))
	fmt.Fprintf(w, "%s; load average before and after: %s, %s\n", r.Note, r.LoadAverage[0], r.LoadAverage[1])
	if wl := r.Workload; wl != nil {
		fmt.Fprintf(w, "workload: %s changes on %s (%d columns): %s inserts, %s updates, %s deletes in %s transactions of %d rows; %.1f MB of WAL\n\n",
			measure.Thousands(float64(wl.Changes)), wl.Table, wl.Columns, measure.Thousands(float64(wl.Inserts)), measure.Thousands(float64(wl.Updates)),
			measure.Thousands(float64(wl.Deletes)), measure.Thousands(float64(wl.Transactions)), wl.TxRows, float64(wl.WALBytes)/1e6)
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "measurement\tbest s\tchanges/s\tWAL MB/s\tclient CPU s\tclient CPU µs/change\tserver CPU s\tstream MB\tall reps (s)\t")
		for _, k := range []string{"bare_pglogrepl", "bare_pglogrepl_jetstream", "sluice_reader"} {
			m := r.Measurements[k]
			reps := make([]string, len(m.Seconds))
			for i, s := range m.Seconds {
				reps[i] = fmt.Sprintf("%.2f", s)
			}
			server := "-"
			if m.ServerCPU > 0 {
				server = fmt.Sprintf("%.1f", m.ServerCPU)
			}
			stream := "-"
			if m.StreamBytes > 0 {
				stream = fmt.Sprintf("%.1f", float64(m.StreamBytes)/1e6)
			}
			fmt.Fprintf(tw, "%s\t%.2f\t%s\t%.1f\t%.1f\t%.1f\t%s\t%s\t%s\t\n", m.Label, m.BestSeconds, measure.Thousands(m.ChangesPerSec), m.WALMBPerSec,
				m.ClientCPU, m.ClientCPUPerChange, server, stream, strings.Join(reps, " "))
		}
		tw.Flush()
		fmt.Fprintf(w, "(a) stops at: %s\n(b) and (c) stop at: %s;\n    in (b)'s best rep, Reader.Status().ConfirmedLSN reached the end of the last transaction at %.2fs\n",
			r.Measurements["bare_pglogrepl"].EndCondition, r.Measurements["sluice_reader"].EndCondition, r.Measurements["sluice_reader"].ConfirmedSeconds)
		fmt.Fprintln(w, "(c) publishes each raw pgoutput message as it is, with the Reader's headers: the floor of any pgoutput -> JetStream path here")
		fmt.Fprintln(w, "client CPU: this process (for (b) and (c) with the embedded NATS server); server CPU: every postgres process on the machine")
		fmt.Fprintf(w, "Sluice / (c): %.2fx\n", r.RatioToBareJetStream)
	}
	if l := r.Latency; l != nil {
		fmt.Fprintf(w, "\nlatency: %s single-row INSERT transactions at %d/s (achieved %.0f/s) over %.1fs from %d connections; Reader defaults (heartbeat and status interval 10s)\n",
			measure.Thousands(float64(l.Sent)), l.Rate, l.AchievedTPS, l.Seconds, l.Conns)
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "from COMMIT returned to\tp50 ms\tp90 ms\tp99 ms\tmax ms\tmean ms\treceived\tmissing\t")
		row := func(label string, p percentiles, missing string) {
			fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%s\t\n", label, p.P50, p.P90, p.P99, p.Max, p.Mean, p.Count, missing)
		}
		row("event stored, at an ordered consumer (upper bound of commit-to-ack)", l.Stored, strconv.Itoa(l.StoredMissing))
		row("event published, at a core NATS subscriber (lower bound)", l.Published, strconv.Itoa(l.PublishedMissing))
		if l.BareDecode.Count > 0 {
			row("baseline: change decoded by a bare pglogrepl loop (no JetStream)", l.BareDecode, strconv.Itoa(l.BareDecodeMissing))
		}
		row("(INSERT + COMMIT round trip at the client)", l.Commit, "-")
		tw.Flush()
		if l.Stored.Negative > 0 || l.Published.Negative > 0 || l.BareDecode.Negative > 0 {
			fmt.Fprintf(w, "changes that arrived before their COMMIT returned to the client (counted with their negative latency): %d stored, %d published, %d bare\n",
				l.Stored.Negative, l.Published.Negative, l.BareDecode.Negative)
		}
	}
	fmt.Fprintln(w)
	for _, t := range r.Targets {
		verdict := "met"
		if !t.Met {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "%-50s %.3g (target %s): %s\n", t.Name, t.Value, t.Want, verdict)
	}
}
