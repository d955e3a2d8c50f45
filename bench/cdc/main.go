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
// For (a) to (d) it creates a 6-column table in the schema
// sluice_bench_cdc, a publication and a template slot, then generates the
// workload (--inserts, then --updates, then --deletes, in transactions of
// --tx-rows rows). Each measurement decodes its own copy of the template
// slot (pg_copy_logical_replication_slot), so all decode the same WAL,
// one after the other, --reps times in rotating order; the best time of
// each counts (the machine is shared). A message of SLUICE_CDC holds one or
// more events (its Sluice-Events header counts them), so the clock of (b)
// and (c) stops when the headers of the stored messages, followed by a
// headers-only consumer, add up to the workload's change count; after each
// run every message is read back and checked: every change of every
// transaction exactly once. It prints changes/s, MB/s of WAL, CPU per
// change, messages and events per message, the ratios and the latency
// percentiles, and writes every figure to --out. Slots, the publication and the schema are dropped at
// the end, also on error. Run it with `make bench-cdc`.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
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
	skipUnpacked              bool
	maxInFlight               int
	messageEvents             int
}

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
	flag.BoolVar(&cfg.skipLatency, "no-latency", false, "skip the latency measurement")
	flag.BoolVar(&cfg.skipLatencyBaseline, "no-latency-baseline", false, "skip the latency of the bare pglogrepl loop")
	flag.BoolVar(&cfg.skipThroughput, "no-throughput", false, "skip the throughput measurements")
	flag.BoolVar(&cfg.skipUnpacked, "no-unpacked", false, "skip (d), the bare loop publishing one message per change")
	flag.Parse()
	if cfg.inserts < 1 || cfg.updates < 0 || cfg.deletes < 0 || cfg.updates > cfg.inserts || cfg.deletes > cfg.inserts ||
		cfg.txRows < 1 || cfg.reps < 1 || cfg.rate < 1 || cfg.conns < 1 || cfg.duration <= 0 || cfg.messageEvents < 0 {
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

// measurement is one timed decode of the workload, repeated.
type measurement struct {
	Label string `json:"label"`
	// EndCondition says when the clock stopped.
	EndCondition string `json:"end_condition"`
	// Seconds are the wall times of each repetition.
	Seconds       []float64 `json:"seconds"`
	BestSeconds   float64   `json:"best_seconds"`
	MedianSeconds float64   `json:"median_seconds"`
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
	// and headers), for the measurements that publish; Messages how many
	// messages, EventsPerMessage the changes over them and
	// MaxEventsPerMessage the most changes one message held.
	StreamBytes         int64   `json:"stream_bytes,omitempty"`
	Messages            int64   `json:"messages_per_run,omitempty"`
	EventsPerMessage    float64 `json:"events_per_message,omitempty"`
	MaxEventsPerMessage int     `json:"max_events_per_message,omitempty"`
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
	if r.messages > 0 {
		m.StreamBytes, m.Messages, m.MaxEventsPerMessage = r.streamBytes, r.messages, r.maxEvents
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
	sorted := slices.Sorted(slices.Values(m.Seconds))
	m.MedianSeconds = sorted[len(sorted)/2]
	if len(sorted)%2 == 0 {
		m.MedianSeconds = measure.Round((sorted[len(sorted)/2-1]+sorted[len(sorted)/2])/2, 3)
	}
	m.ChangesPerSec = measure.Round(float64(changes)/m.BestSeconds, 0)
	m.WALMBPerSec = measure.Round(float64(walBytes)/1e6/m.BestSeconds, 2)
	m.ClientCPU, m.ServerCPU = measure.Round(m.cpu[i].client, 2), measure.Round(m.cpu[i].server, 2)
	m.ClientCPUPerChange = measure.Round(m.cpu[i].client/float64(changes)*1e6, 1)
	m.ConfirmedSeconds = measure.Round(m.confirmed[i], 3)
	if m.Messages > 0 {
		m.EventsPerMessage = measure.Round(float64(changes)/float64(m.Messages), 1)
	}
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
	MaxInFlight int `json:"reader_max_in_flight,omitempty"`
	// Packing is how the events (and, in (c), the raw changes) are packed
	// into SLUICE_CDC messages.
	Packing      map[string]any          `json:"packing"`
	Measurements map[string]*measurement `json:"measurements,omitempty"`
	// Ratio is Sluice's changes/s over the bare loop's (the target);
	// RatioToBareJetStream over the bare loop that also publishes the raw
	// pgoutput messages to JetStream, packed the same way: the share of
	// the gap that is the Reader's own; RatioToBareJetStreamUnpacked over
	// the bare loop publishing one message per change.
	Ratio float64 `json:"ratio,omitempty"`
	// RatioOfMedians is the bare loop's median time over Sluice's: the
	// ratio less the luck of one repetition on a noisy machine.
	RatioOfMedians               float64  `json:"ratio_of_medians,omitempty"`
	RatioToBareJetStream         float64  `json:"ratio_to_bare_jetstream,omitempty"`
	RatioToBareJetStreamUnpacked float64  `json:"ratio_to_bare_jetstream_unpacked,omitempty"`
	Latency                      *latency `json:"latency,omitempty"`
	Targets                      []target `json:"targets"`
	TotalSeconds                 float64  `json:"total_seconds"`
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
	bareJS := &measurement{Label: fmt.Sprintf("(c) bare loop + raw JetStream publish, packed as the Reader packs (per transaction and table run, <= %d changes, <= %d KiB)", cfg.msgEvents(), pgcdc.MaxMessageBytes>>10),
		EndCondition: "SLUICE_CDC holds every change: the Sluice-Events headers of the stored messages, followed by a headers-only ordered consumer, add up to the change count"}
	bareJSEach := &measurement{Label: "(d) bare loop + raw JetStream publish, one message per change (unpacked)",
		EndCondition: "SLUICE_CDC holds every change (stream message count reached: one message per change)"}
	sluice := &measurement{Label: "(b) Sluice pgcdc Reader -> JetStream",
		EndCondition: "SLUICE_CDC holds every event: the Sluice-Events headers of the stored messages, followed by a headers-only ordered consumer, add up to the change count (so JetStream stored and acknowledged every publish)"}
	var endLSN pglogrepl.LSN // of the last transaction, from the bare loop
	decode := func(which string, slot string, profile io.Writer) (decodeResult, error) {
		if err := b.copySlot(ctx, template, slot); err != nil {
			return decodeResult{}, err
		}
		defer b.dropSlot(slot)
		switch which {
		case "bare":
			return b.bareDecode(ctx, slot, wl, publishNone)
		case "bare+js":
			return b.bareDecode(ctx, slot, wl, publishPacked)
		case "bare+js1":
			return b.bareDecode(ctx, slot, wl, publishEach)
		default:
			return b.sluiceDecode(ctx, slot, wl, endLSN, profile)
		}
	}
	// Rep 1 starts with the bare loop (which learns the end LSN of the last
	// transaction); then the order rotates.
	order := []string{"bare", "bare+js", "bare+js1", "sluice"}
	if cfg.skipUnpacked {
		order = slices.DeleteFunc(order, func(s string) bool { return s == "bare+js1" })
	}
	verifiedRaw := "counts as (a); after the loop stopped, SLUICE_CDC held every change of every transaction exactly once " +
		"(read back: each message's length-prefixed pgoutput messages are inserts, updates or deletes of one relation, as many as its Sluice-Events; " +
		"per commit LSN the index spans of the Nats-Msg-Ids tile the transaction), at most %d per message, and as many inserts, updates and deletes as the workload"
	for rep := 1; rep <= cfg.reps; rep++ {
		fmt.Fprintf(b.stdout, "rep %d/%d:", rep, cfg.reps)
		for k := range order {
			which := order[(k+len(order)-(rep-1)%len(order))%len(order)]
			// Each measurement starts without dirty buffers: a checkpoint
			// writing the workload's pages would slow whichever ran then.
			if _, err := b.conn.Exec(ctx, "CHECKPOINT"); err != nil {
				return fmt.Errorf("checkpoint before %s: %w", which, err)
			}
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
				bareJS.Verified = fmt.Sprintf(verifiedRaw, cfg.msgEvents())
			case "bare+js1":
				bareJSEach.add(r)
				bareJSEach.Verified = fmt.Sprintf(verifiedRaw, 1)
			case "sluice":
				sluice.add(r)
				sluice.Verified = "after the Reader stopped, SLUICE_CDC held every change of every transaction exactly once: every message read back and " +
					"every event decoded; a message's events are of one table and one transaction with consecutive indexes, its Nats-Msg-Id is that of its first event, " +
					fmt.Sprintf("its Sluice-Events their count (<= %d, <= %d KiB unless one event); per commit LSN the events' indexes tile the transaction; ", cfg.msgEvents(), pgcdc.MaxMessageBytes>>10) +
					"inserts, updates and deletes as the workload; the last event is the delete of the last deleted id"
			}
			fmt.Fprintf(b.stdout, " %s %.2fs", which, r.secs)
			if r.checkSecs > 0 {
				fmt.Fprintf(b.stdout, " (read back in %.1fs)", r.checkSecs)
			}
		}
		fmt.Fprintln(b.stdout)
	}
	bare.finish(wl.Changes, wl.WALBytes)
	bareJS.finish(wl.Changes, wl.WALBytes)
	sluice.finish(wl.Changes, wl.WALBytes)
	res.Measurements = map[string]*measurement{"bare_pglogrepl": bare, "bare_pglogrepl_jetstream": bareJS, "sluice_reader": sluice}
	res.Ratio = measure.Round(sluice.ChangesPerSec/bare.ChangesPerSec, 3)
	res.RatioToBareJetStream = measure.Round(sluice.ChangesPerSec/bareJS.ChangesPerSec, 3)
	res.RatioOfMedians = measure.Round(bare.MedianSeconds/sluice.MedianSeconds, 3)
	if !cfg.skipUnpacked {
		bareJSEach.finish(wl.Changes, wl.WALBytes)
		res.Measurements["bare_pglogrepl_jetstream_unpacked"] = bareJSEach
		res.RatioToBareJetStreamUnpacked = measure.Round(sluice.ChangesPerSec/bareJSEach.ChangesPerSec, 3)
	}
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
	// streamBytes is what SLUICE_CDC stored, when the decode published;
	// messages how many messages, maxEvents the most events of one.
	streamBytes int64
	messages    int64
	maxEvents   int
	// checkSecs is how long reading the stream back took (not timed).
	checkSecs float64
}

// publishMode is what a bare loop publishes to SLUICE_CDC.
type publishMode int

const (
	publishNone   publishMode = iota // (a): nothing
	publishPacked                    // (c): the raw changes, packed as the Reader packs its events
	publishEach                      // (d): the raw changes, one message each
)

// bareDecode streams slot with a minimal pglogrepl loop until it has seen
// every change of the workload, and returns the time to the last change.
// It confirms the received position on each standby status update (every
// 10 s, as the Reader's default, and when the server asks). With a publish
// mode, it also publishes the raw pgoutput message of each change to
// SLUICE_CDC (see rawPacker) and stops the clock when the stream holds
// them all, then reads them back (verifyRaw).
func (b *bench) bareDecode(ctx context.Context, slot string, wl *workload, mode publishMode) (decodeResult, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.timeout)
	defer cancel()
	pcfg, err := pgconn.ParseConfig(b.cfg.dsn)
	if err != nil {
		return decodeResult{}, err
	}
	pcfg.RuntimeParams["replication"] = "database"
	var pack *rawPacker
	var counter *eventCounter
	if mode != publishNone {
		if err := b.stream.Purge(ctx); err != nil {
			return decodeResult{}, err
		}
		limit := b.cfg.msgEvents()
		if mode == publishEach {
			limit = 1
		} else if counter, err = b.countEvents(ctx, wl.Changes); err != nil {
			return decodeResult{}, err
		}
		defer counter.stop()
		pack = &rawPacker{js: b.js, slot: slot, limit: limit, subjects: map[uint32]string{}, expect: []string{protocol.StreamCDC}}
	}
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
			var rel uint32
			switch msg := msg.(type) {
			case *pglogrepl.InsertMessage:
				ins, rel = ins+1, msg.RelationID
			case *pglogrepl.UpdateMessage:
				upd, rel = upd+1, msg.RelationID
			case *pglogrepl.DeleteMessage:
				del, rel = del+1, msg.RelationID
			case *pglogrepl.RelationMessage:
				if pack != nil {
					pack.subjects[msg.RelationID] = protocol.CDCSubject(pipelineThroughput+"-raw", msg.Namespace, msg.RelationName)
				}
				continue
			case *pglogrepl.BeginMessage:
				if pack != nil {
					pack.commitLSN, pack.index = msg.FinalLSN.String(), 0
				}
				continue
			case *pglogrepl.CommitMessage:
				if pack != nil {
					if err := pack.flush(); err != nil {
						return decodeResult{}, err
					}
				}
				if ins+upd+del < wl.Changes {
					continue
				}
				if ins != wl.Inserts || upd != wl.Updates || del != wl.Deletes {
					return decodeResult{}, fmt.Errorf("bare loop: %d inserts, %d updates, %d deletes; want %d, %d, %d",
						ins, upd, del, wl.Inserts, wl.Updates, wl.Deletes)
				}
				res.endLSN = msg.TransactionEndLSN
				switch mode {
				case publishNone:
					return res, nil
				case publishPacked:
					at, err := counter.wait(ctx, nil)
					if err != nil {
						return decodeResult{}, fmt.Errorf("bare loop: %w", err)
					}
					res.secs = at.Sub(start).Seconds()
				case publishEach:
					if err := b.waitStored(ctx, wl.Changes, nil); err != nil {
						return decodeResult{}, fmt.Errorf("bare loop: %w", err)
					}
					res.secs = time.Since(start).Seconds()
				}
				res.cpu = cpuUse{client: measure.SelfCPU() - cpu0, server: measure.ServerCPU() - srv0}
				counter.stop()
				// Not return res, b.verifyRaw(..., &res): the order of the
				// two is unspecified.
				err = b.verifyRaw(ctx, wl, slot, pack.limit, &res)
				return res, err
			default:
				continue
			}
			// A change.
			if pack != nil {
				if err := pack.add(rel, xld.WALData); err != nil {
					return decodeResult{}, err
				}
			}
			if mode == publishNone && ins+upd+del == wl.Changes {
				res.secs = time.Since(start).Seconds()
				res.cpu = cpuUse{client: measure.SelfCPU() - cpu0, server: measure.ServerCPU() - srv0}
			}
		}
	}
}

// rawPacker packs the raw pgoutput messages of the changes of each
// transaction into SLUICE_CDC messages as the Reader packs their events: a
// message holds consecutive changes of one table, at most limit of them and
// at most pgcdc.MaxMessageBytes (a single larger change goes alone), each
// as its length (4 bytes, big-endian) then the pgoutput message. It
// publishes each with PublishMsgAsync and the Reader's headers: the
// Nats-Msg-Id of its first change (protocol.CDCMsgID), the expected
// stream, and Sluice-Events. It does not bound the publishes in flight
// beyond nats.go's own bound: the floor of the Reader's publishing.
type rawPacker struct {
	js    jetstream.JetStream
	slot  string
	limit int
	// subjects holds the subject of each relation, by its ID, from the
	// Relation messages.
	subjects map[uint32]string
	expect   []string

	commitLSN string // of the transaction being received
	index     int    // of its next change

	// The message being packed: its subject, the index of its first
	// change, its change count and its records.
	subject  string
	first, n int
	data     []byte
}

// add adds a change of relation rel, the pgoutput message rec, to the
// message being packed, after publishing that message when it holds
// another table's changes, is full, or would grow past
// pgcdc.MaxMessageBytes with rec.
func (p *rawPacker) add(rel uint32, rec []byte) error {
	subject, ok := p.subjects[rel]
	if !ok {
		return fmt.Errorf("bare loop: change of relation %d before its Relation message", rel)
	}
	if p.n > 0 && (subject != p.subject || p.n >= p.limit) {
		if err := p.flush(); err != nil {
			return err
		}
	}
	if p.n == 0 {
		p.subject, p.first = subject, p.index
	}
	p.index++
	start := len(p.data)
	p.data = binary.BigEndian.AppendUint32(p.data, uint32(len(rec)))
	p.data = append(p.data, rec...)
	p.n++
	if p.n == 1 || len(p.data) <= pgcdc.MaxMessageBytes {
		return nil
	}
	// Too big with rec: publish the others, then start the next message
	// with it (flush leaves the published buffer as it is).
	moved := p.data[start:]
	p.data, p.n = p.data[:start], p.n-1
	if err := p.flush(); err != nil {
		return err
	}
	p.data = append(p.data, moved...)
	p.subject, p.first, p.n = subject, p.index-1, 1
	return nil
}

// flush publishes the message being packed, if it holds any change.
func (p *rawPacker) flush() error {
	if p.n == 0 {
		return nil
	}
	id := protocol.CDCMsgID(p.slot, p.commitLSN, p.first)
	msg := &nats.Msg{Subject: p.subject, Data: p.data, Header: nats.Header{
		jetstream.MsgIDHeader:          []string{id},
		jetstream.ExpectedStreamHeader: p.expect,
		protocol.HeaderEvents:          []string{strconv.Itoa(p.n)},
	}}
	for {
		_, err := p.js.PublishMsgAsync(msg)
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			continue // nats.go's bound of pending acks stayed full: nothing was sent
		}
		if err != nil {
			return fmt.Errorf("bare loop: publish %s: %w", id, err)
		}
		break
	}
	// nats.go keeps msg.Data until the ack: the next message gets a buffer
	// of its own, as the Reader's do.
	p.data = make([]byte, 0, min(cap(p.data), pgcdc.MaxMessageBytes+pgcdc.MaxMessageBytes/8))
	p.n = 0
	return nil
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

// eventCounter follows SLUICE_CDC from its first message with a
// headers-only ordered consumer on the monitoring connection and adds up
// the messages' Sluice-Events headers: the events JetStream stored (it
// delivers a message only once stored). It tells when they reach want.
type eventCounter struct {
	want    int64
	cc      jetstream.ConsumeContext
	reached chan struct{} // closed when the sum reached want, or on err

	mu  sync.Mutex
	sum int64
	at  time.Time // when the sum reached want
	err error
}

// countEvents starts an eventCounter on SLUICE_CDC, which should be empty.
func (b *bench) countEvents(ctx context.Context, want int64) (*eventCounter, error) {
	c := &eventCounter{want: want, reached: make(chan struct{})}
	oc, err := b.mon.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{HeadersOnly: true})
	if err != nil {
		return nil, fmt.Errorf("event counter: %w", err)
	}
	if c.cc, err = oc.Consume(c.record); err != nil {
		return nil, fmt.Errorf("event counter: %w", err)
	}
	return c, nil
}

func (c *eventCounter) record(m jetstream.Msg) {
	now := time.Now()
	n, err := eventsHeader(m)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || !c.at.IsZero() {
		return
	}
	if err != nil {
		c.err = err
		close(c.reached)
		return
	}
	if c.sum += int64(n); c.sum >= c.want {
		c.at = now
		close(c.reached)
	}
}

// wait waits until the stored events reach want and returns when they did,
// or until stop delivers (a Reader that stopped).
func (c *eventCounter) wait(ctx context.Context, stop <-chan error) (time.Time, error) {
	select {
	case <-c.reached:
	case err := <-stop:
		return time.Time{}, fmt.Errorf("stopped early: %v", err)
	case <-ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		return time.Time{}, fmt.Errorf("%d of %d events stored: %w", c.sum, c.want, ctx.Err())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.at, c.err
}

// stop stops the consumer, once; a nil counter is left alone.
func (c *eventCounter) stop() {
	if c != nil && c.cc != nil {
		c.cc.Stop()
		c.cc = nil
	}
}

// eventsHeader returns a message's Sluice-Events header.
func eventsHeader(m jetstream.Msg) (int, error) {
	h := m.Headers().Get(protocol.HeaderEvents)
	n, err := strconv.Atoi(h)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("message %s: %s header %q, want a positive count", m.Headers().Get(jetstream.MsgIDHeader), protocol.HeaderEvents, h)
	}
	return n, nil
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
		MaxInFlight: b.cfg.maxInFlight, MessageEvents: b.cfg.messageEvents,
	}, b.js, b.log)
	if err != nil {
		return decodeResult{}, err
	}
	counter, err := b.countEvents(ctx, wl.Changes)
	if err != nil {
		return decodeResult{}, err
	}
	defer counter.stop()
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

	at, err := counter.wait(ctx, done)
	if err != nil {
		return decodeResult{}, fmt.Errorf("reader on %s: %w", slot, err)
	}
	res := decodeResult{secs: at.Sub(start).Seconds(), cpu: cpuUse{client: measure.SelfCPU() - cpu0, server: measure.ServerCPU() - srv0}}
	counter.stop()
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
	err = b.verifyEvents(ctx, wl, slot, &res)
	return res, err
}

// readStream reads every message of SLUICE_CDC in order, with an ordered
// consumer on the monitoring connection, calls fn on each, and returns the
// stream's state as it was before reading.
func (b *bench) readStream(ctx context.Context, fn func(jetstream.Msg) error) (jetstream.StreamState, error) {
	info, err := b.mon.Info(ctx)
	if err != nil {
		return jetstream.StreamState{}, err
	}
	state := info.State
	if state.Msgs == 0 {
		return state, nil
	}
	oc, err := b.mon.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return state, err
	}
	it, err := oc.Messages(jetstream.PullMaxBytes(16 << 20))
	if err != nil {
		return state, err
	}
	defer it.Stop()
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return state, fmt.Errorf("read SLUICE_CDC back: %w", err)
		}
		if err := fn(m); err != nil {
			return state, err
		}
		md, err := m.Metadata()
		if err != nil {
			return state, err
		}
		if md.Sequence.Stream >= state.LastSeq {
			return state, nil
		}
	}
}

// tally checks the messages of SLUICE_CDC read back: every change of every
// transaction exactly once, that is, per commit LSN the index spans of the
// messages ([first, first+events), from their Nats-Msg-Id and
// Sluice-Events) tile [0, changes of the transaction), and counts them.
type tally struct {
	spans         map[string][][2]int // by commit LSN: first index, events
	msgs, events  int64
	maxEvents     int
	ins, upd, del int64
}

func (t *tally) add(commitLSN string, first, n int) {
	if t.spans == nil {
		t.spans = map[string][][2]int{}
	}
	t.spans[commitLSN] = append(t.spans[commitLSN], [2]int{first, n})
	t.msgs++
	t.events += int64(n)
	t.maxEvents = max(t.maxEvents, n)
}

func (t *tally) check(wl *workload, state jetstream.StreamState) error {
	if t.msgs != int64(state.Msgs) {
		return fmt.Errorf("verify: read %d messages back, SLUICE_CDC holds %d", t.msgs, state.Msgs)
	}
	if t.events != wl.Changes || t.ins != wl.Inserts || t.upd != wl.Updates || t.del != wl.Deletes {
		return fmt.Errorf("verify: SLUICE_CDC holds %d events (%d inserts, %d updates, %d deletes), want %d (%d, %d, %d)",
			t.events, t.ins, t.upd, t.del, wl.Changes, wl.Inserts, wl.Updates, wl.Deletes)
	}
	if int64(len(t.spans)) != wl.Transactions {
		return fmt.Errorf("verify: events of %d transactions, want %d", len(t.spans), wl.Transactions)
	}
	for commit, spans := range t.spans {
		slices.SortFunc(spans, func(a, b [2]int) int { return a[0] - b[0] })
		next := 0
		for _, s := range spans {
			if s[0] != next {
				return fmt.Errorf("verify: transaction %s: a message starts at index %d, want %d (an event twice or missing)", commit, s[0], next)
			}
			next = s[0] + s[1]
		}
	}
	return nil
}

// parseMsgID splits a Nats-Msg-Id of protocol.CDCMsgID into its commit LSN
// and index, and checks its slot.
func parseMsgID(id, slot string) (commitLSN string, index int, err error) {
	parts := strings.Split(id, ":")
	if len(parts) == 3 && parts[0] == slot {
		if index, err = strconv.Atoi(parts[2]); err == nil && index >= 0 {
			return parts[1], index, nil
		}
	}
	return "", 0, fmt.Errorf("verify: Nats-Msg-Id %q, want %s:<commit LSN>:<index>", id, slot)
}

// verifyRaw reads back what a bare loop published to SLUICE_CDC (see
// rawPacker) and checks it holds every change of the workload exactly
// once, at most limit per message; it records the stream's figures in res.
func (b *bench) verifyRaw(ctx context.Context, wl *workload, slot string, limit int, res *decodeResult) error {
	defer func(began time.Time) { res.checkSecs = time.Since(began).Seconds() }(time.Now())
	var t tally
	state, err := b.readStream(ctx, func(m jetstream.Msg) error {
		id := m.Headers().Get(jetstream.MsgIDHeader)
		commit, first, err := parseMsgID(id, slot)
		if err != nil {
			return err
		}
		n, err := eventsHeader(m)
		if err != nil {
			return err
		}
		data := m.Data()
		if n > limit || (n > 1 && len(data) > pgcdc.MaxMessageBytes) {
			return fmt.Errorf("verify: message %s holds %d changes in %d bytes, over %d or %d", id, n, len(data), limit, pgcdc.MaxMessageBytes)
		}
		var rel uint32
		for k := range n {
			if len(data) < 4 || len(data)-4 < int(binary.BigEndian.Uint32(data)) {
				return fmt.Errorf("verify: message %s: change %d of %d is cut short", id, k+1, n)
			}
			rec := data[4 : 4+binary.BigEndian.Uint32(data)]
			data = data[4+len(rec):]
			msg, err := pglogrepl.Parse(rec)
			if err != nil {
				return fmt.Errorf("verify: message %s: change %d: %w", id, k+1, err)
			}
			var r uint32
			switch msg := msg.(type) {
			case *pglogrepl.InsertMessage:
				t.ins, r = t.ins+1, msg.RelationID
			case *pglogrepl.UpdateMessage:
				t.upd, r = t.upd+1, msg.RelationID
			case *pglogrepl.DeleteMessage:
				t.del, r = t.del+1, msg.RelationID
			default:
				return fmt.Errorf("verify: message %s: change %d is a %T", id, k+1, msg)
			}
			if k > 0 && r != rel {
				return fmt.Errorf("verify: message %s holds changes of relations %d and %d", id, rel, r)
			}
			rel = r
		}
		if len(data) > 0 {
			return fmt.Errorf("verify: message %s holds more than its %d changes", id, n)
		}
		t.add(commit, first, n)
		return nil
	})
	if err != nil {
		return err
	}
	if err := t.check(wl, state); err != nil {
		return err
	}
	res.streamBytes, res.messages, res.maxEvents = int64(state.Bytes), t.msgs, t.maxEvents
	return nil
}

// verifyEvents reads back what a Reader published to SLUICE_CDC, decodes
// every event, and checks it holds every change of the workload exactly
// once, packed as the Reader packs, the last one the last change; it
// records the stream's figures in res.
func (b *bench) verifyEvents(ctx context.Context, wl *workload, slot string, res *decodeResult) error {
	defer func(began time.Time) { res.checkSecs = time.Since(began).Seconds() }(time.Now())
	var t tally
	var evs []protocol.ChangeEvent
	var last protocol.ChangeEvent
	state, err := b.readStream(ctx, func(m jetstream.Msg) error {
		id := m.Headers().Get(jetstream.MsgIDHeader)
		n, err := eventsHeader(m)
		if err != nil {
			return err
		}
		data := m.Data()
		if c := protocol.CountChangeEvents(data); c != n {
			return fmt.Errorf("verify: message %s holds %d events, its %s header says %d", id, c, protocol.HeaderEvents, n)
		}
		if evs, err = protocol.AppendChangeEvents(evs[:0], data); err != nil {
			return fmt.Errorf("verify: message %s: %w", id, err)
		}
		if limit := b.cfg.msgEvents(); n > limit || (n > 1 && len(data) > pgcdc.MaxMessageBytes) {
			return fmt.Errorf("verify: message %s holds %d events in %d bytes, over %d or %d", id, n, len(data), limit, pgcdc.MaxMessageBytes)
		}
		first := evs[0]
		if want := protocol.CDCMsgID(slot, first.CommitLSN, first.Index); id != want {
			return fmt.Errorf("verify: message %s, want the Nats-Msg-Id of its first event, %s", id, want)
		}
		if want := protocol.CDCSubject(pipelineThroughput, first.Schema, first.Table); m.Subject() != want {
			return fmt.Errorf("verify: message %s on %s, want %s", id, m.Subject(), want)
		}
		for k, ev := range evs {
			if ev.CommitLSN != first.CommitLSN || ev.Index != first.Index+k || ev.Schema != first.Schema || ev.Table != first.Table {
				return fmt.Errorf("verify: message %s: event %d is index %d of %s on %s.%s, want index %d of %s on %s.%s", id, k+1,
					ev.Index, ev.CommitLSN, ev.Schema, ev.Table, first.Index+k, first.CommitLSN, first.Schema, first.Table)
			}
			switch ev.Op {
			case protocol.OpInsert:
				t.ins++
			case protocol.OpUpdate:
				t.upd++
			case protocol.OpDelete:
				t.del++
			default:
				return fmt.Errorf("verify: message %s: event %d is a %s", id, k+1, ev.Op)
			}
		}
		t.add(first.CommitLSN, first.Index, n)
		last = evs[n-1]
		return nil
	})
	if err != nil {
		return err
	}
	if err := t.check(wl, state); err != nil {
		return err
	}
	res.streamBytes, res.messages, res.maxEvents = int64(state.Bytes), t.msgs, t.maxEvents
	// The last change: the last delete, else the last update, else the
	// last insert.
	op, row, want := protocol.OpInsert, last.After, wl.Inserts
	if wl.Deletes > 0 {
		op, row, want = protocol.OpDelete, last.Before, wl.Deletes
	} else if wl.Updates > 0 {
		op, row, want = protocol.OpUpdate, last.After, wl.Updates
	}
	id := row["id"]
	if last.Op != op || id != protocol.Text(strconv.FormatInt(want, 10)) {
		return fmt.Errorf("verify: last event is the %s of id %v, want the %s of id %d", last.Op, id.Text, op, want)
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

// recordEvents records the change events of a SLUICE_CDC message (one or
// more; those before an undecodable one) by the id of their After rows.
func (a *arrivals) recordEvents(data []byte, now time.Time) {
	evs, _ := protocol.DecodeChangeEvents(data)
	for _, ev := range evs {
		if id, err := strconv.ParseInt(ev.After["id"].Text, 10, 64); err == nil {
			a.record(id, now)
		}
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
			"(keyed by the row id in After, every event of each message decoded) at an ordered consumer of SLUICE_CDC: JetStream stores an event before it " +
			"acks the Reader's publish and before it delivers it, so this bounds commit-to-JetStream-ack from above; " +
			"commit_to_published_event (a core NATS subscriber on the subject) bounds it from below; " +
			"commit_to_bare_decode is the same load decoded by a bare pglogrepl loop (no JetStream), measured after",
		Rate: cfg.rate, Conns: cfg.conns, Sent: n,
		Reader: map[string]any{"heartbeat": "default (10s)", "status_interval": "default (10s)", "max_in_flight": "default (10000)"},
	}
	if cfg.maxInFlight != 0 {
		lat.Reader["max_in_flight"] = cfg.maxInFlight
	}
	lat.Reader["message_events"] = fmt.Sprintf("default (%d)", pgcdc.DefaultMessageEvents)
	if cfg.messageEvents != 0 {
		lat.Reader["message_events"] = cfg.messageEvents
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
	cc, err := oc.Consume(func(m jetstream.Msg) { stored.recordEvents(m.Data(), time.Now()) })
	if err != nil {
		return err
	}
	defer cc.Stop()
	subNC, err := nats.Connect(b.js.Conn().ConnectedUrl())
	if err != nil {
		return err
	}
	defer subNC.Close()
	sub, err := subNC.Subscribe(subject, func(m *nats.Msg) { published.recordEvents(m.Data, time.Now()) })
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()

	r, err := pgcdc.NewReader(pgcdc.Config{
		DSN: cfg.dsn, Slot: slot, Publication: publication, Tables: []string{srcTable}, Pipeline: pipelineLatency,
		MaxInFlight: cfg.maxInFlight, MessageEvents: cfg.messageEvents,
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
		fmt.Fprintln(tw, "measurement\tbest s\tchanges/s\tWAL MB/s\tclient CPU s\tclient CPU µs/change\tserver CPU s\tstream MB\tmessages\tevents/message\tall reps (s)\t")
		for _, k := range []string{"bare_pglogrepl", "bare_pglogrepl_jetstream", "bare_pglogrepl_jetstream_unpacked", "sluice_reader"} {
			m := r.Measurements[k]
			if m == nil {
				continue
			}
			reps := make([]string, len(m.Seconds))
			for i, s := range m.Seconds {
				reps[i] = fmt.Sprintf("%.2f", s)
			}
			server := "-"
			if m.ServerCPU > 0 {
				server = fmt.Sprintf("%.1f", m.ServerCPU)
			}
			stream, msgs, perMsg := "-", "-", "-"
			if m.Messages > 0 {
				stream = fmt.Sprintf("%.1f", float64(m.StreamBytes)/1e6)
				msgs = measure.Thousands(float64(m.Messages))
				perMsg = fmt.Sprintf("%.1f (max %d)", m.EventsPerMessage, m.MaxEventsPerMessage)
			}
			label, _, _ := strings.Cut(m.Label, " as the Reader packs")
			fmt.Fprintf(tw, "%s\t%.2f\t%s\t%.1f\t%.1f\t%.1f\t%s\t%s\t%s\t%s\t%s\t\n", label, m.BestSeconds, measure.Thousands(m.ChangesPerSec), m.WALMBPerSec,
				m.ClientCPU, m.ClientCPUPerChange, server, stream, msgs, perMsg, strings.Join(reps, " "))
		}
		tw.Flush()
		fmt.Fprintf(w, "(a) stops at: %s\n(b) and (c) stop at: %s;\n    in (b)'s best rep, Reader.Status().ConfirmedLSN reached the end of the last transaction at %.2fs\n",
			r.Measurements["bare_pglogrepl"].EndCondition, r.Measurements["sluice_reader"].EndCondition, r.Measurements["sluice_reader"].ConfirmedSeconds)
		fmt.Fprintf(w, "(c) publishes the raw pgoutput messages of the changes, packed as the Reader packs its events (a transaction's consecutive changes of one table, <= %v and <= %d KiB a message), with the Reader's headers: the floor of this design of a pgoutput -> JetStream path here\n",
			r.Packing["max_events"], pgcdc.MaxMessageBytes>>10)
		if m := r.Measurements["bare_pglogrepl_jetstream_unpacked"]; m != nil {
			fmt.Fprintf(w, "(d) publishes them one message per change (as the Reader did before packing); it stops at: %s\n", m.EndCondition)
		}
		fmt.Fprintln(w, "client CPU: this process (for (b) to (d) with the embedded NATS server); server CPU: every postgres process on the machine")
		fmt.Fprintf(w, "Sluice / (a) by median times: %.2fx; Sluice / (c): %.2fx", r.RatioOfMedians, r.RatioToBareJetStream)
		if r.RatioToBareJetStreamUnpacked > 0 {
			fmt.Fprintf(w, "; Sluice / (d): %.2fx", r.RatioToBareJetStreamUnpacked)
		}
		fmt.Fprintln(w)
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
