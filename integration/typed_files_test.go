package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/extensions"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

// typedColumns are the columns of typedTable, and typedSQL renders each
// of its rows as the test compares them: PostgreSQL's own text of each
// value (session in UTC, ISO dates, shortest exact floats, hex bytea),
// timestamps as microseconds since 1970, arrays and documents as JSON.
var typedColumns = []string{"id", "n38", "n12", "nb", "f8", "f4", "ts", "tsl", "d", "tm", "ok", "raw", "jb", "js", "tags", "nums", "u", "note"}

const typedSQL = `SELECT id::text, n38::text, n12::text, nb::text, f8::text, f4::text,
	((extract(epoch FROM ts) * 1000000)::bigint)::text, ((extract(epoch FROM tsl) * 1000000)::bigint)::text,
	d::text, tm::text, ok::text, raw::text, jb::text, js::text, array_to_json(tags)::text, array_to_json(nums)::text,
	u::text, note FROM `

// typedTable creates a PostgreSQL table of awkward values of every type
// a typed files output maps: decimals of 38 digits, of 12, and without a
// precision; floats with NaN, infinities, -0 and extremes; timestamps
// with and without a time zone, before 1970; times; booleans; bytea
// (empty too); jsonb and json (with line breaks inside); arrays with NULL
// elements, empty ones, quotes and newlines; uuid; text with unicode,
// quotes and newlines; NULL in every nullable column.
func typedTable(t *testing.T, conn *pgx.Conn, table string, rows int) {
	t.Helper()
	for _, q := range []string{
		`CREATE TABLE ` + table + ` (id bigint PRIMARY KEY, n38 numeric(38,10), n12 numeric(12,2), nb numeric,
			f8 double precision, f4 real, ts timestamptz, tsl timestamp, d date, tm time, ok boolean, raw bytea,
			jb jsonb, js json, tags text[], nums integer[], u uuid, note text)`,
		fmt.Sprintf(`INSERT INTO %s SELECT g,
			CASE WHEN g %% 11 = 0 THEN NULL WHEN g = 1 THEN 9999999999999999999999999999.9999999999
				ELSE (g * 12345678901.0123456789)::numeric(38,10) * (1 - 2 * (g %% 2)) END,
			CASE WHEN g %% 10 = 0 THEN NULL ELSE (g * 1.37)::numeric(12,2) - 1000 END,
			CASE g %% 4 WHEN 0 THEN NULL WHEN 1 THEN g::numeric / 7 WHEN 2 THEN g * 1000000000000000000000::numeric ELSE g END,
			CASE g %% 13 WHEN 0 THEN NULL WHEN 1 THEN 'NaN' WHEN 2 THEN 'Infinity' WHEN 3 THEN '-Infinity' WHEN 4 THEN 1e300
				WHEN 5 THEN '-0' WHEN 6 THEN 5e-324 ELSE g / 16.0 + 0.1 END,
			CASE g %% 7 WHEN 0 THEN NULL WHEN 1 THEN 'NaN' ELSE g / 3.0 END,
			CASE WHEN g %% 17 = 0 THEN NULL ELSE timestamptz '1965-06-01 00:00:00+00' + g * interval '1 hour 1.000001 second' END,
			timestamp '2024-01-01 00:00:00' + g * interval '1.5 seconds',
			CASE WHEN g %% 19 = 0 THEN NULL ELSE date '1969-12-25' + g %% 400 END,
			time '00:00:00' + g * interval '17.123457 seconds',
			CASE WHEN g %% 5 = 0 THEN NULL ELSE g %% 2 = 0 END,
			CASE g %% 4 WHEN 0 THEN NULL WHEN 1 THEN ''::bytea ELSE decode(md5(g::text), 'hex') END,
			CASE WHEN g %% 23 = 0 THEN NULL ELSE jsonb_build_object('g', g, 's', E'x "y"\n', 'a', jsonb_build_array(1.50, 'z', NULL), 'ü', '€') END,
			('{"k":' || E'\n  ' || g || E',\r\n "t": "a\\nb"}')::json,
			CASE g %% 6 WHEN 0 THEN NULL WHEN 1 THEN '{}' ELSE ARRAY['a b', NULL, E'c,"d"\n' || g, 'NULL'] END,
			ARRAY[g, NULL, -g],
			CASE WHEN g %% 29 = 0 THEN NULL ELSE md5(g::text)::uuid END,
			CASE g %% 9 WHEN 0 THEN NULL WHEN 1 THEN '' ELSE E'l1\nl2\t"q" ü€ ''s,' || md5(g::text) END
			FROM generate_series(1, %d) g`, table, rows),
	} {
		if _, err := conn.Exec(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
}

// typedRows reads the source's rows as typedSQL renders them, by id; a
// NULL is nil.
func typedRows(t *testing.T, conn *pgx.Conn, table string) map[string][]*string {
	t.Helper()
	ctx := context.Background()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, set := range []string{"TimeZone = 'UTC'", "DateStyle = 'ISO, MDY'", "extra_float_digits = 1", "bytea_output = 'hex'"} {
		if _, err := tx.Exec(ctx, "SET LOCAL "+set); err != nil {
			t.Fatal(err)
		}
	}
	rr := conn.PgConn().ExecParams(ctx, typedSQL+table, nil, nil, nil, nil)
	out := map[string][]*string{}
	for rr.NextRow() {
		vals := make([]*string, len(typedColumns))
		for i, v := range rr.Values() {
			if v != nil {
				s := string(v)
				vals[i] = &s
			}
		}
		out[*vals[0]] = vals
	}
	if _, err := rr.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// A full load of awkward types from PostgreSQL through the cluster (2
// workers, several tasks) into a typed Parquet dataset and a typed JSONL
// dataset, each read back independently of Sluice (pqarrow's reader;
// encoding/json) and compared value by value with the source rows: the
// Parquet columns have the catalog's types, the JSON lines numbers,
// booleans, nested documents and arrays. Each run's checksum is what its
// files hold, and the two outputs' checksums are equal.
func TestTypedFilesFromPostgres(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	src := schema + ".typed"
	const rows = 3000
	typedTable(t, conn, src, rows)
	want := typedRows(t, conn, src)
	if len(want) != rows {
		t.Fatalf("source has %d rows", len(want))
	}

	c := newCluster(t, clusterConfig{workers: 2})
	dirs := map[string]string{}
	for _, format := range []string{"parquet", "jsonl"} {
		dirs[format] = t.TempDir()
		c.applyPostgres("typed-"+format, dsn, src, fmt.Sprintf("  kind: files\n  path: %s\n  format: %s\n", dirs[format], format), 400, "")
	}
	sums := map[string]string{}
	for _, format := range []string{"parquet", "jsonl"} {
		res := c.run("typed-" + format)
		st := c.wait(res.RunID)
		if st.State != protocol.RunCommitted || st.Rows != rows || st.Tasks < 4 {
			t.Fatalf("%s run: %s, %d rows in %d tasks (%s)", format, st.State, st.Rows, st.Tasks, st.Error)
		}
		cur, err := files.Current(dirs[format])
		if err != nil {
			t.Fatal(err)
		}
		got, err := files.ReadChecksum(cur, format)
		if err != nil || got.String() != st.Checksum || got.Rows != rows {
			t.Errorf("%s: the files hold %d rows checksum %s (%v); the run reported %s", format, got.Rows, got, err, st.Checksum)
		}
		sums[format] = st.Checksum
		paths, _ := filepath.Glob(filepath.Join(cur, "part-*."+format))
		seen := map[string]bool{}
		for _, p := range paths {
			if format == "parquet" {
				checkTypedParquet(t, p, want, seen)
			} else {
				checkTypedJSONL(t, p, want, seen)
			}
		}
		if len(seen) != rows {
			t.Errorf("%s: %d distinct rows in the files, want %d", format, len(seen), rows)
		}
	}
	if sums["parquet"] != sums["jsonl"] {
		t.Errorf("the Parquet run's checksum %s, the JSONL run's %s: the same rows", sums["parquet"], sums["jsonl"])
	}
}

// checkTypedJSONL compares every line of a JSONL file with the source's
// row of its id.
func checkTypedJSONL(t *testing.T, path string, want map[string][]*string, seen map[string]bool) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.UseNumber()
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			t.Fatalf("%s: %v: %s", path, err, sc.Bytes())
		}
		id, ok := obj["id"].(json.Number)
		if !ok {
			t.Fatalf("%s: id %v is not a number: %s", path, obj["id"], sc.Bytes())
		}
		row := want[id.String()]
		if row == nil || seen[id.String()] {
			t.Fatalf("%s: row %s is not in the source, or twice in the output", path, id)
		}
		seen[id.String()] = true
		if len(obj) != len(typedColumns) {
			t.Errorf("row %s has %d members, want %d", id, len(obj), len(typedColumns))
		}
		for i, name := range typedColumns {
			if msg := compareJSON(name, row[i], obj[name]); msg != "" {
				t.Errorf("JSONL row %s, column %s: %s", id, name, msg)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

// compareJSON compares a JSON value with the source's text of it; it
// returns what differs, or "".
func compareJSON(name string, src *string, v any) string {
	if src == nil {
		if v != nil {
			return fmt.Sprintf("%v, want null", v)
		}
		return ""
	}
	s := *src
	num := func() string {
		n, ok := v.(json.Number)
		if !ok {
			return fmt.Sprintf("%#v is not a JSON number (source %s)", v, s)
		}
		if n.String() != s {
			return fmt.Sprintf("%s, want %s", n, s)
		}
		return ""
	}
	str := func(want string) string {
		if got, ok := v.(string); !ok || got != want {
			return fmt.Sprintf("%#v, want the string %q", v, want)
		}
		return ""
	}
	doc := func() string {
		var w any
		dec := json.NewDecoder(strings.NewReader(s))
		dec.UseNumber()
		if err := dec.Decode(&w); err != nil {
			return err.Error()
		}
		if !reflect.DeepEqual(v, w) {
			return fmt.Sprintf("%#v, want %#v (nested JSON)", v, w)
		}
		return ""
	}
	switch name {
	case "id", "n12":
		return num()
	case "n38", "nb", "d", "tm", "u", "note":
		return str(s)
	case "f8", "f4":
		bits := 64
		if name == "f4" {
			bits = 32
		}
		want, _ := strconv.ParseFloat(s, bits)
		if math.IsNaN(want) || math.IsInf(want, 0) {
			return str(s)
		}
		n, ok := v.(json.Number)
		if !ok {
			return fmt.Sprintf("%#v is not a JSON number (source %s)", v, s)
		}
		got, err := strconv.ParseFloat(n.String(), bits)
		if err != nil || math.Float64bits(got) != math.Float64bits(want) {
			return fmt.Sprintf("%s, want %s", n, s)
		}
	case "ts", "tsl":
		layout := time.RFC3339Nano
		if name == "tsl" {
			layout = "2006-01-02T15:04:05.999999999"
		}
		text, _ := v.(string)
		ts, err := time.Parse(layout, text)
		if err != nil || strconv.FormatInt(ts.UnixMicro(), 10) != s {
			return fmt.Sprintf("%#v (%v), want %s µs", v, err, s)
		}
	case "ok":
		if b, ok := v.(bool); !ok || b != (s == "true") {
			return fmt.Sprintf("%#v, want %s", v, s)
		}
	case "raw":
		text, _ := v.(string)
		b, err := base64.StdEncoding.DecodeString(text)
		if err != nil || `\x`+hex.EncodeToString(b) != s {
			return fmt.Sprintf("%#v, want base64 of %s", v, s)
		}
	case "jb", "js", "tags", "nums":
		return doc()
	}
	return ""
}

// checkTypedParquet reads a Parquet file with pqarrow and compares its
// column types and every value with the source's rows.
func checkTypedParquet(t *testing.T, path string, want map[string][]*string, seen map[string]bool) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pf, err := file.NewParquetReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.NewGoAllocator())
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Release()
	types := []string{"int64", "decimal(38, 10)", "decimal(12, 2)", "utf8", "float64", "float32", "timestamp[us, tz=UTC]",
		"timestamp[us]", "date32", "time64[us]", "bool", "binary", "utf8", "utf8", "list<element: utf8, nullable>",
		"list<element: int32, nullable>", "extension<arrow.uuid>", "utf8"}
	cols := make([]arrow.Array, len(typedColumns))
	for i, name := range typedColumns {
		if f := tbl.Schema().Field(i); f.Name != name || f.Type.String() != types[i] {
			t.Fatalf("%s: column %d is %s %s, want %s %s", path, i, f.Name, f.Type, name, types[i])
		}
		ch := tbl.Column(i).Data()
		if len(ch.Chunks()) != 1 {
			t.Fatalf("%s: %d chunks", path, len(ch.Chunks()))
		}
		cols[i] = ch.Chunk(0)
	}
	for r := range int(tbl.NumRows()) {
		id := strconv.FormatInt(cols[0].(*array.Int64).Value(r), 10)
		row := want[id]
		if row == nil || seen[id] {
			t.Fatalf("%s: row %s is not in the source, or twice in the output", path, id)
		}
		seen[id] = true
		for i, name := range typedColumns {
			if msg := compareArrow(cols[i], r, row[i]); msg != "" {
				t.Errorf("Parquet row %s, column %s: %s", id, name, msg)
			}
		}
	}
}

// compareArrow compares value r of a column read back from Parquet with
// the source's text of it.
func compareArrow(a arrow.Array, r int, src *string) string {
	if src == nil || a.IsNull(r) {
		if (src == nil) != a.IsNull(r) {
			return fmt.Sprintf("NULL in one only: %s / %v", a.ValueStr(r), src)
		}
		return ""
	}
	s := *src
	got := ""
	switch c := a.(type) {
	case *array.Int64:
		got = strconv.FormatInt(c.Value(r), 10)
	case *array.Decimal128:
		got = c.Value(r).ToString(c.DataType().(*arrow.Decimal128Type).Scale)
	case *array.String:
		got = c.Value(r)
	case *array.Float64:
		want, _ := strconv.ParseFloat(s, 64)
		if v := c.Value(r); math.Float64bits(v) != math.Float64bits(want) && !(math.IsNaN(v) && math.IsNaN(want)) {
			return fmt.Sprintf("%v, want %s", v, s)
		}
		return ""
	case *array.Float32:
		want, _ := strconv.ParseFloat(s, 32)
		if v := c.Value(r); math.Float32bits(v) != math.Float32bits(float32(want)) && !(math.IsNaN(float64(v)) && math.IsNaN(want)) {
			return fmt.Sprintf("%v, want %s", v, s)
		}
		return ""
	case *array.Timestamp:
		got = strconv.FormatInt(int64(c.Value(r)), 10)
	case *array.Date32:
		got = time.Unix(int64(c.Value(r))*86400, 0).UTC().Format(time.DateOnly)
	case *array.Time64:
		got = time.UnixMicro(int64(c.Value(r))).UTC().Format("15:04:05.999999")
	case *array.Boolean:
		got = strconv.FormatBool(c.Value(r))
	case *array.Binary:
		got = `\x` + hex.EncodeToString(c.Value(r))
	case *extensions.UUIDArray:
		got = c.Value(r).String()
	case *array.List:
		var w, g any
		if err := json.Unmarshal([]byte(s), &w); err != nil {
			return err.Error()
		}
		lo, hi := c.ValueOffsets(r)
		elems := array.NewSlice(c.ListValues(), lo, hi)
		defer elems.Release()
		text, err := json.Marshal(elems)
		if err != nil || json.Unmarshal(text, &g) != nil || !reflect.DeepEqual(g, w) {
			return fmt.Sprintf("%s, want %s", text, s)
		}
		return ""
	default:
		return fmt.Sprintf("unexpected array %T", a)
	}
	if got != s {
		return fmt.Sprintf("%q, want %q", got, s)
	}
	return ""
}
