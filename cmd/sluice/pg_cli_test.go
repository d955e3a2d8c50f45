package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/protocol"
)

// withDev runs body against an all-in-one cluster whose connectors say
// they run in "sluice dev", as `sluice dev`'s do.
func withDev(t *testing.T, body func(ctx context.Context, l *local, root string)) {
	t.Helper()
	runCluster(t, newRegistryIn("sluice dev"), 2, body)
}

// Items 7 and 8: apply --check connects from the coordinator to each
// source and sink and refuses, storing nothing, what does not fit (a
// missing table, a column that is not there, a table without a key for
// cdc, a missing directory); --dry-run stores nothing either. A password
// written in a spec is warned of and never shown; an unset variable is
// said to be missing from the environment of the process that opens the
// connector.
func TestApplyCheckAndSecrets(t *testing.T) {
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE TABLE %[1]s.orders (id bigint PRIMARY KEY, at timestamptz, note text);
		INSERT INTO %[1]s.orders SELECT g, now(), 'n' FROM generate_series(1, 50) g;
		CREATE TABLE %[1]s.nokey (id bigint, note text);
		CREATE VIEW %[1]s.userview AS SELECT id FROM %[1]s.orders`, schema)); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SLUICE_CLI_TEST_DSN", dsn)
	withDev(t, func(ctx context.Context, l *local, root string) {
		url := l.NATSURL
		full := func(name, table, sinkTable string) string {
			return fmt.Sprintf("name: %s\npattern: full_load\nsource: {kind: postgres, dsn: '${SLUICE_CLI_TEST_DSN}', table: %s.%s}\nsink: {kind: postgres, dsn: '${SLUICE_CLI_TEST_DSN}', table: %s.%s}\n", name, schema, table, schema, sinkTable)
		}
		incr := fmt.Sprintf("name: incr\npattern: incremental\nsource: {kind: postgres, dsn: '${SLUICE_CLI_TEST_DSN}', table: %s.orders}\nsink: {kind: files, path: %s}\nincremental: {delta_column: updated_at, window: 1h, start: 2026-01-01T00:00:00Z}\n", schema, filepath.Join(root, "out"))
		byID := func(name, column, window string) string {
			return fmt.Sprintf("name: %s\npattern: incremental\nsource: {kind: postgres, dsn: '${SLUICE_CLI_TEST_DSN}', table: %s.orders}\nsink: {kind: files, path: %s}\nincremental: {delta_column: %s, %s}\n",
				name, schema, filepath.Join(root, "out"), column, window)
		}
		cdc := fmt.Sprintf("name: cdcx\npattern: cdc\nsource: {kind: postgres, dsn: '${SLUICE_CLI_TEST_DSN}', tables: [%s.orders, %s.nokey]}\ncdc: {slot: %s_x, publication: %s_x}\n", schema, schema, schema, schema)
		files := fmt.Sprintf("name: filesx\npattern: full_load\nsource: {kind: files, path: %s, format: jsonl}\nsink: {kind: files, path: %s}\n", filepath.Join(root, "missing"), filepath.Join(root, "out"))
		for _, c := range []struct{ spec, want string }{
			{full("orderz", "orderz", "copy"), fmt.Sprintf("line 3: source.table: table %s.orderz does not exist", schema)},
			{incr, `incremental.delta_column: table ` + schema + `.orders has no column "updated_at"`},
			{byID("idtime", "id", "window: 1h, start: 2026-01-01T00:00:00Z"), `incremental.delta_column: column "id" of ` + schema + `.orders is bigint; want timestamptz, timestamp or date (for an integer column, give incremental.window as a number of values)`},
			{byID("atvalues", "at", "window: 1000, start: 1"), `incremental.delta_column: column "at" of ` + schema + `.orders is timestamp with time zone; windows of integer values (window: N) want smallint, integer, bigint or numeric without scale`},
			{cdc, fmt.Sprintf("source.tables[1]: table %s.nokey has no primary key (REPLICA IDENTITY DEFAULT)", schema)},
			{files, "source.path: " + filepath.Join(root, "missing") + " does not exist"},
			{full("tonokey", "orders", "nokey"), fmt.Sprintf("sink.table: %s.nokey exists and is not a view", schema)},
			// A view of the user's would be replaced by the commit.
			{full("touserview", "orders", "userview"), fmt.Sprintf("sink.table: %s.userview is a view that no load made", schema)},
			{strings.Replace(full("passnokey", "orders", "nokey"), "full_load", "passthrough", 1), fmt.Sprintf("sink.table: %s.nokey exists and is not a view", schema)},
		} {
			p := writeSpec(t, root, "check.yaml", c.spec)
			_, _, err := sluice(ctx, "apply", "--check", "-f", p, "--nats", url)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "nothing was stored") {
				t.Errorf("apply --check of\n%s: %v\nwant %q", c.spec, err, c.want)
			}
		}
		good := writeSpec(t, root, "good.yaml", full("orders", "orders", "orders_copy"))
		out, _, err := sluice(ctx, "apply", "-f", good, "--dry-run", "--nats", url)
		if err != nil || !strings.Contains(out, fmt.Sprintf("orders: checked source: table %s.orders: 3 columns, key id", schema)) || !strings.Contains(out, "nothing stored") {
			t.Errorf("apply --dry-run: %v\n%s", err, out)
		}
		ids := writeSpec(t, root, "ids.yaml", byID("ids", "id", "window: 1000, start: 1, max_rows_per_run: 10"))
		if out, _, err := sluice(ctx, "apply", "-f", ids, "--dry-run", "--nats", url); err != nil || !strings.Contains(out, "ids: checked source") {
			t.Errorf("apply --dry-run of windows of integer values: %v\n%s", err, out)
		}
		if ps, err := l.Client.Pipelines(ctx); err != nil || len(ps) != 0 {
			t.Fatalf("pipelines after the checks: %+v %v; want none stored", ps, err)
		}
		if out, _, err := sluice(ctx, "apply", "-f", good, "--check", "--nats", url); err != nil || !strings.Contains(out, "pipeline orders created") {
			t.Errorf("apply --check of a good spec: %v\n%s", err, out)
		}

		// A password as written: refused unless the spec allows it, then
		// warned of at apply, never shown.
		literal := strings.Replace(dsn, "sluice@", "sluice:hunter2@", 1)
		text := strings.ReplaceAll(full("secret", "orders", "orders_s"), "'${SLUICE_CLI_TEST_DSN}'", "'"+literal+"'")
		secret := writeSpec(t, root, "secret.yaml", text)
		_, errOut, err := sluice(ctx, "apply", "-f", secret, "--nats", url)
		if err == nil || !strings.Contains(err.Error(), "source.dsn: holds a password as written") || strings.Contains(err.Error()+errOut, "hunter2") {
			t.Errorf("apply of a spec with a password: %v; stderr %q; want it refused naming source.dsn", err, errOut)
		}
		if ps, err := l.Client.Pipelines(ctx); err != nil || len(ps) != 1 {
			t.Fatalf("pipelines after the refused spec: %+v %v; want only orders", ps, err)
		}
		secret = writeSpec(t, root, "secret.yaml", strings.TrimRight(text, "\n")+"\nallow_literal_secrets: true\n")
		_, errOut, err = sluice(ctx, "apply", "-f", secret, "--nats", url)
		if err != nil || !strings.Contains(errOut, "source.dsn holds a password as written") || !strings.Contains(errOut, "${SLUICE_PG_DSN}") {
			t.Errorf("apply of a spec with a password: %v; stderr %q", err, errOut)
		}
		for _, args := range [][]string{{"pipelines", "get", "secret"}, {"pipelines", "get", "secret", "-o", "json"}} {
			out, _, err := sluice(ctx, append(args, "--nats", url)...)
			if err != nil || strings.Contains(out, "hunter2") || !strings.Contains(out, "sluice:xxxxx@") {
				t.Errorf("%v shows the password or no redaction: %v\n%s", args, err, out)
			}
		}
		// A dead letter holding one shows it redacted.
		js, err := jetstream.New(l.NC)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := coordinator.PublishTrigger(ctx, js, "nosuch", protocol.Trigger{Params: map[string]string{"dsn": literal}}, "dl-1"); err != nil {
			t.Fatal(err)
		}
		var seq string
		for deadline := time.Now().Add(30 * time.Second); seq == ""; time.Sleep(100 * time.Millisecond) {
			out, _, _ := sluice(ctx, "dlq", "list", "-o", "json", "--nats", url)
			var dls []deadLetterView
			if json.Unmarshal([]byte(out), &dls) == nil && len(dls) > 0 {
				seq = fmt.Sprint(dls[0].Seq)
			}
			if time.Now().After(deadline) {
				t.Fatal("the trigger of an unknown pipeline was not dead-lettered")
			}
		}
		out, _, err = sluice(ctx, "dlq", "show", seq, "--nats", url)
		if err != nil || strings.Contains(out, "hunter2") || !strings.Contains(out, "sluice:xxxxx@") {
			t.Errorf("dlq show: %v\n%s", err, out)
		}
		if _, _, err := sluice(ctx, "dlq", "show", "99", "--nats", url); err == nil || !strings.Contains(err.Error(), "dead letter 99 not found") {
			t.Errorf("dlq show 99: %v", err)
		}

		// An unset variable is missing from the coordinator's environment.
		unset := writeSpec(t, root, "unset.yaml", strings.ReplaceAll(full("unset", "orders", "orders_u"), "SLUICE_CLI_TEST_DSN", "SLUICE_CLI_TEST_UNSET"))
		if _, _, err := sluice(ctx, "apply", "-f", unset, "--nats", url); err != nil {
			t.Fatal(err)
		}
		_, _, err = sluice(ctx, "run", "unset", "--wait", "--nats", url)
		want := fmt.Sprintf("environment variable SLUICE_CLI_TEST_UNSET is not set in the environment of sluice dev (pid %d)", os.Getpid())
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("a run with an unset variable: %v; want %q", err, want)
		}
	})
}
