package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
)

// sluice check -o json prints every window checked, the windows that
// differ marked, and exits non-zero when any differ without --repair;
// with --repair it prints the repair backfill as it ended, and a check
// after it finds every window the same.
func TestCheckJSON(t *testing.T) {
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE TABLE %[1]s.orders (id bigint PRIMARY KEY, note text);
		INSERT INTO %[1]s.orders SELECT g, 'n' || g FROM generate_series(1, 50) g;
		CREATE TABLE %[1]s.orders_copy (LIKE %[1]s.orders)`, schema)); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SLUICE_CLI_TEST_DSN", dsn)
	withDev(t, func(ctx context.Context, l *local, root string) {
		url := l.NATSURL
		spec := writeSpec(t, root, "ids.yaml", fmt.Sprintf(`name: ids
pattern: incremental
source: {kind: postgres, dsn: '${SLUICE_CLI_TEST_DSN}', table: %[1]s.orders}
sink: {kind: postgres, dsn: '${SLUICE_CLI_TEST_DSN}', table: %[1]s.orders_copy}
incremental: {delta_column: id, window: 10, start: 1}
`, schema))
		if out, _, err := sluice(ctx, "apply", "-f", spec, "--nats", url); err != nil {
			t.Fatalf("apply: %v\n%s", err, out)
		}
		for i := 0; ; i++ {
			out, _, err := sluice(ctx, "run", "ids", "--wait", "--nats", url)
			if err != nil {
				t.Fatalf("run: %v\n%s", err, out)
			}
			var n int64
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+schema+".orders_copy").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == 50 {
				break
			}
			if i == 10 {
				t.Fatalf("%d of 50 rows after %d runs", n, i+1)
			}
		}
		pgtest.Exec(t, conn, "DELETE FROM "+schema+".orders_copy WHERE id = 15")

		check := func(args ...string) (checkReport, string, error) {
			t.Helper()
			out, _, err := sluice(ctx, append([]string{"check", "ids", "--from", "1", "--to", "51", "-o", "json", "--nats", url}, args...)...)
			var rep checkReport
			if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil {
				t.Fatalf("check %v printed no JSON (%v): %v\n%s", args, jerr, err, out)
			}
			return rep, out, err
		}
		rep, out, err := check()
		if err == nil || !strings.Contains(err.Error(), "1 window(s) differ") {
			t.Errorf("check of a target missing a row: %v; want an error saying one window differs", err)
		}
		if len(rep.Windows) != 5 || rep.Differ != 1 || rep.Repair != nil {
			t.Fatalf("check: %s; want 5 windows, 1 differing, no repair", out)
		}
		for _, w := range rep.Windows {
			differs := w.Lo == 11
			if w.Same == differs || (differs && (w.SourceRows != 10 || w.TargetRows != 9)) || (!differs && (w.SourceRows != 10 || !w.ChecksumsCompared)) {
				t.Errorf("window %+v: want only [11, 21) different, by one row", w)
			}
		}
		rep, out, err = check("--repair")
		if err != nil || rep.Repair == nil || rep.Repair.Committed != 1 || rep.Repair.Failed != 0 {
			t.Fatalf("check --repair: %v\n%s\nwant the repair backfill, one window committed", err, out)
		}
		if rep, out, err = check(); err != nil || rep.Differ != 0 {
			t.Fatalf("check after the repair: %v\n%s", err, out)
		}
	})
}
