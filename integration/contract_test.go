package integration

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/contract"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/telemetry"
)

// lockedBuffer is a bytes.Buffer safe for concurrent writers and readers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

// piiLeak finds an original PII value of the test's people table in b:
// the marker every email, name, note and SSN holds (case aside), or a
// phone, birth date or card number as the source holds it. A hashed,
// masked, tokenized or truncated value matches none of them.
var piiLeak = regexp.MustCompile(`(?i)piix|\+1 555 01\d{4}|1917-\d\d-(0[2-9]|[12]\d)|4111 1111 \d{8}`)

// peopleColumns classify the columns of the people table.
var peopleColumns = []string{
	"id: keep",
	"email: {pii: email, action: hash}",
	"name: {pii: name, action: drop}",
	"phone: {pii: phone, action: mask}",
	"born: {pii: birth_date, action: truncate, to: month}",
	"card: {pii: card, action: tokenize}",
	`notes: {action: "null"}`,
	"country: keep",
	"salary: {action: truncate, bucket: 1000}",
	"updated_at: keep",
}

// peopleContract is the strict contract of the people table, as the
// contract section of a spec: by columns for a load, or, given a table
// name, by tables for a cdc pipeline.
func peopleContract(table string) string {
	indent := "    "
	var b strings.Builder
	b.WriteString("contract:\n  strict: true\n  key: ${SLUICE_TEST_CONTRACT_KEY}\n")
	if table == "" {
		b.WriteString("  columns:\n")
	} else {
		indent = "        "
		fmt.Fprintf(&b, "  tables:\n    %s:\n      columns:\n", table)
	}
	for _, c := range peopleColumns {
		b.WriteString(indent + c + "\n")
	}
	b.WriteString(indent[2:] + "filter:\n" + indent + "- {column: country, not_equals: US}\n")
	return b.String()
}

// TestContractLeavesNoPII: a table of people with personal data goes
// through every path a contract guards, on a cluster whose logs (at debug
// level) and traces are captured: full loads into CSV files and into a
// PostgreSQL table, a load whose contract cannot take a value (its task
// dead-lettered), the files load as a Transformation Replicator loading
// incrementally by an updated_at column and the PostgreSQL one as a
// Transformation Replicator loading in full, and a cdc pipeline (snapshot, then inserts, updates and
// a row leaving the filter) applied to a PostgreSQL replica and to a
// files change log (with a contract of its own), then a column added
// mid-stream that the strict contract does not classify. Then every byte
// Sluice wrote is searched for the original values: the files targets
// (versions, staging, the change log), every table of the target
// schemas, JetStream's store (SLUICE_CDC, SLUICE_DLQ, tasks, results), the
// coordinators' data, the logs and the traces. None is found, and the
// copies hold what the contract makes of the rows.
func TestContractLeavesNoPII(t *testing.T) {
	t.Parallel()
	holdSlot(t)
	key := setContractKey()
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	slot := strings.ToLower(schema)
	if len(slot) > 50 {
		slot = slot[:50]
	}
	slot += "_pii"
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	const rows = 300
	// The rows' updated_at fall in the first hour an incremental run
	// loads.
	start := time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour)
	exec(fmt.Sprintf(`CREATE TABLE %[1]s.people (id bigint PRIMARY KEY, email text, name text, phone text, born date, card text,
			notes text, country text, salary numeric(12,2), updated_at timestamptz);
		INSERT INTO %[1]s.people SELECT g, 'PIIX' || g || '.mail@example.com', 'Piix Name ' || g, '+1 555 01' || lpad(g::text, 4, '0'),
			date '1917-01-02' + (g %% 300), '4111 1111 ' || lpad((g * 7919)::text, 8, '0'), 'piix note ' || g,
			(ARRAY['DE', 'FR', 'US'])[1 + g %% 3], g * 123.45, %[3]s + g * interval '1 second'
			FROM generate_series(1, %[2]d) g;
		CREATE INDEX people_country ON %[1]s.people (country);
		CREATE UNIQUE INDEX people_email ON %[1]s.people (email);
		CREATE INDEX people_name ON %[1]s.people (lower(name)) WHERE country <> 'US';
		ALTER TABLE %[1]s.people ADD CONSTRAINT people_salary CHECK (salary > 0);
		CREATE TABLE %[1]s.bad (id bigint PRIMARY KEY, email text, born text);
		INSERT INTO %[1]s.bad VALUES (1, 'piix.bad@example.com', '1917-05-06'), (2, 'piix.worse@example.com', 'piix not a date');
		CREATE SCHEMA %[1]s_out; CREATE SCHEMA %[1]s_r`, schema, rows, "'"+start.Format(time.RFC3339)+"'::timestamptz"))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for range 50 {
			if pgcdc.DropSlot(ctx, dsn, slot, slot) == nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	logs := &lockedBuffer{}
	traces := &lockedBuffer{}
	tp, err := telemetry.Setup(ctx, telemetry.Config{Service: "sluice-test", File: traces})
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, clusterConfig{workers: 2, logs: logs, tracer: tp})
	files, changelog := t.TempDir(), t.TempDir()
	apply := func(y string) {
		t.Helper()
		s, err := pipeline.Load([]byte(y), "spec.yaml", c.reg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.client.Apply(c.ctx(), s); err != nil {
			t.Fatal(err)
		}
	}
	loadContract := peopleContract("")
	for _, p := range []struct{ name, sink, incremental string }{
		{"people-files", fmt.Sprintf("{kind: files, path: %s, format: csv}", files),
			fmt.Sprintf("incremental: {delta_column: updated_at, window: 1h, lag: 5m, start: %s}\n", start.Format(time.RFC3339))},
		{"people-pg", fmt.Sprintf("{kind: postgres, dsn: %q, table: %s_out.people}", dsn, schema), ""},
	} {
		apply(fmt.Sprintf("name: %s\npattern: transform\nsource: {kind: postgres, dsn: %q, table: %s.people}\nsink: %s\npartitioning: {target_rows: 100}\n%s%s",
			p.name, dsn, schema, p.sink, p.incremental, loadContract))
	}
	apply(fmt.Sprintf("name: bad\npattern: full_load\nsource: {kind: postgres, dsn: %q, table: %s.bad}\nsink: {kind: files, path: %s/bad, format: jsonl}\nretry: {max_attempts: 1}\ncontract:\n  strict: true\n  key: ${SLUICE_TEST_CONTRACT_KEY}\n  columns:\n    id: keep\n    email: hash\n    born: {action: truncate, to: month}\n",
		dsn, schema, files))
	for _, name := range []string{"people-files", "people-pg", "bad"} {
		res := c.run(name)
		st := c.wait(res.RunID)
		switch {
		case name == "people-files" && (res.Window == nil || !res.Window.From.Equal(start) || st.Rows != rows-rows/3):
			t.Fatalf("incremental transform: window %v, %d rows; want [%s, +1h) and the %d rows the filter keeps", res.Window, st.Rows, start, rows-rows/3)
		case name == "bad" && st.State != protocol.RunFailed:
			t.Fatalf("run of bad: %s, want failed", st.State)
		case name == "bad" && !strings.Contains(st.Error, `"born"`):
			t.Fatalf("run of bad failed with %q, want the column named", st.Error)
		case name != "bad" && st.State != protocol.RunCommitted:
			t.Fatalf("run of %s: %s (%s)", name, st.State, st.Error)
		}
	}
	expectMessages(t, c.js, protocol.StreamDLQ, protocol.DLQSubject("task", "bad"), 1)

	// CDC: the snapshot, then changes, into a replica and a change log.
	apply(fmt.Sprintf("name: people-cdc\npattern: cdc\nsource: {kind: postgres, dsn: %q, tables: [%s.people]}\ncdc: {slot: %s, publication: %s, lease: 2s}\n%s",
		dsn, schema, slot, slot, peopleContract(schema+".people")))
	apply(fmt.Sprintf("name: people-replica\npattern: cdc_apply\nsource: {kind: cdc, pipeline: people-cdc}\nsink: {kind: postgres, dsn: %q, schema: %s_r, create_tables: true}\ncdc: {lease: 2s}\n", dsn, schema))
	apply(fmt.Sprintf("name: people-log\npattern: cdc_apply\nsource: {kind: cdc, pipeline: people-cdc}\nsink: {kind: files, path: %s}\ncdc: {lease: 2s}\ncontract:\n  tables:\n    %s.people:\n      columns: {phone: drop}\n", changelog, schema))
	replica := func(q string) int {
		var n int
		_ = conn.QueryRow(ctx, fmt.Sprintf(q, schema)).Scan(&n)
		return n
	}
	keptRows := rows - rows/3 // US rows are left out
	waitFor(t, 90*time.Second, "the snapshot in the replica", func() bool { return replica(`SELECT count(*) FROM %s_r.people`) == keptRows })
	exec(fmt.Sprintf(`INSERT INTO %[1]s.people VALUES (1001, 'piix1001@example.com', 'Piix New', '+1 555 019999', '1917-09-09', '4111 1111 99999999', 'piix new note', 'DE', 1)`, schema))
	exec(fmt.Sprintf(`UPDATE %[1]s.people SET email = 'piix.changed' || id || '@example.com', phone = '+1 555 018888' WHERE id %% 10 = 1`, schema))
	exec(fmt.Sprintf(`UPDATE %[1]s.people SET country = 'US' WHERE id = 2`, schema)) // leaves the filter
	defer func() {
		if t.Failed() {
			st, _ := c.client.CDCStatus(c.ctx())
			t.Logf("cdc status: %+v", st)
			l := logs.Bytes()
			t.Logf("logs: %s", l[max(0, len(l)-6000):])
		}
	}()
	waitFor(t, 60*time.Second, "the changes in the replica", func() bool {
		return replica(`SELECT count(*) FROM %s_r.people`) == keptRows+1 && replica(`SELECT count(*) FROM %s_r.people WHERE id = 1001`) == 1
	})

	// A column added mid-stream, not classified: the cdc stream stops,
	// naming it, and nothing of it is published.
	exec(fmt.Sprintf(`ALTER TABLE %[1]s.people ADD COLUMN ssn text; INSERT INTO %[1]s.people (id, email, country, ssn) VALUES (1002, 'piix1002@example.com', 'DE', 'PIIX-123-45-6789')`, schema))
	var streamErr string
	waitFor(t, 60*time.Second, "the cdc stream to stop on the new column", func() bool {
		st, err := c.client.CDCStatus(c.ctx())
		if err != nil {
			return false
		}
		for _, s := range st.Streams {
			if s.Pipeline == "people-cdc" && s.Status.State == protocol.StreamRetrying && strings.Contains(s.Status.Error, `"ssn"`) {
				streamErr = s.Status.Error
				return true
			}
		}
		return false
	})
	t.Logf("cdc stream: %s", streamErr)
	if replica(`SELECT count(*) FROM %s_r.people WHERE id = 1002`) != 0 {
		t.Fatal("the row with the unclassified column reached the replica")
	}

	// What the copies hold.
	h := contract.HashValue([]byte(key), "PIIX4.mail@example.com")
	var email, phone, born, card string
	var notes *string
	if err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT email, phone, born::text, card, notes FROM %s_out.people WHERE id = 4`, schema)).Scan(&email, &phone, &born, &card, &notes); err != nil {
		t.Fatal(err)
	}
	if email != h || phone != "+* *** **0004" || born != "1917-01-01" || notes != nil || len(card) != len("4111 1111 00031676") {
		t.Fatalf("row 4 in the PostgreSQL copy: %q %q %q %q %v", email, phone, born, card, notes)
	}
	// The PostgreSQL copy is a Transformation Replicator over a table
	// passthrough: the source's definition, less what refers to a column
	// the contract changed or dropped.
	var def string
	if err := conn.QueryRow(ctx, `SELECT string_agg(format('%s %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum)
		|| ' / ' || coalesce((SELECT string_agg(pg_get_constraintdef(k.oid), ', ' ORDER BY k.conname) FROM pg_constraint k WHERE k.conrelid = c.oid), '')
		|| ' / ' || coalesce((SELECT string_agg(pg_get_indexdef(i.indexrelid), ', ' ORDER BY 1) FROM pg_index i WHERE i.indrelid = c.oid AND NOT i.indisprimary), '')
		FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		WHERE c.oid = ($1 || '_out.people_v1')::regclass GROUP BY c.oid`, schema).Scan(&def); err != nil {
		t.Fatal(err)
	}
	wantDef := "id bigint, email text, phone text, born date, card text, notes text, country text, salary numeric(12,2), updated_at timestamp with time zone" +
		" / PRIMARY KEY (id) / CREATE INDEX people_v1_people_country ON " + schema + "_out.people_v1 USING btree (country)"
	if !strings.EqualFold(def, wantDef) {
		t.Fatalf("the PostgreSQL copy's definition:\n%s\nwant\n%s", def, wantDef)
	}
	var rEmail string
	if err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT email FROM %s_r.people WHERE id = 4`, schema)).Scan(&rEmail); err != nil || rEmail != h {
		t.Fatalf("row 4 in the replica: %q, %v; want the same hash as the load's", rEmail, err)
	}
	if n := replica(`SELECT count(*) FROM information_schema.columns WHERE table_schema = '%s_r' AND column_name = 'name'`); n != 0 {
		t.Fatal("the replica has the dropped column")
	}

	// Every byte Sluice wrote.
	if err := tp.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
	type haystack struct {
		what string
		data []byte
	}
	var all []haystack
	for _, dir := range append([]string{files, changelog}, c.dirs...) {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err // directories, and current's symlink: what it points at is read
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			all = append(all, haystack{path, b})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	all = append(all, haystack{"the logs", logs.Bytes()}, haystack{"the traces", traces.Bytes()})
	rowsOut, err := conn.Query(ctx, `SELECT table_schema || '.' || table_name FROM information_schema.tables WHERE table_schema IN ($1, $2) AND table_type = 'BASE TABLE'`,
		schema+"_out", schema+"_r")
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rowsOut, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) < 3 {
		t.Fatalf("target tables %v", tables)
	}
	for _, tb := range tables {
		var buf bytes.Buffer
		if _, err := conn.PgConn().CopyTo(ctx, &buf, fmt.Sprintf("COPY (SELECT * FROM %s) TO STDOUT", tb)); err != nil {
			t.Fatal(err)
		}
		all = append(all, haystack{"table " + tb, buf.Bytes()})
	}
	var total int
	for _, h := range all {
		total += len(h.data)
		if loc := piiLeak.FindIndex(h.data); loc != nil {
			lo, hi := max(0, loc[0]-80), min(len(h.data), loc[1]+80)
			t.Errorf("%s holds an original PII value: ...%q...", h.what, h.data[lo:hi])
		}
	}
	// The search finds what it looks for: the source holds it.
	var src bytes.Buffer
	if _, err := conn.PgConn().CopyTo(ctx, &src, fmt.Sprintf("COPY %s.people TO STDOUT", schema)); err != nil || len(piiLeak.FindAllIndex(src.Bytes(), -1)) < rows*5 {
		t.Fatalf("the search finds %d PII values in the source table: %v", len(piiLeak.FindAllIndex(src.Bytes(), -1)), err)
	}
	t.Logf("searched %d places, %d bytes", len(all), total)
}
