package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/csv"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/contract"
)

// pathsContract keeps the id, hashes a column of every common type, masks
// and tokenizes text with escapes and non-ASCII characters.
const pathsContract = `strict: true
key: ${SLUICE_TEST_CONTRACT_KEY}
columns:
  id: keep
  t: hash
  v: hash
  c: hash
  b: hash
  i: hash
  n: hash
  f: hash
  ts: hash
  d: hash
  iv: hash
  ip: hash
  j: hash
  ia: hash
  ta: hash
  by: hash
  e: hash
  u: hash
  m: mask
  k: tokenize
  gone: drop
  nul: null
`

// nullValue stands for NULL in the rows the paths give.
const nullValue = "\x00NULL"

// TestContractSameOnEveryPath: a contract transforms the same values the
// same way on each path a table's rows take to it: a load's CSV batches
// (contract.Writer), a transform's units in COPY's text format
// (contract.CopyText), and its units in COPY's binary format with the
// transformed columns read as text (contract.CopyBinary). Every column
// type hashes to the same value on the three, so that joins across
// patterns match; the binary path's boolean hashes as the text form t or
// f, not true or false.
func TestContractSameOnEveryPath(t *testing.T) {
	t.Parallel()
	key := setContractKey()
	ctx := t.Context()
	dsn, schema, conn := pgtest.DB(t)
	table := schema + ".kinds"
	for _, q := range []string{
		"CREATE TYPE " + schema + ".mood AS ENUM ('sad', 'ok', 'happy')",
		`CREATE TABLE ` + table + ` (id bigint PRIMARY KEY, t text, v varchar(20), c char(6), b bool, i int, n numeric(12,3),
			f float8, ts timestamptz, d date, iv interval, ip inet, j jsonb, ia int[], ta text[], by bytea, e ` + schema + `.mood,
			u uuid, m text, k text, gone text, nul text)`,
		`INSERT INTO ` + table + ` SELECT g,
			CASE WHEN g % 7 = 0 THEN NULL ELSE E'tab\there, new\nline, back\\slash é ' || g END,
			'v' || g, 'c' || (g % 100), g % 3 = 0, CASE WHEN g % 5 = 0 THEN NULL ELSE g * 7 - 500 END,
			g * 1.25 - 99, g / 7.0, timestamptz '2026-01-02 03:04:05.678+00' + g * interval '1 hour 1.5 second',
			date '2026-01-01' + g, g * interval '1 day 2 min', ('10.0.' || (g % 256) || '.1')::inet,
			jsonb_build_object('g', g, 's', E'q"u\\o\te'), ARRAY[g, NULL, -g], ARRAY['a,b', E'x\ty', NULL, 'é'],
			decode(md5(g::text), 'hex') || '\x00'::bytea, (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::` + schema + `.mood,
			md5(g::text)::uuid, E'Ünïcode\tmask ' || g || '@example.com', 'token-' || lpad(g::text, 6, '0'), 'gone', 'nul'
			FROM generate_series(1, 300) g`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	spec, problems := contract.Parse([]byte(pathsContract))
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	ct, err := contract.Compile(spec, func(string) (string, bool) { return key, true })
	if err != nil {
		t.Fatal(err)
	}
	textCols, ok := spec.TextColumns()
	if !ok {
		t.Fatal("the contract does not take binary rows")
	}
	src, err := postgres.NewSource(postgres.SourceConfig{DSN: dsn, Table: table})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	part := connectors.Partitioning{TargetRows: 1 << 20}

	// The load's CSV batches.
	load := map[int64][]string{}
	plan, err := src.Plan(ctx, connectors.PlanRequest{RunID: "load", Pipeline: "paths", Partitioning: part})
	if err != nil {
		t.Fatal(err)
	}
	capture := &batches{}
	w, err := ct.Writer(capture)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range plan.Partitions {
		if err := src.Read(ctx, p, w.Write); err != nil {
			t.Fatal(err)
		}
	}
	src.ReleaseRun("load")
	for _, raw := range capture.raw {
		r := csv.NewReader(bytes.NewReader(raw))
		recs, err := r.ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			for i, v := range rec {
				if v == "" {
					rec[i] = nullValue // a masked or hashed value is never empty here
				}
			}
			addRow(t, load, rec[0], rec[1:])
		}
	}

	units := func(run string, req connectors.PlanRequest, format string) map[int64][]string {
		t.Helper()
		req.RunID, req.Pipeline, req.Partitioning, req.Transform = run, "paths", part, true
		plan, err := src.PlanUnits(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		defer src.ReleaseRun(run)
		out := map[int64][]string{}
		for _, p := range plan.Partitions {
			err := src.ReadUnits(ctx, p, func(ctx context.Context, u connectors.Unit) error {
				if u.Format != format {
					return fmt.Errorf("a unit in format %q, want %q", u.Format, format)
				}
				var body []byte
				var err error
				if format == "binary" {
					if got := slices.Sorted(slices.Values(u.TextColumns)); !slices.Equal(got, textCols) {
						return fmt.Errorf("the unit's text columns are %q, want %q", u.TextColumns, textCols)
					}
					cb, err := ct.CopyBinary(u.Columns, u.TextColumns)
					if err != nil {
						return err
					}
					if body, err = io.ReadAll(cb.Reader(u.Body)); err != nil {
						return err
					}
					return binaryRows(t, out, body)
				}
				tx, err := ct.CopyText(u.Columns)
				if err != nil {
					return err
				}
				if body, err = io.ReadAll(tx.Reader(u.Body)); err != nil {
					return err
				}
				for line := range strings.SplitSeq(strings.TrimSuffix(string(body), "\n"), "\n") {
					f := strings.Split(line, "\t")
					for i := range f {
						f[i] = unescapeCopyText(f[i])
					}
					addRow(t, out, f[0], f[1:])
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	text := units("text", connectors.PlanRequest{}, "text")
	bin := units("binary", connectors.PlanRequest{Binary: true, TextColumns: textCols}, "binary")

	if len(load) != 300 || len(text) != 300 || len(bin) != 300 {
		t.Fatalf("rows: load %d, text units %d, binary units %d; want 300", len(load), len(text), len(bin))
	}
	for id, want := range load {
		if len(want) != 20 { // the 22 columns less id and gone
			t.Fatalf("row %d of the load has %d columns", id, len(want))
		}
		if got := text[id]; !slices.Equal(got, want) {
			t.Errorf("row %d: text units %q, the load %q", id, got, want)
		}
		if got := bin[id]; !slices.Equal(got, want) {
			t.Errorf("row %d: binary units %q, the load %q", id, got, want)
		}
		wantB := map[bool]string{true: "t", false: "f"}[id%3 == 0]
		if got := bin[id][3]; got != contract.HashValue([]byte(key), wantB) {
			t.Errorf("row %d: b hashed to %s, want the hash of %q", id, got, wantB)
		}
		if bin[id][19] != nullValue || id%7 == 0 && bin[id][0] != nullValue {
			t.Errorf("row %d: a nulled column or a NULL hashed: %q", id, bin[id])
		}
	}
}

// batches keeps the CSV batches a contract writer gives.
type batches struct{ raw [][]byte }

func (b *batches) Write(_ context.Context, x connectors.Batch) error {
	if x.Format != connectors.FormatCSV {
		return fmt.Errorf("a %s batch", x.Format)
	}
	b.raw = append(b.raw, slices.Clone(x.Raw))
	return nil
}
func (b *batches) Close(context.Context) (connectors.TaskOutput, error) {
	return connectors.TaskOutput{}, nil
}
func (b *batches) Abort(context.Context) error { return nil }

func addRow(t *testing.T, rows map[int64][]string, id string, rest []string) {
	t.Helper()
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		t.Fatalf("id %q: %v", id, err)
	}
	if _, ok := rows[n]; ok {
		t.Fatalf("row %d twice", n)
	}
	rows[n] = rest
}

// unescapeCopyText reads a field of COPY's text format as the contract
// writes them (\N, and \\, \t, \n, \r escapes).
func unescapeCopyText(f string) string {
	if f == `\N` {
		return nullValue
	}
	return strings.NewReplacer(`\\`, `\`, `\t`, "\t", `\n`, "\n", `\r`, "\r").Replace(f)
}

// binaryRows reads rows of COPY's binary format whose first column is a
// bigint and the others text.
func binaryRows(t *testing.T, rows map[int64][]string, b []byte) error {
	const header = len("PGCOPY\n\xff\r\n\x00") + 8
	if len(b) < header+2 || string(b[:11]) != "PGCOPY\n\xff\r\n\x00" {
		return fmt.Errorf("no header")
	}
	b = b[header:]
	for {
		n := int(int16(binary.BigEndian.Uint16(b)))
		b = b[2:]
		if n == -1 {
			if len(b) != 0 {
				return fmt.Errorf("%d bytes after the trailer", len(b))
			}
			return nil
		}
		var id int64
		var rest []string
		for i := range n {
			l := int(int32(binary.BigEndian.Uint32(b)))
			b = b[4:]
			switch {
			case i == 0 && l == 8:
				id = int64(binary.BigEndian.Uint64(b))
			case i == 0:
				return fmt.Errorf("an id of %d bytes", l)
			case l < 0:
				rest = append(rest, nullValue)
				continue
			default:
				rest = append(rest, string(b[:l]))
			}
			b = b[l:]
		}
		addRow(t, rows, strconv.FormatInt(id, 10), rest)
	}
}
