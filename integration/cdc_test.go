package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// pgRestartEnv allows a test to restart the PostgreSQL server: `make test`
// sets it for the one invocation that runs such tests alone, since a
// restart would break every other package's tests running at that moment.
const pgRestartEnv = "SLUICE_TEST_PG_RESTART"

var cdcTables = []string{"accounts", "orders", "events"}

// CDC end to end through the cluster: an initial snapshot of three tables
// as chunk tasks, then the slot streamed into SLUICE_CDC and applied to a
// replica by a cdc_apply pipeline, while about 50k inserts, updates and
// deletes run on the source; mid-stream the worker streaming the slot is
// killed (another takes the lease and resumes from the confirmed LSN), the
// Raft leader is killed (the leases outlive it), a column is added to a
// source table and PostgreSQL is restarted. At the
// end every replica table equals its source (count and checksum), and
// SLUICE_CDC holds exactly one read event per snapshot row and one change
// event per committed change, none twice.
func TestCDCFaults(t *testing.T) {
	restart := os.Getenv(pgRestartEnv) == "1"
	if !restart {
		if os.Getenv("CI") != "" || os.Getenv("SLUICE_CI") != "" {
			t.Fatalf("%s needs %s=1 (make test runs it alone with it)", t.Name(), pgRestartEnv)
		}
		t.Skipf("restarts PostgreSQL: run it alone with %s=1 (make test does)", pgRestartEnv)
	}
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	target := schema + "_replica"
	slot := strings.ToLower(schema)
	if len(slot) > 50 {
		slot = slot[:50]
	}
	slot += "_slot"
	exec1 := func(q string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	const initial = 3000
	exec1(fmt.Sprintf(`CREATE TABLE %s.accounts (id bigint PRIMARY KEY, owner text, balance numeric(14,2), tags text[], doc jsonb, updated timestamptz)`, schema))
	exec1(fmt.Sprintf(`CREATE TABLE %s.orders (id bigint PRIMARY KEY, account bigint, amount numeric(12,3), note text, payload text)`, schema))
	exec1(fmt.Sprintf(`CREATE TABLE %s.events (id bigint PRIMARY KEY, kind text, at timestamptz, body bytea)`, schema))
	exec1(fmt.Sprintf(`CREATE TABLE %s.ledger (tbl text, n int)`, schema))
	exec1(fmt.Sprintf(`INSERT INTO %s.accounts SELECT g, 'owner ' || g || ' ü,"x"', g * 1.25, ARRAY['a', 'b' || g], jsonb_build_object('g', g), '2026-01-01Z'::timestamptz + g * interval '1 s' FROM generate_series(1, %d) g`, schema, initial))
	exec1(fmt.Sprintf(`INSERT INTO %s.orders SELECT g, g %% 100, g / 7.0, CASE WHEN g %% 3 = 0 THEN NULL ELSE E'line\n' || g END, CASE WHEN g %% 500 = 0 THEN repeat(md5(g::text), 400) ELSE 'p' END FROM generate_series(1, %d) g`, schema, initial))
	exec1(fmt.Sprintf(`INSERT INTO %s.events SELECT g, CASE WHEN g %% 2 = 0 THEN '' ELSE 'k' END, now(), decode(md5(g::text), 'hex') FROM generate_series(1, %d) g`, schema, initial))
	exec1("CREATE SCHEMA " + target)
	for _, tb := range cdcTables {
		exec1(fmt.Sprintf("CREATE TABLE %s.%s (LIKE %s.%s INCLUDING ALL)", target, tb, schema, tb))
	}
	// Registered before the cluster: cleanups run last first, so the slot
	// is dropped after the workers stopped streaming it.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for i := 0; i < 50; i++ {
			if err := pgcdc.DropSlot(ctx, dsn, slot, slot); err == nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Errorf("slot %s left behind", slot)
	})

	c := newCluster(t, clusterConfig{workers: 3})
	applySpec := func(y string) { t.Helper(); c.applyYAML("spec", y) }
	var tables []string
	for _, tb := range cdcTables {
		tables = append(tables, schema+"."+tb)
	}
	applySpec(fmt.Sprintf("name: shop\npattern: cdc\nsource:\n  kind: postgres\n  dsn: %s\n  tables: [%s]\ncdc:\n  slot: %s\n  publication: %s\n  heartbeat: 1s\n  lease: 3s\n  target_rows: 500\n",
		dsn, strings.Join(tables, ", "), slot, slot))
	applySpec(fmt.Sprintf("name: replica\npattern: cdc_apply\nsource: {kind: cdc, pipeline: shop}\nsink: {kind: postgres, dsn: %q, schema: %s}\n", dsn, target))

	// Changes start once the snapshot is planned: every one of them is
	// then after its consistent point, and is expected in the stream.
	c.snapshotPlanned("shop")

	const total = 50_000
	var done atomic.Int64
	w := &writer{dsn: dsn, schema: schema, next: initial + 1, ids: map[string][]int64{}}
	for _, tb := range cdcTables {
		for i := int64(1); i <= initial; i++ {
			w.ids[tb] = append(w.ids[tb], i)
		}
	}
	wctx, stopWriter := context.WithCancel(ctx)
	defer stopWriter()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.run(wctx, t, total, &done)
	}()

	// Faults, each once the writer is that far.
	at := func(n int64) {
		waitFor(t, 3*time.Minute, fmt.Sprintf("%d changes", n), func() bool { return done.Load() >= n })
	}
	at(total * 3 / 10)
	holder := c.streamHolder("shop")
	c.workerByID(holder).w.Kill()
	t.Logf("killed worker %s streaming the slot at %d changes", holder, done.Load())
	at(total * 4 / 10)
	old := c.leader()
	old.c.Kill()
	old.killed = true
	t.Logf("killed the Raft leader at %d changes; new leader %s", done.Load(), c.leader().c.LeaderID())
	at(total / 2)
	w.addColumn(ctx, t)
	at(total * 6 / 10)
	out, err := exec.Command("pg_ctlcluster", "15", "main", "restart", "-m", "fast").CombinedOutput()
	if err != nil {
		t.Fatalf("restart PostgreSQL: %v\n%s", err, out)
	}
	t.Logf("restarted PostgreSQL at %d changes", done.Load())
	wg.Wait()
	if t.Failed() {
		return
	}
	if h := c.streamHolder("shop"); h == holder {
		t.Errorf("the killed worker %s still holds the slot's lease", h)
	}

	// The replica converges to the source.
	vconn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer vconn.Close(ctx)
	sums := func(s, tb string) string {
		sum, err := postgres.TableChecksum(ctx, vconn, fmt.Sprintf("SELECT * FROM %s.%s", s, tb))
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%d rows %s", sum.Rows, sum.String())
	}
	for _, tb := range cdcTables {
		var want, got string
		ok := waitForOK(2*time.Minute, func() bool {
			want, got = sums(schema, tb), sums(target, tb)
			return want == got
		})
		if !ok {
			st, _ := c.client.CDCStatus(c.ctx())
			t.Fatalf("replica %s: %s, source: %s\nstreams: %+v", tb, got, want, st)
		}
		t.Logf("%s: replica = source = %s", tb, want)
	}

	// The stream holds every change once.
	expected := map[string]int{}
	rows, err := vconn.Query(ctx, fmt.Sprintf("SELECT tbl, sum(n)::int FROM %s.ledger GROUP BY tbl", schema))
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var tb string
		var n int
		if err := rows.Scan(&tb, &n); err != nil {
			t.Fatal(err)
		}
		expected[tb] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	got := c.cdcEvents("shop")
	var changes int
	for _, tb := range cdcTables {
		key := schema + "." + tb
		if got.reads[key] != initial || got.snapshots[key] != 1 {
			t.Errorf("%s: %d read events and %d snapshot events, want %d (one per snapshot row) and 1", tb, got.reads[key], got.snapshots[key], initial)
		}
		if got.changes[key] != expected[tb] {
			t.Errorf("%s: %d change events in SLUICE_CDC, want %d committed changes", tb, got.changes[key], expected[tb])
		}
		changes += expected[tb]
	}
	if got.dups > 0 {
		t.Errorf("%d change events appear twice (same commit LSN and index)", got.dups)
	}
	if got.reordered > 0 {
		t.Errorf("%d change events of a key come after a later change of it in SLUICE_CDC; first: %s", got.reordered, got.first)
	}
	if changes < total {
		t.Errorf("only %d changes committed, want at least %d", changes, total)
	}
	if got.afterColumn == 0 {
		t.Error("no event carries the column added mid-stream")
	}
	t.Logf("SLUICE_CDC: %d read and %d change events in %d messages", 3*initial, changes, got.msgs)
}

// writer runs random transactions of inserts, updates and deletes on the
// three tables, recording in the ledger table, in the same transaction,
// how many rows of each table it changed.
type writer struct {
	dsn    string
	schema string
	next   int64
	ids    map[string][]int64
	added  atomic.Bool
}

func (w *writer) addColumn(ctx context.Context, t *testing.T) {
	t.Helper()
	conn, err := pgx.Connect(ctx, w.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s.orders ADD COLUMN coupon text", w.schema)); err != nil {
		t.Fatal(err)
	}
	w.added.Store(true)
}

func (w *writer) run(ctx context.Context, t *testing.T, total int64, done *atomic.Int64) {
	rng := rand.New(rand.NewPCG(1, 2))
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	failures := 0
	for done.Load() < total && ctx.Err() == nil {
		if conn == nil {
			c, err := pgx.Connect(ctx, w.dsn)
			if err != nil {
				failures++
				if failures > 200 {
					t.Errorf("writer: %v", err)
					return
				}
				time.Sleep(100 * time.Millisecond)
				continue
			}
			conn = c
		}
		n, ids, next, err := w.tx(ctx, conn, rng)
		if err != nil {
			conn.Close(context.Background())
			conn = nil
			failures++
			if failures > 200 {
				t.Errorf("writer: %v", err)
				return
			}
			continue
		}
		w.ids, w.next = ids, next
		done.Add(int64(n))
		time.Sleep(time.Millisecond)
	}
}

// tx runs one transaction of 10 changes on copies of the id lists; they
// replace the writer's only when it committed.
func (w *writer) tx(ctx context.Context, conn *pgx.Conn, rng *rand.Rand) (int, map[string][]int64, int64, error) {
	ids := map[string][]int64{}
	for k, v := range w.ids {
		ids[k] = v
	}
	next := w.next
	counts := map[string]int{}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, nil, 0, err
	}
	defer tx.Rollback(context.Background())
	for range 10 {
		tb := cdcTables[rng.IntN(len(cdcTables))]
		list := ids[tb]
		var q string
		var args []any
		switch op := rng.IntN(10); {
		case op < 4 || len(list) < 100: // insert
			id := next
			next++
			switch tb {
			case "accounts":
				q, args = "INSERT INTO %s.accounts VALUES ($1, $2, $3, $4, $5, now())", []any{id, fmt.Sprintf("new %d, \"ü\"\n", id), float64(id) / 4, []string{"n", fmt.Sprint(id)}, map[string]any{"id": id}}
			case "orders":
				q, args = "INSERT INTO %s.orders (id, account, amount, note, payload) VALUES ($1, $2, $3, NULL, $4)", []any{id, id % 100, float64(id) / 8, strings.Repeat("x", int(id%7))}
				if w.added.Load() && id%2 == 0 {
					q, args = "INSERT INTO %s.orders (id, account, amount, note, payload, coupon) VALUES ($1, $2, $3, NULL, $4, $5)", append(args, fmt.Sprintf("C%d", id))
				}
			case "events":
				q, args = "INSERT INTO %s.events VALUES ($1, 'new', now(), $2)", []any{id, []byte{0, byte(id), '\\', 'x'}}
			}
			ids[tb] = append(list[:len(list):len(list)], id)
		case op < 8: // update
			id := list[rng.IntN(len(list))]
			switch tb {
			case "accounts":
				q, args = "UPDATE %s.accounts SET balance = balance + 1, tags = tags || 'u'::text, updated = now() WHERE id = $1", []any{id}
			case "orders":
				// payload, TOASTed on some rows, is left unchanged.
				q, args = "UPDATE %s.orders SET amount = amount * 2, note = coalesce(note, '') || 'u' WHERE id = $1", []any{id}
			case "events":
				q, args = "UPDATE %s.events SET kind = kind || 'u', body = body || '\\x01'::bytea WHERE id = $1", []any{id}
			}
		default: // delete
			i := rng.IntN(len(list))
			id := list[i]
			q, args = "DELETE FROM %s."+tb+" WHERE id = $1", []any{id}
			l := make([]int64, 0, len(list)-1)
			l = append(l, list[:i]...)
			ids[tb] = append(l, list[i+1:]...)
		}
		tag, err := tx.Exec(ctx, fmt.Sprintf(q, w.schema), args...)
		if err != nil {
			return 0, nil, 0, err
		}
		counts[tb] += int(tag.RowsAffected())
	}
	total := 0
	for tb, n := range counts {
		if _, err := tx.Exec(ctx, fmt.Sprintf("INSERT INTO %s.ledger VALUES ($1, $2)", w.schema), tb, n); err != nil {
			return 0, nil, 0, err
		}
		total += n
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, nil, 0, err
	}
	return total, ids, next, nil
}

// streamHolder returns the worker holding a stream's lease.
func (c *cluster) streamHolder(name string) string {
	c.t.Helper()
	var holder string
	waitFor(c.t, 30*time.Second, "a holder of "+name, func() bool {
		st, err := c.client.CDCStatus(c.ctx())
		if err != nil {
			return false
		}
		for _, s := range st.Streams {
			if s.Pipeline == name && s.Worker != "" && s.Status.State == protocol.StreamStreaming {
				holder = s.Worker
				return true
			}
		}
		return false
	})
	return holder
}

// snapshotPlanned waits until the initial snapshot of cdc pipeline name
// is planned, on its slot's exported snapshot. Changes committed from then
// on are streamed; the slot alone is not enough: it is listed in
// pg_replication_slots while it waits for the transactions running to end,
// and one of the test's own that ends then is in the snapshot instead
// (never in the stream).
func (c *cluster) snapshotPlanned(name string) {
	c.t.Helper()
	waitFor(c.t, 2*time.Minute, "the snapshot of "+name+" planned", func() bool {
		st, err := c.client.CDCStatus(c.ctx())
		if err != nil {
			return false
		}
		for _, s := range st.Streams {
			if s.Pipeline == name && s.SnapshotRun != "" {
				run, err := c.client.GetRun(c.ctx(), s.SnapshotRun)
				return err == nil && run.Tasks > 0
			}
		}
		return false
	})
}

func (c *cluster) workerByID(id string) *workerProc {
	c.t.Helper()
	for _, w := range c.workers {
		if w.w.ID() == id {
			return w
		}
	}
	c.t.Fatalf("no worker %q", id)
	return nil
}

type cdcCount struct {
	reads, changes map[string]int // by schema.table
	snapshots      map[string]int // snapshot events, by schema.table
	dups           int
	afterColumn    int // events carrying orders.coupon
	msgs           int // messages holding them
	// last is the position (commit LSN, index) of the last change event
	// of each row key (schema.table and key values); reordered counts the
	// change events of a key that come after a later one of it in the
	// stream, first the first of them.
	last      map[string][2]uint64
	reordered int
	first     string
}

// cdcEvents reads every event of a cdc pipeline in SLUICE_CDC.
func (c *cluster) cdcEvents(name string) cdcCount {
	c.t.Helper()
	ctx := c.ctx()
	cons, err := c.js.OrderedConsumer(ctx, protocol.StreamCDC, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"sluice.cdc." + name + ".>"}})
	if err != nil {
		c.t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	left := info.NumPending
	out := cdcCount{reads: map[string]int{}, changes: map[string]int{}, snapshots: map[string]int{}, last: map[string][2]uint64{}}
	seen := map[string]bool{}
	for left > 0 {
		batch, err := cons.Fetch(int(min(left, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			c.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			evs, err := protocol.DecodeChangeEvents(m.Data())
			if err != nil {
				c.t.Fatalf("message on %s: %v", m.Subject(), err)
			}
			if h := m.Headers().Get(protocol.HeaderEvents); h != strconv.Itoa(len(evs)) {
				c.t.Fatalf("message on %s: %s header %q, holds %d events", m.Subject(), protocol.HeaderEvents, h, len(evs))
			}
			out.msgs++
			for _, ev := range evs {
				out.add(ev, seen)
			}
		}
		if err := batch.Error(); err != nil {
			c.t.Fatal(err)
		}
		if n == 0 {
			c.t.Fatalf("stream stopped delivering with %d messages left", left)
		}
		left -= uint64(n)
	}
	return out
}

// add counts one event; seen holds the positions of the change events
// counted.
func (out *cdcCount) add(ev protocol.ChangeEvent, seen map[string]bool) {
	key := ev.Schema + "." + ev.Table
	switch ev.Op {
	case protocol.OpRead:
		out.reads[key]++
		return
	case protocol.OpSnapshot:
		out.snapshots[key]++
		return
	}
	out.changes[key]++
	id := fmt.Sprintf("%s:%d", ev.CommitLSN, ev.Index)
	if seen[id] {
		out.dups++
		return
	}
	seen[id] = true
	// Per key, changes come in commit order: the key the row had before
	// the change and the one it has after.
	commit, err := protocol.ParseLSN(ev.CommitLSN)
	if err != nil {
		out.reordered++
		out.first = fmt.Sprintf("event %s: commit LSN: %v", id, err)
	}
	pos := [2]uint64{commit, uint64(ev.Index)}
	for _, row := range []protocol.Row{ev.Before, ev.After} {
		if row == nil || len(ev.Key) == 0 {
			continue
		}
		k := key
		for _, col := range ev.Key {
			k += fmt.Sprintf("|%v", row[col])
		}
		if prev, ok := out.last[k]; ok && (pos[0] < prev[0] || pos[0] == prev[0] && pos[1] < prev[1]) {
			out.reordered++
			if out.first == "" {
				out.first = fmt.Sprintf("key %s: change %s comes after %X/%d", k, id, prev[0], prev[1])
			}
		}
		out.last[k] = pos
	}
	if _, ok := ev.After["coupon"]; ok {
		out.afterColumn++
	}
}

// tryApply applies a pipeline spec given as YAML through the control API
// and returns the API's error; a spec that does not load fails the test.
func (c *cluster) tryApply(y string) error {
	c.t.Helper()
	s, err := pipeline.Load([]byte(y), "spec.yaml", c.reg, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	_, err = c.client.Apply(c.ctx(), s)
	return err
}

// cdcSlot names the slot (and publication) of a test's cdc pipeline after
// its schema, and drops them when the test ends, once the cluster stopped
// streaming them (call it before the cluster starts).
func cdcSlot(t *testing.T, dsn, schema, suffix string) string {
	slot := strings.ToLower(schema)
	if len(slot) > 50 {
		slot = slot[:50]
	}
	slot += suffix
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for range 50 {
			if pgcdc.DropSlot(ctx, dsn, slot, slot) == nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Errorf("slot %s left behind", slot)
	})
	return slot
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !waitForOK(d, cond) {
		t.Fatalf("no %s within %s", what, d)
	}
}

func waitForOK(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}
