package cdcapply_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors/cdcapply"
	"github.com/sluicehq/sluice/connectors/cdcapply/cdctest"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
)

// applyChildEnv holds, in the process TestParallelApplyKilled starts, what
// that process applies (an applyChild as JSON).
const applyChildEnv = "SLUICE_TEST_PARALLEL_APPLY_CHILD"

// applyChild is what a child process of TestParallelApplyKilled applies:
// the events of Upstream on the NATS server at URL, to Schema of DSN.
type applyChild struct {
	URL, DSN, Schema, Pipeline, Upstream string
}

// TestParallelApplyKilled: a cdc_apply of 4 tables with parallel: tables
// (3 connections: two tables share one), run by a process killed with
// SIGKILL five times while it applies a stream of transactions that each
// change two tables, and then run to the end, leaves every replica table
// equal to its source (count and checksum of every row), and never wrote
// a row version twice or one older than the row's version before (the
// replica tables' trigger log; v is the source row's update counter).
func TestParallelApplyKilled(t *testing.T) {
	if env := os.Getenv(applyChildEnv); env != "" {
		runApplyChild(t, env)
		return
	}
	dsn, src, conn := pgtest.DB(t)
	_, dst, _ := pgtest.DB(t)
	js := cdctest.StartJS(t)
	ctx := context.Background()
	tables := []string{"k1", "k2", "k3", "k4"}
	pgtest.Exec(t, conn, fmt.Sprintf(`CREATE TABLE %s.applied (n bigserial PRIMARY KEY, tbl text NOT NULL, id bigint NOT NULL, v bigint NOT NULL)`, dst))
	pgtest.Exec(t, conn, fmt.Sprintf(`CREATE FUNCTION %[1]s.log_applied() RETURNS trigger LANGUAGE plpgsql AS
		$$BEGIN INSERT INTO %[1]s.applied (tbl, id, v) VALUES (TG_TABLE_NAME, NEW.id, NEW.v); RETURN NULL; END$$`, dst))
	var qualified []string
	for _, tb := range tables {
		for _, s := range []string{src, dst} {
			pgtest.Exec(t, conn, fmt.Sprintf(`CREATE TABLE %s.%s (id bigint PRIMARY KEY, v bigint NOT NULL, note text)`, s, tb))
		}
		pgtest.Exec(t, conn, fmt.Sprintf(`CREATE TRIGGER applied AFTER INSERT OR UPDATE ON %[1]s.%[2]s FOR EACH ROW EXECUTE FUNCTION %[1]s.log_applied()`, dst, tb))
		qualified = append(qualified, src+"."+tb)
	}
	rd := cdctest.StartReader(t, js, pgcdc.Config{DSN: dsn, Slot: src + "_slot", Publication: src + "_pub", Tables: qualified, Pipeline: "kup"})
	stop := twoTableWriter(t, dsn, src, tables)

	child := applyChild{URL: js.Conn().ConnectedUrl(), DSN: dsn, Schema: dst, Pipeline: "kapply", Upstream: "kup"}
	offset := func() int64 {
		var seq int64
		// Missing until the first child made it: 0.
		_ = conn.QueryRow(ctx, fmt.Sprintf(`SELECT seq FROM %s.sluice_cdc_offsets WHERE pipeline = 'kapply'`, dst)).Scan(&seq)
		return seq
	}
	waitOffset := func(what string, cond func(int64) bool) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for !cond(offset()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the offset is %d", what, offset())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for kill := range 5 {
		// A backlog: the child applies full batches when it is killed.
		time.Sleep(300 * time.Millisecond)
		at := offset()
		p := startApplyChild(t, child)
		waitOffset("applying", func(seq int64) bool { return seq > at })
		time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
		p.kill()
		var ahead int
		if err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %[1]s.sluice_cdc_tables t JOIN %[1]s.sluice_cdc_offsets o USING (pipeline)
			WHERE t.pipeline = 'kapply' AND t.applied_seq > o.seq`, dst)).Scan(&ahead); err != nil {
			t.Fatal(err)
		}
		t.Logf("kill %d: offset %d, %d tables applied past it", kill+1, offset(), ahead)
	}
	writes, err := stop()
	if err != nil {
		t.Fatal(err)
	}
	last := rd.Published()
	p := startApplyChild(t, child)
	waitOffset("every event", func(seq int64) bool { return seq >= int64(last) })
	p.kill()

	for _, tb := range tables {
		wn, wsum := pgtest.Checksum(t, conn, src+"."+tb, "id")
		gn, gsum := pgtest.Checksum(t, conn, dst+"."+tb, "id")
		if wn != gn || wsum != gsum {
			t.Errorf("replica %s holds %d rows (md5 %s), the source %d (md5 %s)", tb, gn, gsum, wn, wsum)
		}
	}
	var n, twice, back, stopped int64
	err = conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), count(*) - count(DISTINCT (tbl, id, v)), count(*) FILTER (WHERE v < prev)
		FROM (SELECT tbl, id, v, lag(v) OVER (PARTITION BY tbl, id ORDER BY n) AS prev FROM %s.applied) l`, dst)).Scan(&n, &twice, &back)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || twice > 0 || back > 0 {
		t.Errorf("%d rows written, %d of them a version written before, %d older than the row's version before", n, twice, back)
	}
	if err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s.sluice_cdc_tables WHERE stopped_seq IS NOT NULL`, dst)).Scan(&stopped); err != nil || stopped != 0 {
		t.Errorf("%d stopped tables (%v)", stopped, err)
	}
	t.Logf("%d transactions, %d messages, %d row versions written", writes, last, n)
}

// twoTableWriter commits transactions that each insert into, update and
// delete from two of the tables until stop is called; stop returns the
// number of transactions and the first error.
func twoTableWriter(t *testing.T, dsn, schema string, tables []string) (stop func() (int, error)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			done <- result{0, err}
			return
		}
		defer conn.Close(context.Background())
		i := 0
		for ; ctx.Err() == nil; i++ {
			a, b := schema+"."+tables[i%len(tables)], schema+"."+tables[(i+1)%len(tables)]
			_, err := conn.Exec(ctx, fmt.Sprintf(`BEGIN;
				INSERT INTO %[1]s (id, v, note) SELECT %[3]d * 10 + g, 0, 'new' FROM generate_series(1, 5) g;
				INSERT INTO %[2]s (id, v, note) SELECT %[3]d * 10 + g, 0, 'new' FROM generate_series(1, 5) g;
				UPDATE %[1]s SET v = v + 1, note = 'u' || %[3]d WHERE id IN (SELECT id FROM %[1]s WHERE id %% 7 = %[4]d LIMIT 5);
				UPDATE %[2]s SET v = v + 1 WHERE id IN (SELECT id FROM %[2]s WHERE id %% 11 = %[5]d LIMIT 5);
				DELETE FROM %[1]s WHERE id IN (SELECT id FROM %[1]s WHERE id %% 13 = %[6]d LIMIT 2);
				COMMIT`, a, b, i, i%7, i%11, i%13))
			if err != nil && ctx.Err() == nil {
				done <- result{i, err}
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		done <- result{i, nil}
	}()
	return func() (int, error) {
		cancel()
		r := <-done
		return r.n, r.err
	}
}

// childProc is a child process of the test binary.
type childProc struct {
	cmd *exec.Cmd
	out *bytes.Buffer
}

// startApplyChild starts this test in a child process that applies c
// until killed.
func startApplyChild(t *testing.T, c applyChild) *childProc {
	t.Helper()
	env, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestParallelApplyKilled$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), applyChildEnv+"="+string(env))
	p := &childProc{cmd: cmd, out: &bytes.Buffer{}}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.kill()
		}
		if t.Failed() {
			t.Logf("child process:\n%s", p.out)
		}
	})
	return p
}

// kill kills the child with SIGKILL and waits for it.
func (p *childProc) kill() {
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
}

// runApplyChild applies what env describes until the process is killed
// (or two minutes passed).
func runApplyChild(t *testing.T, env string) {
	var c applyChild
	if err := json.Unmarshal([]byte(env), &c); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nc, err := nats.Connect(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	pg, err := postgres.NewApplier(ctx, postgres.ApplierConfig{DSN: c.DSN, Schema: c.Schema, Pipeline: c.Pipeline,
		Parallel: postgres.ParallelTables, Connections: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	// Small batches: many of them, so that a kill lands in one.
	cfg := cdcapply.Config{Pipeline: c.Pipeline, Upstream: c.Upstream, BatchSize: 200, BatchWait: 20 * time.Millisecond}
	if err := cdcapply.Run(ctx, js, cfg, pg, nil); err != nil {
		t.Fatal(err)
	}
}
