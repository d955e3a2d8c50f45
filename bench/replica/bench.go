package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/embednats"
)

// bench holds what the measurements share.
type bench struct {
	cfg       config
	log       *slog.Logger
	src       *pgx.Conn // the source database: setup and workload
	tgt       *pgx.Conn // the target database: setup and polling
	targetDSN string
	js        jetstream.JetStream
	n         int // measurements so far: names their slots and pipelines
}

// replicator is one way of keeping a replica: native logical replication
// or Sluice.
type replicator interface {
	name() string
	// prepare makes the slot (and the subscription, disabled) before the
	// workload.
	prepare(ctx context.Context, tables []string) error
	// start starts replicating.
	start(ctx context.Context) error
	// stop stops replicating and drops what prepare made.
	stop()
}

// run sets up the databases and the NATS server, runs every measurement
// and writes the results.
func run(ctx context.Context, cfg config) error {
	began := time.Now()
	if cfg.profile != "" {
		f, err := os.Create(cfg.profile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	hdr := harness.NewHeader("replica", cfg.smoke, "shared, noisy machine: native and Sluice run one after the other on the same workload and machine; trust the ratios more than the absolute figures")
	src, err := pgx.Connect(ctx, cfg.dsn)
	if err != nil {
		return fmt.Errorf("connect to %s (run `make services`): %w", cfg.dsn, err)
	}
	defer src.Close(context.Background())
	if err := src.QueryRow(ctx, "SHOW server_version").Scan(&hdr.PostgreSQL); err != nil {
		return err
	}
	if err := harness.Lock(ctx, src, cfg.schema, os.Stdout); err != nil {
		return err
	}
	b := &bench{cfg: cfg, src: src, log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if err := b.setupTarget(ctx); err != nil {
		return err
	}
	defer b.tgt.Close(context.Background())
	defer b.cleanup()

	dir, err := os.MkdirTemp("", "sluice-bench-replica-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := embednats.Start(embednats.Config{StoreDir: dir, Name: "sluice-bench-replica"})
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

	res := results{Header: hdr, Changes: cfg.changes, TxRows: cfg.txRows, Reps: cfg.reps}
	for rep := range cfg.reps {
		for _, n := range cfg.tables {
			for _, live := range []bool{false, true} {
				for _, r := range b.replicators(n) {
					m, err := b.throughput(ctx, r, n, live)
					if err != nil {
						return fmt.Errorf("%s, %d tables, %s: %w", r.name(), n, mode(live), err)
					}
					fmt.Printf("rep %d: %-7s %d table(s) %-8s %s changes/s in %.2f s (caught up %.3f s after the last commit)\n", rep+1, m.Replicator, m.Tables, m.Mode,
						measure.Thousands(m.ChangesPerSec), m.Seconds, m.AfterLastCommit)
					res.keep(m)
				}
			}
		}
	}
	for _, r := range b.replicators(1) {
		l, err := b.latency(ctx, r)
		if err != nil {
			return fmt.Errorf("%s, latency: %w", r.name(), err)
		}
		res.Latency = append(res.Latency, l)
		fmt.Printf("%-7s latency at %d tx/s: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d rows)\n", l.Replicator, l.Rate, l.P50, l.P99, l.Max, l.Rows)
	}
	res.compare()
	res.Finish()
	res.TotalSeconds = measure.Round(time.Since(began).Seconds(), 1)
	report(os.Stdout, res)
	if err := harness.WriteJSON(cfg.out, res); err != nil {
		return err
	}
	fmt.Printf("results: %s\n", cfg.out)
	for _, t := range res.Targets {
		if !t.Met && !cfg.smoke {
			fmt.Printf("target not met: %s (%s, got %.2f)\n", t.Name, t.Want, t.Value)
		}
	}
	return nil
}

func mode(live bool) string {
	if live {
		return "live"
	}
	return "backlog"
}

// replicators are the replicators of a workload of n tables: native,
// Sluice, and on more than one table Sluice with parallel: tables; --only
// keeps native, or those whose name starts with its value.
func (b *bench) replicators(n int) []replicator {
	all := []replicator{&native{b: b}, &sluice{b: b}}
	if n > 1 {
		all = append(all, &sluice{b: b, parallel: true})
	}
	var out []replicator
	for _, r := range all {
		if b.cfg.only == "" || strings.HasPrefix(r.name(), b.cfg.only) {
			out = append(out, r)
		}
	}
	return out
}

// setupTarget creates the target database when missing and connects to
// it.
func (b *bench) setupTarget(ctx context.Context) error {
	var exists bool
	if err := b.src.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", b.cfg.targetDB).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := b.src.Exec(ctx, "CREATE DATABASE "+b.cfg.targetDB); err != nil {
			return fmt.Errorf("create the target database: %w", err)
		}
	}
	u, err := url.Parse(b.cfg.dsn)
	if err != nil || u.Scheme == "" {
		return fmt.Errorf("--dsn must be a postgres:// URL (the target database is the same server's %s)", b.cfg.targetDB)
	}
	u.Path = "/" + b.cfg.targetDB
	b.targetDSN = u.String()
	if b.tgt, err = pgx.Connect(ctx, b.targetDSN); err != nil {
		return fmt.Errorf("connect to the target database: %w", err)
	}
	return b.dropLeftovers(ctx)
}

// dropLeftovers drops what an earlier run left: its subscriptions, slots,
// publications and schemas.
func (b *bench) dropLeftovers(ctx context.Context) error {
	rows, err := b.tgt.Query(ctx, "SELECT subname FROM pg_subscription WHERE starts_with(subname, $1)", b.cfg.schema)
	if err != nil {
		return err
	}
	subs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, s := range subs {
		b.dropSubscription(ctx, s)
	}
	if _, err := b.src.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
		WHERE starts_with(slot_name::text, $1) AND NOT active`, b.cfg.schema); err != nil {
		return fmt.Errorf("drop leftover slots: %w", err)
	}
	rows, err = b.src.Query(ctx, "SELECT pubname FROM pg_publication WHERE starts_with(pubname, $1)", b.cfg.schema)
	if err != nil {
		return err
	}
	pubs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, p := range pubs {
		if _, err := b.src.Exec(ctx, "DROP PUBLICATION "+pgx.Identifier{p}.Sanitize()); err != nil {
			return err
		}
	}
	for _, c := range []*pgx.Conn{b.src, b.tgt} {
		if _, err := c.Exec(ctx, "DROP SCHEMA IF EXISTS "+b.cfg.schema+" CASCADE; DROP SCHEMA IF EXISTS "+b.cfg.schema+"_s CASCADE"); err != nil {
			return err
		}
	}
	return nil
}

// dropSubscription disables a subscription, detaches it from its slot
// (which the replicator drops) and drops it.
func (b *bench) dropSubscription(ctx context.Context, name string) {
	sub := pgx.Identifier{name}.Sanitize()
	for _, sql := range []string{"ALTER SUBSCRIPTION " + sub + " DISABLE", "ALTER SUBSCRIPTION " + sub + " SET (slot_name = NONE)", "DROP SUBSCRIPTION " + sub} {
		if _, err := b.tgt.Exec(ctx, sql); err != nil {
			fmt.Fprintf(os.Stderr, "replica: %s: %v\n", sql, err)
		}
	}
}

// cleanup drops what the run left, on success or not.
func (b *bench) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.dropLeftovers(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "replica: cleanup: %v\n", err)
	}
}

// dropSlot drops a slot, retrying while its walsender exits.
func (b *bench) dropSlot(slot string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var err error
	for range 100 {
		if err = pgcdc.DropSlot(ctx, b.cfg.dsn, slot, ""); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "replica: drop slot %s: %v\n", slot, err)
}

// tableDDL creates a source table: the 6 typed columns of bench/cdc.
const tableDDL = `CREATE TABLE %s (
	id         bigint PRIMARY KEY,
	customer   text NOT NULL,
	amount     numeric(12,2) NOT NULL,
	created_at timestamptz NOT NULL,
	attrs      jsonb,
	quantity   integer)`

// setupTables recreates the schema with n empty tables in the source and
// the target (the native subscriber needs its tables; Sluice's replica,
// in the target schema <schema>_s, creates its own) and returns their
// names, schema-qualified.
func (b *bench) setupTables(ctx context.Context, n int) ([]string, error) {
	var tables []string
	for i := range n {
		tables = append(tables, fmt.Sprintf("%s.t%d", b.cfg.schema, i+1))
	}
	for _, c := range []*pgx.Conn{b.src, b.tgt} {
		sqls := []string{"DROP SCHEMA IF EXISTS " + b.cfg.schema + " CASCADE", "DROP SCHEMA IF EXISTS " + b.cfg.schema + "_s CASCADE", "CREATE SCHEMA " + b.cfg.schema}
		for _, t := range tables {
			sqls = append(sqls, fmt.Sprintf(tableDDL, t))
		}
		for _, sql := range sqls {
			if _, err := c.Exec(ctx, sql); err != nil {
				return nil, fmt.Errorf("set up tables: %w", err)
			}
		}
	}
	return tables, nil
}

// workload commits the throughput workload on the tables: inserts, then
// updates, then deletes, in transactions of txRows rows, each on the next
// table in turn, then one transaction per table that inserts its marker
// row (id 0). It returns when its first and last transactions committed.
func (b *bench) workload(ctx context.Context, tables []string) (first, last time.Time, err error) {
	cfg := b.cfg
	inserts := cfg.changes * 60 / 100
	updates := cfg.changes * 25 / 100
	deletes := cfg.changes - inserts - updates
	if _, err := b.src.Exec(ctx, "SET synchronous_commit = off"); err != nil {
		return first, last, err
	}
	defer b.src.Exec(context.Background(), "RESET synchronous_commit")
	n := int64(len(tables))
	tx := 0
	for _, step := range []struct {
		rows int64
		sql  string
	}{
		{inserts, `INSERT INTO %s SELECT i, 'customer ' || substr(md5(i::text), 1, 12), round(i * 1.37 %% 100000, 2),
			timestamptz '2024-01-01 00:00:00+00' + i * interval '15.123457 second',
			jsonb_build_object('tier', i %% 5, 'tags', jsonb_build_array('a', i %% 7), 'ref', md5(i::text)),
			CASE WHEN i %% 50 = 0 THEN NULL ELSE (i * 7) %% 1000 END
			FROM generate_series($1::bigint, $2::bigint) AS i`},
		{updates, `UPDATE %s SET amount = amount + 1, quantity = coalesce(quantity, 0) + 1,
			attrs = attrs || '{"updated": true}', created_at = created_at + interval '1 day' WHERE id BETWEEN $1 AND $2`},
		{deletes, `DELETE FROM %s WHERE id BETWEEN $1 AND $2`},
	} {
		// Table k gets the rows whose transaction number is k modulo n:
		// its ids are those of its transactions.
		for lo := int64(1); lo <= step.rows; lo += cfg.txRows {
			hi := min(lo+cfg.txRows-1, step.rows)
			t := tables[(lo/cfg.txRows)%n]
			if _, err := b.src.Exec(ctx, fmt.Sprintf(step.sql, t), lo, hi); err != nil {
				return first, last, fmt.Errorf("workload: %w", err)
			}
			if tx == 0 {
				first = time.Now()
			}
			tx++
		}
	}
	for _, t := range tables {
		if _, err := b.src.Exec(ctx, "INSERT INTO "+t+" VALUES (0, 'end', 0, now(), NULL, 0)"); err != nil {
			return first, last, fmt.Errorf("workload: %w", err)
		}
	}
	return first, time.Now(), nil
}

// caughtUp waits until every table of the replica (in schema) holds its
// marker row, polling every 5 ms, and returns when it saw them.
func (b *bench) caughtUp(ctx context.Context, schema string, tables []string) (time.Time, error) {
	var parts []string
	for _, t := range tables {
		_, name, _ := strings.Cut(t, ".")
		parts = append(parts, fmt.Sprintf("(SELECT count(*) FROM %s.%s WHERE id = 0)", schema, name))
	}
	sql := "SELECT " + strings.Join(parts, " + ")
	ctx, cancel := context.WithTimeout(ctx, b.cfg.timeout)
	defer cancel()
	for {
		var n int
		err := b.tgt.QueryRow(ctx, sql).Scan(&n)
		if err != nil && ctx.Err() != nil {
			return time.Time{}, fmt.Errorf("the replica did not catch up in %s", b.cfg.timeout)
		}
		// A table Sluice creates on its first event may not exist yet.
		if err == nil && n == len(tables) {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("the replica did not catch up in %s", b.cfg.timeout)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// checkReplica compares every table of the replica (in schema) with its
// source: count and checksum of every column.
func (b *bench) checkReplica(ctx context.Context, schema string, tables []string) error {
	for _, t := range tables {
		_, name, _ := strings.Cut(t, ".")
		sum := func(c *pgx.Conn, table string) (int64, string, error) {
			var n int64
			var s string
			err := c.QueryRow(ctx, `SELECT count(*), md5(coalesce(string_agg(x::text, E'\n' ORDER BY id), '')) FROM `+table+` x`).Scan(&n, &s)
			return n, s, err
		}
		wn, ws, err := sum(b.src, t)
		if err != nil {
			return err
		}
		gn, gs, err := sum(b.tgt, schema+"."+name)
		if err != nil {
			return err
		}
		if wn != gn || ws != gs {
			return fmt.Errorf("replica %s.%s holds %d rows (md5 %s), the source %d (md5 %s)", schema, name, gn, gs, wn, ws)
		}
	}
	return nil
}

// throughput measures one replicator on a workload of n tables, as a
// backlog or live.
func (b *bench) throughput(ctx context.Context, r replicator, n int, live bool) (throughputResult, error) {
	res := throughputResult{Replicator: r.name(), Tables: n, Mode: mode(live), Changes: b.cfg.changes}
	tables, err := b.setupTables(ctx, n)
	if err != nil {
		return res, err
	}
	if err := r.prepare(ctx, tables); err != nil {
		return res, err
	}
	defer r.stop()
	var began, last, done time.Time
	var client, server float64
	if live {
		client, server = measure.SelfCPU(), measure.ServerCPU()
		if err := r.start(ctx); err != nil {
			return res, err
		}
		if began, last, err = b.workload(ctx, tables); err != nil {
			return res, err
		}
	} else {
		if _, last, err = b.workload(ctx, tables); err != nil {
			return res, err
		}
		began = time.Now()
		client, server = measure.SelfCPU(), measure.ServerCPU()
		if err := r.start(ctx); err != nil {
			return res, err
		}
	}
	if done, err = b.caughtUp(ctx, replicaSchema(b.cfg.schema, r), tables); err != nil {
		return res, err
	}
	res.Seconds = measure.Round(done.Sub(began).Seconds(), 3)
	res.ChangesPerSec = measure.Round(float64(b.cfg.changes)/done.Sub(began).Seconds(), 0)
	res.AfterLastCommit = measure.Round(done.Sub(last).Seconds(), 3)
	res.ClientCPU, res.ServerCPU = measure.Round(measure.SelfCPU()-client, 2), measure.Round(measure.ServerCPU()-server, 2)
	res.CPUMicrosChange = measure.Round((res.ClientCPU+res.ServerCPU)*1e6/float64(b.cfg.changes), 1)
	if err := b.checkReplica(ctx, replicaSchema(b.cfg.schema, r), tables); err != nil {
		return res, err
	}
	res.Verified = true
	return res, nil
}

// replicaSchema is the target schema of a replicator's replica: native
// replication maps a table to the same name; Sluice's goes to <schema>_s.
func replicaSchema(schema string, r replicator) string {
	if _, ok := r.(*sluice); ok {
		return schema + "_s"
	}
	return schema
}

// latency measures one replicator: single-row inserts at cfg.rate for
// cfg.duration on one table, each row's time from its COMMIT's return to
// its first sight on the replica.
func (b *bench) latency(ctx context.Context, r replicator) (latencyResult, error) {
	res := latencyResult{Replicator: r.name(), Rate: b.cfg.rate, Seconds: b.cfg.duration.Seconds()}
	tables, err := b.setupTables(ctx, 1)
	if err != nil {
		return res, err
	}
	if err := r.prepare(ctx, tables); err != nil {
		return res, err
	}
	defer r.stop()
	if err := r.start(ctx); err != nil {
		return res, err
	}
	// Warm up: the first row creates Sluice's table.
	if _, err := b.src.Exec(ctx, "INSERT INTO "+tables[0]+" VALUES (0, 'warm', 0, now(), NULL, 0)"); err != nil {
		return res, err
	}
	if _, err := b.caughtUp(ctx, replicaSchema(b.cfg.schema, r), tables); err != nil {
		return res, err
	}
	_, name, _ := strings.Cut(tables[0], ".")
	replica := replicaSchema(b.cfg.schema, r) + "." + name
	total := int(b.cfg.duration.Seconds() * float64(b.cfg.rate))
	committed := make([]time.Time, total+1)
	seen := make([]time.Time, total+1)
	pollCtx, stopPoll := context.WithCancel(ctx)
	pollDone := make(chan error, 1)
	go func() {
		conn, err := pgx.Connect(pollCtx, b.targetDSN)
		if err != nil {
			pollDone <- err
			return
		}
		defer conn.Close(context.Background())
		var max int64
		for pollCtx.Err() == nil && max < int64(total) {
			var m int64
			if err := conn.QueryRow(pollCtx, "SELECT coalesce(max(id), 0) FROM "+replica).Scan(&m); err != nil && pollCtx.Err() == nil {
				pollDone <- err
				return
			}
			now := time.Now()
			for i := max + 1; i <= m; i++ {
				seen[i] = now
			}
			if m > max {
				max = m
			}
			time.Sleep(2 * time.Millisecond)
		}
		pollDone <- nil
	}()
	every := time.Second / time.Duration(b.cfg.rate)
	next := time.Now()
	for i := 1; i <= total; i++ {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		next = next.Add(every)
		if _, err := b.src.Exec(ctx, "INSERT INTO "+tables[0]+" VALUES ($1, 'lat', 1, now(), NULL, 1)", i); err != nil {
			stopPoll()
			return res, err
		}
		committed[i] = time.Now()
	}
	deadline := time.Now().Add(30 * time.Second)
	for seen[total].IsZero() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	stopPoll()
	if err := <-pollDone; err != nil && !errors.Is(err, context.Canceled) {
		return res, err
	}
	var ms []float64
	for i := 1; i <= total; i++ {
		if seen[i].IsZero() {
			res.Missing++
			continue
		}
		ms = append(ms, float64(seen[i].Sub(committed[i]).Microseconds())/1000)
	}
	slices.Sort(ms)
	res.Rows = len(ms)
	if len(ms) > 0 {
		res.P50 = measure.Round(ms[len(ms)/2], 1)
		res.P99 = measure.Round(ms[len(ms)*99/100], 1)
		res.Max = measure.Round(ms[len(ms)-1], 1)
	}
	if res.Missing > 0 {
		return res, fmt.Errorf("%d of %d rows not on the replica 30 s after the last commit", res.Missing, total)
	}
	return res, nil
}
