package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"testing"
	"time"
)

// The reference encoding: ChangeEvent as encoding/json marshalled it before
// AppendJSON existed (Value.MarshalJSON calling json.Marshal on the text),
// so that the tests do not compare AppendJSON with itself.

type refValue Value

func (v refValue) MarshalJSON() ([]byte, error) {
	switch {
	case v.Unchanged:
		return []byte(`{"unchanged_toast":true}`), nil
	case v.Null:
		return []byte("null"), nil
	default:
		return json.Marshal(v.Text)
	}
}

type refEvent struct {
	V          int                 `json:"v"`
	Op         Op                  `json:"op"`
	Pipeline   string              `json:"pipeline"`
	Database   string              `json:"database"`
	Schema     string              `json:"schema"`
	Table      string              `json:"table"`
	Key        []string            `json:"key,omitempty"`
	Before     map[string]refValue `json:"before,omitempty"`
	After      map[string]refValue `json:"after,omitempty"`
	LSN        string              `json:"lsn"`
	CommitLSN  string              `json:"commit_lsn"`
	Index      int                 `json:"index"`
	Xid        uint32              `json:"xid"`
	CommitTime time.Time           `json:"commit_time"`
	Relation   *Schema             `json:"relation,omitempty"`
}

func refRow(r Row) map[string]refValue {
	if r == nil {
		return nil
	}
	m := make(map[string]refValue, len(r))
	for k, v := range r {
		m[k] = refValue(v)
	}
	return m
}

// refMarshal is json.Marshal of e stamped with Version, as Encode was.
func refMarshal(e ChangeEvent) ([]byte, error) {
	return json.Marshal(refEvent{
		V: Version, Op: e.Op, Pipeline: e.Pipeline, Database: e.Database, Schema: e.Schema, Table: e.Table,
		Key: e.Key, Before: refRow(e.Before), After: refRow(e.After),
		LSN: e.LSN, CommitLSN: e.CommitLSN, Index: e.Index, Xid: e.Xid, CommitTime: e.CommitTime,
		Relation: e.Relation,
	})
}

// trickyStrings need escaping, are not UTF-8, or sort unexpectedly.
var trickyStrings = []string{
	"", "plain", "Upper", "lower", "a", "a ", "ab", "b",
	`q"uote`, `back\slash`, `\"`, "/slash",
	"nul\x00", "\x01\x07\x1f", "\b\f\n\r\t", "del\x7f",
	"<script>&amp;</script>", "a>b", "&",
	"line\u2028sep\u2029para", "\u2027\u202a",
	"日本語", "ünï", "emoji 😀", "\ufffd", "\uffff",
	"\xff", "bad\xfe\xffbytes", "trunc\xc3", "trunc3\xe2\x80", "\xe2\x80\xa8x", "\xe2\x80",
	"surrogate\xed\xa0\x80", "toolarge\xf4\x90\x80\x80", "overlong\xc0\xaf", "\xf0\x9f\x98",
}

func row(kv ...any) Row {
	r := Row{}
	for i := 0; i < len(kv); i += 2 {
		r[kv[i].(string)] = kv[i+1].(Value)
	}
	return r
}

func checkSame(t *testing.T, name string, e ChangeEvent) {
	t.Helper()
	want, wantErr := refMarshal(e)
	got, err := e.Encode()
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%s: Encode error %v, json.Marshal error %v", name, err, wantErr)
	}
	if wantErr != nil {
		if want := "encode change event: " + wantErr.Error(); err.Error() != want {
			t.Errorf("%s: Encode error %q, want %q", name, err, want)
		}
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: Encode\n got %s\nwant %s", name, got, want)
	}
	prefix := []byte("prefix")
	if got := e.AppendJSON(prefix); !bytes.Equal(got[:len(prefix)], prefix) || !bytes.Equal(got[len(prefix):], want) {
		t.Errorf("%s: AppendJSON\n got %s\nwant prefix%s", name, got, want)
	}
	// json.Marshal of the type itself (its Values' MarshalJSON) agrees too.
	e.V = Version
	if got, err := json.Marshal(e); err != nil || !bytes.Equal(got, want) {
		t.Errorf("%s: json.Marshal\n got %s (%v)\nwant %s", name, got, err, want)
	}
}

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		ny = time.FixedZone("EST", -5*3600)
	}
	base := ChangeEvent{
		V: 7, Op: OpUpdate, Pipeline: "orders", Database: "shop", Schema: "public", Table: "orders",
		Key: []string{"id"}, Before: row("id", Text("1")), After: row("id", Text("1"), "name", Text("x")),
		LSN: "0/16B3748", CommitLSN: "0/16B37A0", Index: 3, Xid: 4242,
		CommitTime: time.Date(2026, 11, 25, 7, 0, 0, 123456789, time.UTC),
	}
	tests := []struct {
		name string
		mut  func(*ChangeEvent)
	}{
		{"base", func(*ChangeEvent) {}},
		{"zero event", func(e *ChangeEvent) { *e = ChangeEvent{} }},
		{"nil rows and key", func(e *ChangeEvent) { e.Key, e.Before, e.After = nil, nil, nil }},
		{"empty rows and key", func(e *ChangeEvent) { e.Key, e.Before, e.After = []string{}, Row{}, Row{} }},
		{"empty key string", func(e *ChangeEvent) { e.Key = []string{""} }},
		{"truncate", func(e *ChangeEvent) { e.Op, e.Key, e.Before, e.After = OpTruncate, nil, nil, nil }},
		{"read", func(e *ChangeEvent) { e.Op, e.Before = OpRead, nil }},
		{"delete", func(e *ChangeEvent) { e.Op, e.After = OpDelete, nil }},
		{"odd op", func(e *ChangeEvent) { e.Op = `<op>"&` }},
		{"relation", func(e *ChangeEvent) {
			e.Relation = &Schema{System: "postgres", Key: []string{"id"}, Columns: []Column{
				{Name: "id", Type: TypeInt64, NotNull: true, Native: "bigint", ID: 1},
				{Name: "<tag>&", Type: TypeList, Elem: &Column{Name: "element", Type: TypeString}, Native: "text[]", Default: "'{}'::text[]", ID: 3},
				{Name: "g", Type: TypeInt64, Native: "bigint", Generated: "(id * 2)", ID: 4},
			}}
		}},
		{"empty vs NULL vs unchanged", func(e *ChangeEvent) {
			e.After = row("empty", Text(""), "null", NullValue, "toast", UnchangedValue, "null text", Text("null"),
				"object text", Text(`{"unchanged_toast":true}`))
		}},
		{"null and unchanged both set", func(e *ChangeEvent) { e.After = row("x", Value{Null: true, Unchanged: true, Text: "t"}) }},
		{"null with text", func(e *ChangeEvent) { e.After = row("x", Value{Null: true, Text: "t"}) }},
		{"key order", func(e *ChangeEvent) {
			e.After = row("b", Text("2"), "a", Text("1"), "B", Text("3"), "ä", Text("4"), "a b", Text("5"), "a\x00", Text("6"),
				"_", Text("7"), "10", Text("8"), "9", Text("9"), "", Text("10"), "\xff", Text("11"), "\xfe", Text("12"))
		}},
		{"many columns", func(e *ChangeEvent) {
			e.After = Row{}
			for i := range 100 {
				e.After[fmt.Sprintf("col%d", (i*37)%100)] = Text(strconv.Itoa(i))
			}
		}},
		{"index and xid limits", func(e *ChangeEvent) { e.Index, e.Xid = math.MaxInt, math.MaxUint32 }},
		{"negative index", func(e *ChangeEvent) { e.Index = -12 }},
		{"zero time", func(e *ChangeEvent) { e.CommitTime = time.Time{} }},
		{"no nanoseconds", func(e *ChangeEvent) { e.CommitTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }},
		{"1 ns", func(e *ChangeEvent) { e.CommitTime = time.Date(2026, 1, 2, 3, 4, 5, 1, time.UTC) }},
		{"trailing zeros", func(e *ChangeEvent) { e.CommitTime = time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.UTC) }},
		{"microseconds", func(e *ChangeEvent) { e.CommitTime = time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC) }},
		{"999999999 ns", func(e *ChangeEvent) { e.CommitTime = time.Date(2026, 1, 2, 3, 4, 5, 999999999, time.UTC) }},
		{"+05:30", func(e *ChangeEvent) {
			e.CommitTime = time.Date(2026, 1, 2, 3, 4, 5, 1000, time.FixedZone("IST", 5*3600+1800))
		}},
		{"-08:00", func(e *ChangeEvent) {
			e.CommitTime = time.Date(1999, 12, 31, 23, 59, 59, 5, time.FixedZone("", -8*3600))
		}},
		{"offset with seconds", func(e *ChangeEvent) { e.CommitTime = time.Date(1900, 1, 1, 0, 0, 0, 0, time.FixedZone("LMT", -17762)) }},
		{"zero offset named", func(e *ChangeEvent) { e.CommitTime = time.Date(2026, 6, 1, 0, 0, 0, 0, time.FixedZone("GMT", 0)) }},
		{"zone database", func(e *ChangeEvent) { e.CommitTime = time.Date(2026, 7, 1, 12, 0, 0, 42, ny) }},
		{"local", func(e *ChangeEvent) { e.CommitTime = time.Date(2026, 7, 1, 12, 0, 0, 42, time.Local) }},
		{"monotonic clock reading", func(e *ChangeEvent) { e.CommitTime = time.Now() }},
		{"year 0", func(e *ChangeEvent) { e.CommitTime = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"year 9999", func(e *ChangeEvent) { e.CommitTime = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC) }},
		{"offset 23:59", func(e *ChangeEvent) {
			e.CommitTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", 23*3600+59*60))
		}},
		// json.Marshal fails on these: Encode must fail with its error.
		{"year 10000", func(e *ChangeEvent) { e.CommitTime = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"year -1", func(e *ChangeEvent) { e.CommitTime = time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"offset 24:00", func(e *ChangeEvent) { e.CommitTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", 24*3600)) }},
		{"offset -100:00", func(e *ChangeEvent) { e.CommitTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", -100*3600)) }},
	}
	for i, s := range trickyStrings {
		tests = append(tests, struct {
			name string
			mut  func(*ChangeEvent)
		}{fmt.Sprintf("string %d %q", i, s), func(e *ChangeEvent) {
			e.Pipeline, e.Database, e.Schema, e.Table, e.LSN, e.CommitLSN = s, s, s, s, s, s
			e.Key = []string{s, "id", s}
			e.Before = row(s, Text(s), "id", Text(s))
			e.After = row(s, Text(s+s), "other"+s, NullValue, s+"x", UnchangedValue)
		}})
	}
	for _, tt := range tests {
		e := base
		e.Key = append([]string(nil), base.Key...)
		tt.mut(&e)
		checkSame(t, tt.name, e)
	}
}

func TestValueMarshalJSON(t *testing.T) {
	for _, s := range trickyStrings {
		want, _ := json.Marshal(s)
		if got, err := Text(s).MarshalJSON(); err != nil || !bytes.Equal(got, want) {
			t.Errorf("Text(%q).MarshalJSON() = %s, %v; want %s", s, got, err, want)
		}
	}
}

// cellsRow is the Row a Reader built from cells before AppendJSONCells:
// column by column, absent cells left out.
func cellsRow(names []string, cells []Cell) Row {
	if cells == nil {
		return nil
	}
	r := Row{}
	for i, c := range cells {
		if i >= len(names) {
			break
		}
		switch c.Kind {
		case CellText:
			r[names[i]] = Text(string(c.Text))
		case CellNull:
			r[names[i]] = NullValue
		case CellUnchanged:
			r[names[i]] = UnchangedValue
		}
	}
	return r
}

func checkCells(t *testing.T, name string, e ChangeEvent, names []string, before, after []Cell) {
	t.Helper()
	e.Before, e.After = cellsRow(names, before), cellsRow(names, after)
	want, err := refMarshal(e)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	e.Before, e.After = Row{"ignored": Text("x")}, nil
	if got := e.AppendJSONCells([]byte("pre"), NewColumns(names), before, after); string(got) != "pre"+string(want) {
		t.Errorf("%s: AppendJSONCells\n got %s\nwant pre%s", name, got, want)
	}
	checkAppendChange(t, name, e, names, before, after)
}

// checkAppendChange checks AppendChange against AppendJSONCells for e (at
// WAL position 0x1_2345ABCD, which it sets in e.LSN).
func checkAppendChange(t *testing.T, name string, e ChangeEvent, names []string, before, after []Cell) {
	t.Helper()
	const lsn = 0x1_2345ABCD
	e.LSN = "1/2345ABCD"
	var tx TxFields
	if err := tx.Set("old/lsn", 1, time.Time{}); err != nil { // overwritten: Set reuses nothing stale
		t.Fatal(err)
	}
	if err := tx.Set(e.CommitLSN, e.Xid, e.CommitTime); err != nil {
		t.Fatalf("%s: TxFields.Set: %v", name, err)
	}
	cols := NewColumns(names)
	want := e.AppendJSONCells([]byte("pre"), cols, before, after)
	got := AppendChange([]byte("pre"), e.Op, NewTableFields(e.Pipeline, e.Database, e.Schema, e.Table, e.Key), cols, before, after, lsn, e.Index, &tx)
	if e.Relation != nil {
		rel, err := json.Marshal(e.Relation)
		if err != nil {
			t.Fatal(err)
		}
		got = AppendRelation(got, rel)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: AppendChange\n got %s\nwant %s", name, got, want)
	}
}

func TestAppendLSN(t *testing.T) {
	for _, l := range []uint64{0, 1, 0xA, 0x1_00000000, 0xFFFFFFFF_FFFFFFFF, 0x5_C4F63830, 0xABCDEF_0123ABCD} {
		if got, want := string(AppendLSN([]byte("x"), l)), fmt.Sprintf("x%X/%X", l>>32, uint32(l)); got != want {
			t.Errorf("AppendLSN(%#x) = %q, want %q", l, got, want)
		}
	}
}

func TestTxFieldsTimeError(t *testing.T) {
	var tx TxFields
	bad := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	_, want := ChangeEvent{CommitTime: bad}.Encode()
	if err := tx.Set("1/2", 3, bad); err == nil || want == nil || err.Error() != want.Error() {
		t.Fatalf("TxFields.Set(year 10000) = %v, want Encode's %v", err, want)
	}
}

func TestAppendChangeAllocs(t *testing.T) {
	e, names, cells := benchEvent()
	cols := NewColumns(names)
	table := NewTableFields(e.Pipeline, e.Database, e.Schema, e.Table, e.Key)
	var tx TxFields
	if err := tx.Set(e.CommitLSN, e.Xid, e.CommitTime); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendChange(buf[:0], OpUpdate, table, cols, nil, cells, 0x5_C4F63830, 7, &tx)
	}); n != 0 {
		t.Errorf("AppendChange allocates %v times, want 0", n)
	}
}

func TestAppendJSONCells(t *testing.T) {
	e := ChangeEvent{Op: OpUpdate, Pipeline: "p", Database: "d", Schema: "s", Table: "t", Key: []string{"id"},
		LSN: "1/2", CommitLSN: "1/3", Index: 1, Xid: 2, CommitTime: time.Date(2026, 1, 1, 0, 0, 0, 5, time.UTC)}
	names := []string{"id", "name", "Amount", "ä", "a", "note"}
	text := func(s string) Cell { return Cell{Kind: CellText, Text: []byte(s)} }
	full := []Cell{text("1"), text("n<&>\"\\\x00\u2028\xff"), {Kind: CellNull}, {Kind: CellUnchanged}, text(""), text("日本")}
	tests := []struct {
		name          string
		names         []string
		before, after []Cell
	}{
		{"insert", names, nil, full},
		{"update with key", names, []Cell{text("0"), {}, {}, {}, {}, {}}, full},
		{"delete", names, full, nil},
		{"empty cells omitted", names, []Cell{}, []Cell{}},
		{"all absent omitted", names, []Cell{{}, {}, {}, {}, {}, {}}, full},
		{"fewer cells than columns", names, full[:2], full[:3]},
		{"more cells than columns", names[:3], full, full},
		{"no columns", nil, full, full},
		{"one column", []string{"x"}, []Cell{{Kind: CellNull}}, []Cell{text("v")}},
		{"repeated name, last present wins", []string{"x", "y", "x", "x"}, []Cell{text("1"), text("2"), text("3"), {}}, []Cell{text("1"), {}, {}, {}}},
		{"repeated name, none present", []string{"x", "x", "y"}, []Cell{{}, {}, text("y")}, []Cell{{}, {}, {}}},
	}
	for i, s := range trickyStrings {
		tests = append(tests, struct {
			name          string
			names         []string
			before, after []Cell
		}{fmt.Sprintf("string %d %q", i, s), []string{s, "c", s + "z", "\x00" + s}, []Cell{text(s), {}, text(s + s)}, []Cell{text(s), {Kind: CellNull}, {Kind: CellUnchanged}, text(s)}})
	}
	for _, tt := range tests {
		checkCells(t, tt.name, e, tt.names, tt.before, tt.after)
	}
	var nilCols *Columns
	want, _ := refMarshal(e)
	if got := e.AppendJSONCells(nil, nilCols, full, full); !bytes.Equal(got, want) {
		t.Errorf("nil Columns: got %s, want %s", got, want)
	}
}

func TestCDCMsgID(t *testing.T) {
	for _, index := range []int{0, 1, 9, 10, 99, 100, 12345, -1, math.MaxInt, math.MinInt} {
		for _, slot := range []string{"s", "sluice_slot", ""} {
			want := fmt.Sprintf("%s:%s:%d", slot, "5/78D46650", index)
			if got := CDCMsgID(slot, "5/78D46650", index); got != want {
				t.Errorf("CDCMsgID(%q, _, %d) = %q, want %q", slot, index, got, want)
			}
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = CDCMsgID("sluice_slot", "5/78D46650", 12345) }); n > 1 {
		t.Errorf("CDCMsgID allocates %v times, want 1", n)
	}
}

// FuzzAppendJSON: AppendJSON and AppendJSONCells write what json.Marshal
// writes for fuzzed strings (in every string field, as row keys and
// values) and times, and Encode fails exactly when json.Marshal does.
func FuzzAppendJSON(f *testing.F) {
	for i, s := range trickyStrings {
		f.Add(s, trickyStrings[(i+1)%len(trickyStrings)], int64(i)*1e17+int64(i), i*1800)
	}
	f.Add("a", "b", int64(math.MaxInt64), 86400)
	f.Add("a", "b", int64(math.MinInt64), -86400)
	f.Fuzz(func(t *testing.T, s1, s2 string, nanos int64, offset int) {
		e := ChangeEvent{
			Op: Op(s2), Pipeline: s1, Database: s2, Schema: s1 + s2, Table: s2 + s1, Key: []string{s1, s2},
			Before: row(s1, Text(s2)), After: row(s1, Text(s1), s2, Text(s2), s1+s2, NullValue, "u"+s2, UnchangedValue),
			LSN: s1, CommitLSN: s2, Index: len(s1), Xid: uint32(nanos),
			// years from about -400000 to 400000, offsets up to ±200 hours
			CommitTime: time.Unix(nanos%(400_000*365*86400), int64(uint64(nanos)%1e9)).In(time.FixedZone(s1, offset%(200*3600))),
		}
		want, wantErr := refMarshal(e)
		got, err := e.Encode()
		if (err != nil) != (wantErr != nil) || err != nil && err.Error() != "encode change event: "+wantErr.Error() {
			t.Fatalf("Encode error %v, json.Marshal error %v", err, wantErr)
		}
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("Encode\n got %s\nwant %s", got, want)
		}
		if err == nil && !bytes.Equal(e.AppendJSON(nil), want) {
			t.Fatalf("AppendJSON\n got %s\nwant %s", e.AppendJSON(nil), want)
		}
		if err != nil {
			return
		}
		names := []string{s1, s2, s1 + s2, "u" + s2}
		after := []Cell{{Kind: CellText, Text: []byte(s1)}, {Kind: CellText, Text: []byte(s2)}, {Kind: CellNull}, {Kind: CellUnchanged}}
		before := []Cell{{Kind: CellText, Text: []byte(s2)}}
		e.Before, e.After = cellsRow(names, before), cellsRow(names, after)
		want, _ = refMarshal(e)
		if got := e.AppendJSONCells(nil, NewColumns(names), before, after); !bytes.Equal(got, want) {
			t.Fatalf("AppendJSONCells\n got %s\nwant %s", got, want)
		}
		checkAppendChange(t, "fuzzed", e, names, before, after)
	})
}

// benchEvent is an update of the bench/cdc table: six columns, as the
// Reader sees them.
func benchEvent() (ChangeEvent, []string, []Cell) {
	names := []string{"id", "customer", "amount", "created_at", "attrs", "quantity"}
	vals := []string{"123456", "customer 4ab9f2c81d07", "69221.77", "2024-01-22 12:22:31.457252+00",
		`{"ref": "e10adc3949ba59abbe56e057f20f883e", "tags": ["a", 3], "tier": 1, "updated": true}`, "865"}
	e := ChangeEvent{Op: OpUpdate, Pipeline: "bench", Database: "sluice_test", Schema: "sluice_bench_cdc", Table: "cdc_src",
		Key: []string{"id"}, After: Row{}, LSN: "5/78D46650", CommitLSN: "5/78D5A0B8", Index: 42, Xid: 123456,
		CommitTime: time.Date(2026, 11, 25, 22, 30, 41, 123456000, time.UTC)}
	cells := make([]Cell, len(names))
	for i, n := range names {
		e.After[n] = Text(vals[i])
		cells[i] = Cell{Kind: CellText, Text: []byte(vals[i])}
	}
	return e, names, cells
}

// BenchmarkChangeEventEncode: json.Marshal is how Encode encoded an event
// before AppendJSON; Row builds the Row from column values as the Reader
// did, then encodes it.
func BenchmarkChangeEventEncode(b *testing.B) {
	e, names, cells := benchEvent()
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := refMarshal(e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := e.Encode(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AppendJSON", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf = e.AppendJSON(buf[:0])
		}
	})
	b.Run("RowAndEncode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ev := e
			ev.After = cellsRow(names, cells)
			if _, err := ev.Encode(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AppendJSONCells", func(b *testing.B) {
		b.ReportAllocs()
		cols := NewColumns(names)
		var buf []byte
		for b.Loop() {
			buf = e.AppendJSONCells(buf[:0], cols, nil, cells)
		}
	})
	b.Run("AppendChange", func(b *testing.B) {
		b.ReportAllocs()
		cols := NewColumns(names)
		table := NewTableFields(e.Pipeline, e.Database, e.Schema, e.Table, e.Key)
		var tx TxFields
		if err := tx.Set(e.CommitLSN, e.Xid, e.CommitTime); err != nil {
			b.Fatal(err)
		}
		var buf []byte
		for b.Loop() {
			buf = AppendChange(buf[:0], e.Op, table, cols, nil, cells, 0x5_78D46650, e.Index, &tx)
		}
	})
}

func BenchmarkCDCMsgID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = CDCMsgID("sluice_bench_cdc_sluice_3", "5/B0BE81F8", 93)
	}
}

func TestParseLSN(t *testing.T) {
	for _, v := range []uint64{0, 1, 0x16B3748, 0x1_2345ABCD, 0xFFFFFFFF_FFFFFFFF} {
		s := string(AppendLSN(nil, v))
		if got, err := ParseLSN(s); err != nil || got != v {
			t.Errorf("ParseLSN(%q) = %x, %v; want %x", s, got, err, v)
		}
	}
	if got, err := ParseLSN("a/b"); err != nil || got != 0xa_0000000b {
		t.Errorf("lower case: %x, %v", got, err)
	}
	for _, bad := range []string{"", "1", "/1", "1/", "x/1", "1/123456789", "1/2/3"} {
		if _, err := ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q): no error", bad)
		}
	}
}
