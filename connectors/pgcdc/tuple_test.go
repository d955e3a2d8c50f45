package pgcdc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/sluicehq/sluice/protocol"
)

// The columns of the test tuples.
func text(s string) *pglogrepl.TupleDataColumn {
	return &pglogrepl.TupleDataColumn{DataType: 't', Length: uint32(len(s)), Data: []byte(s)}
}

var (
	null  = &pglogrepl.TupleDataColumn{DataType: 'n'}
	toast = &pglogrepl.TupleDataColumn{DataType: 'u'}
)

func tuple(cols ...*pglogrepl.TupleDataColumn) *pglogrepl.TupleData {
	return &pglogrepl.TupleData{ColumnNum: uint16(len(cols)), Columns: cols}
}

// encode encodes an Insert, Update or Delete message of pgoutput protocol
// version 1, as PostgreSQL does.
func encode(m pglogrepl.Message) []byte {
	var b []byte
	switch m := m.(type) {
	case *pglogrepl.InsertMessage:
		b = binary.BigEndian.AppendUint32([]byte{'I'}, m.RelationID)
		b = appendTuple(append(b, 'N'), m.Tuple)
	case *pglogrepl.UpdateMessage:
		b = binary.BigEndian.AppendUint32([]byte{'U'}, m.RelationID)
		if m.OldTupleType != 0 {
			b = appendTuple(append(b, m.OldTupleType), m.OldTuple)
		}
		b = appendTuple(append(b, 'N'), m.NewTuple)
	case *pglogrepl.DeleteMessage:
		b = binary.BigEndian.AppendUint32([]byte{'D'}, m.RelationID)
		b = appendTuple(append(b, m.OldTupleType), m.OldTuple)
	default:
		panic(fmt.Sprintf("encode %T", m))
	}
	return b
}

func appendTuple(b []byte, t *pglogrepl.TupleData) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(t.Columns)))
	for _, c := range t.Columns {
		b = append(b, c.DataType)
		if c.DataType == 't' || c.DataType == 'b' {
			b = binary.BigEndian.AppendUint32(b, uint32(len(c.Data)))
			b = append(b, c.Data...)
		}
	}
	return b
}

// refCells converts a tuple decoded by pglogrepl into cells, reusing dst,
// as relation.cells does: the conversion appendCells replaces.
func refCells(dst []protocol.Cell, t *pglogrepl.TupleData, identity []bool, keyOnly bool) []protocol.Cell {
	dst = dst[:0]
	if t == nil {
		return dst
	}
	for i, c := range t.Columns[:min(len(t.Columns), len(identity))] {
		var cell protocol.Cell
		switch {
		case keyOnly && !identity[i]:
		case c.DataType == pglogrepl.TupleDataTypeNull:
			cell.Kind = protocol.CellNull
		case c.DataType == pglogrepl.TupleDataTypeToast:
			cell.Kind = protocol.CellUnchanged
		default:
			cell = protocol.Cell{Kind: protocol.CellText, Text: c.Data}
		}
		dst = append(dst, cell)
	}
	return dst
}

// parseRef is pglogrepl.Parse with its panics recovered.
func parseRef(data []byte) (m pglogrepl.Message, err error, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			m, err, panicked = nil, fmt.Errorf("panic: %v", r), true
		}
	}()
	m, err = pglogrepl.Parse(data)
	return m, err, false
}

// refChange takes apart an Insert, Update or Delete message of pglogrepl.
func refChange(m pglogrepl.Message) (op byte, rel uint32, oldKind byte, oldTuple, newTuple *pglogrepl.TupleData) {
	switch m := m.(type) {
	case *pglogrepl.InsertMessage:
		return 'I', m.RelationID, 0, nil, m.Tuple
	case *pglogrepl.UpdateMessage:
		return 'U', m.RelationID, m.OldTupleType, m.OldTuple, m.NewTuple
	case *pglogrepl.DeleteMessage:
		return 'D', m.RelationID, m.OldTupleType, m.OldTuple, nil
	}
	return 0, 0, 0, nil, nil
}

// diffChange describes how c differs from m, what pglogrepl decoded, and
// how the cells appendCells makes of its tuples under each identity differ
// from those of refCells; "" when they agree.
func diffChange(c change, m pglogrepl.Message, identities ...[]bool) string {
	op, rel, oldKind, oldTuple, newTuple := refChange(m)
	if c.op != op || c.relation != rel || c.oldKind != oldKind {
		return fmt.Sprintf("op %q relation %d old %q, pglogrepl %q %d %q", c.op, c.relation, c.oldKind, op, rel, oldKind)
	}
	for _, tt := range []struct {
		name string
		got  rawTuple
		want *pglogrepl.TupleData
	}{{"old", c.old, oldTuple}, {"new", c.new, newTuple}} {
		switch {
		case tt.want == nil && (tt.got.n != 0 || tt.got.data != nil):
			return fmt.Sprintf("%s tuple of %d columns, pglogrepl none", tt.name, tt.got.n)
		case tt.want != nil && tt.got.n != len(tt.want.Columns):
			return fmt.Sprintf("%s tuple: %d columns, pglogrepl %d", tt.name, tt.got.n, len(tt.want.Columns))
		}
		for _, identity := range identities {
			for _, keyOnly := range []bool{false, true} {
				got := appendCells(nil, tt.got, identity, keyOnly)
				want := refCells(nil, tt.want, identity, keyOnly)
				if !sameCells(got, want) {
					return fmt.Sprintf("%s tuple, %d-column relation, keyOnly %t:\n got %s\nwant %s", tt.name, len(identity), keyOnly, cellsString(got), cellsString(want))
				}
			}
		}
	}
	return ""
}

func sameCells(a, b []protocol.Cell) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Kind != b[i].Kind || !bytes.Equal(a[i].Text, b[i].Text) {
			return false
		}
	}
	return true
}

func cellsString(cells []protocol.Cell) string {
	var b strings.Builder
	for _, c := range cells {
		switch c.Kind {
		case protocol.CellAbsent:
			b.WriteString("absent ")
		case protocol.CellNull:
			b.WriteString("null ")
		case protocol.CellUnchanged:
			b.WriteString("unchanged ")
		default:
			b.WriteString(strconv.Quote(string(c.Text)) + " ")
		}
	}
	return "[" + strings.TrimSuffix(b.String(), " ") + "]"
}

// testMessages are Insert, Update and Delete messages such as PostgreSQL
// sends, as pglogrepl decodes them.
func testMessages() map[string]pglogrepl.Message {
	long := strings.Repeat("0123456789abcdef", 5000) // past an Int16 length
	wide := make([]*pglogrepl.TupleDataColumn, 300)
	for i := range wide {
		wide[i] = []*pglogrepl.TupleDataColumn{text(strconv.Itoa(i)), null, toast, text("")}[i%4]
	}
	row := tuple(text("42"), text("alice"), null, text(""), toast, text("2026-11-25 07:00:00+00"))
	key := tuple(text("42"), null, null, null, null, null)
	return map[string]pglogrepl.Message{
		"insert":             &pglogrepl.InsertMessage{RelationID: 16384, Tuple: tuple(text("1"), null, text("hello"))},
		"insert empty":       &pglogrepl.InsertMessage{RelationID: 1, Tuple: tuple(text(""), text(""))},
		"insert long":        &pglogrepl.InsertMessage{RelationID: 1, Tuple: tuple(text("7"), text(long))},
		"insert wide":        &pglogrepl.InsertMessage{RelationID: 1, Tuple: tuple(wide...)},
		"insert bytes":       &pglogrepl.InsertMessage{RelationID: 0xFFFFFFFF, Tuple: tuple(text("\x00\xff'\"\\n"), text("Nüt"))},
		"update":             &pglogrepl.UpdateMessage{RelationID: 16385, NewTuple: row},
		"update key":         &pglogrepl.UpdateMessage{RelationID: 16385, OldTupleType: 'K', OldTuple: key, NewTuple: row},
		"update old":         &pglogrepl.UpdateMessage{RelationID: 16385, OldTupleType: 'O', OldTuple: tuple(text("41"), text("bob"), text("x"), null, text("big"), null), NewTuple: row},
		"update no columns":  &pglogrepl.UpdateMessage{RelationID: 2, NewTuple: tuple()},
		"update key no cols": &pglogrepl.UpdateMessage{RelationID: 2, OldTupleType: 'K', OldTuple: tuple(), NewTuple: tuple()},
		"update toast":       &pglogrepl.UpdateMessage{RelationID: 3, OldTupleType: 'O', OldTuple: tuple(toast, toast), NewTuple: tuple(toast, text("new"))},
		"delete key":         &pglogrepl.DeleteMessage{RelationID: 16386, OldTupleType: 'K', OldTuple: key},
		"delete old":         &pglogrepl.DeleteMessage{RelationID: 16386, OldTupleType: 'O', OldTuple: row},
		"delete no columns":  &pglogrepl.DeleteMessage{RelationID: 4, OldTupleType: 'O', OldTuple: tuple()},
		"delete wide":        &pglogrepl.DeleteMessage{RelationID: 5, OldTupleType: 'O', OldTuple: tuple(wide...)},
	}
}

// testIdentities are the replica identity flags of relations of 0, 2, 6
// and 400 columns: fewer and more columns than the tuples hold.
func testIdentities() [][]bool {
	alternate := make([]bool, 400)
	for i := range alternate {
		alternate[i] = i%2 == 0
	}
	return [][]bool{nil, {false, true}, {true, false, false, true, false, false}, alternate}
}

// TestDecodeChange: decodeChange and appendCells give what pglogrepl.Parse
// and relation.cells give.
func TestDecodeChange(t *testing.T) {
	for name, m := range testMessages() {
		data := encode(m)
		ref, err := pglogrepl.Parse(data)
		if err != nil {
			t.Fatalf("%s: pglogrepl: %v", name, err)
		}
		c, ok, err := decodeChange(data)
		if !ok || err != nil {
			t.Errorf("%s: decodeChange: ok %t, %v", name, ok, err)
			continue
		}
		if d := diffChange(c, ref, testIdentities()...); d != "" {
			t.Errorf("%s: %s", name, d)
		}
	}
}

// TestDecodeChangeBytes decodes messages written out byte by byte: an
// update of a key, and an insert into a table without columns (which
// pglogrepl rejects).
func TestDecodeChangeBytes(t *testing.T) {
	data := []byte("U\x00\x00\x40\x01" + "K\x00\x02t\x00\x00\x00\x017n" + "N\x00\x02t\x00\x00\x00\x028xu")
	c, ok, err := decodeChange(data)
	if !ok || err != nil {
		t.Fatalf("decodeChange: ok %t, %v", ok, err)
	}
	if c.op != 'U' || c.relation != 16385 || c.oldKind != 'K' {
		t.Errorf("op %q relation %d old %q, want 'U' 16385 'K'", c.op, c.relation, c.oldKind)
	}
	identity := []bool{true, false}
	if got, want := cellsString(appendCells(nil, c.old, identity, true)), `["7" absent]`; got != want {
		t.Errorf("old cells %s, want %s", got, want)
	}
	if got, want := cellsString(appendCells(nil, c.new, identity, false)), `["8x" unchanged]`; got != want {
		t.Errorf("new cells %s, want %s", got, want)
	}
	// appendCells appends.
	if got, want := cellsString(appendCells([]protocol.Cell{{Kind: protocol.CellNull}}, c.new, identity[:1], false)), `[null "8x"]`; got != want {
		t.Errorf("appended cells %s, want %s", got, want)
	}

	c, ok, err = decodeChange([]byte("I\x00\x00\x00\x09N\x00\x00"))
	if !ok || err != nil || c.op != 'I' || c.relation != 9 || c.new.n != 0 {
		t.Errorf("insert without columns: %+v, ok %t, %v", c, ok, err)
	}
	if cells := appendCells(nil, c.new, identity, false); len(cells) != 0 {
		t.Errorf("insert without columns: cells %s", cellsString(cells))
	}
}

// TestDecodeChangeOther: other messages are left to pglogrepl.
func TestDecodeChangeOther(t *testing.T) {
	for _, data := range [][]byte{nil, {}, []byte("B\x00"), []byte("C"), []byte("R\x00\x00\x00\x01public\x00"), []byte("T\x00\x00\x00\x01\x00\x00\x00\x00\x00"), []byte("i")} {
		if c, ok, err := decodeChange(data); ok || err != nil || !reflect.DeepEqual(c, change{}) {
			t.Errorf("decodeChange(%q) = %+v, %t, %v; want not a change", data, c, ok, err)
		}
	}
}

// TestDecodeChangeErrors: a malformed message or one PostgreSQL does not
// send to the Reader is an error that says what was read where.
func TestDecodeChangeErrors(t *testing.T) {
	for _, tt := range []struct{ data, want string }{
		{"I\x00\x00", "insert message: relation id needs 4 bytes, 2 left (byte 1 of 3)"},
		{"D\x00\x00\x00\x01", "delete message: tuple type needs 1 byte, 0 left (byte 5 of 5)"},
		{"I\x00\x00\x00\x01X\x00\x00", "insert message: tuple type 'X', want 'N' (byte 5 of 8)"},
		{"U\x00\x00\x00\x01Z", "update message: tuple type 'Z', want 'K', 'O' or 'N' (byte 5 of 6)"},
		{"D\x00\x00\x00\x01N\x00\x00", "delete message: tuple type 'N', want 'K' or 'O' (byte 5 of 8)"},
		{"D\x00\x00\x00\x01K\x00", "delete message: old tuple: column count needs 2 bytes, 1 left (byte 6 of 7)"},
		{"U\x00\x00\x00\x01O\x00\x01n", "update message: new tuple type needs 1 byte, 0 left (byte 9 of 9)"},
		{"U\x00\x00\x00\x01O\x00\x01nO\x00\x00", "update message: new tuple type 'O', want 'N' (byte 9 of 12)"},
		{"I\x00\x00\x00\x01N\x00\x02n", "insert message: new tuple column 2 of 2: kind needs 1 byte, 0 left (byte 9 of 9)"},
		{"I\x00\x00\x00\x01N\x00\x02nx", "insert message: new tuple column 2 of 2: kind 'x', want 'n', 'u' or 't' (byte 9 of 10)"},
		{"I\x00\x00\x00\x01N\x00\x01b\x00\x00\x00\x01x", "insert message: new tuple column 1 of 1: binary value, but the reader asks for text (byte 8 of 14)"},
		{"I\x00\x00\x00\x01N\x00\x01t\x00\x00", "insert message: new tuple column 1 of 1: length needs 4 bytes, 2 left (byte 9 of 11)"},
		{"I\x00\x00\x00\x01N\x00\x01t\x00\x00\x00\x78abc", "insert message: new tuple column 1 of 1: value needs 120 bytes, 3 left (byte 13 of 16)"},
		{"I\x00\x00\x00\x01N\x00\x01t\xff\xff\xff\xffabc", "insert message: new tuple column 1 of 1: value needs 4294967295 bytes, 3 left (byte 13 of 16)"},
		{"D\x00\x00\x00\x01O\x00\x03unt\x00\x00\x00\x09abc", "delete message: old tuple column 3 of 3: value needs 9 bytes, 3 left (byte 15 of 18)"},
		{"I\x00\x00\x00\x01N\x00\x00zz", "insert message: 2 bytes after the last tuple (byte 8 of 10)"},
	} {
		c, ok, err := decodeChange([]byte(tt.data))
		if !ok || err == nil || err.Error() != tt.want || !reflect.DeepEqual(c, change{}) {
			t.Errorf("decodeChange(%q) = %+v, %t, %v; want error %q", tt.data, c, ok, err, tt.want)
		}
	}
}

var byteOffset = regexp.MustCompile(`\(byte (\d+) of (\d+)\)$`)

// TestDecodeChangeTruncated: every prefix of a message, and the message
// followed by a byte, is an error naming a byte offset within it.
func TestDecodeChangeTruncated(t *testing.T) {
	for name, m := range testMessages() {
		data := encode(m)
		check := func(in []byte) {
			_, ok, err := decodeChange(in)
			if !ok || err == nil {
				t.Errorf("%s: %d of %d bytes: ok %t, error %v", name, len(in), len(data), ok, err)
				return
			}
			at := byteOffset.FindStringSubmatch(err.Error())
			if at == nil || at[2] != strconv.Itoa(len(in)) {
				t.Errorf("%s: %d of %d bytes: error %q names no offset in %d bytes", name, len(in), len(data), err, len(in))
				return
			}
			if off, _ := strconv.Atoi(at[1]); off > len(in) {
				t.Errorf("%s: %d of %d bytes: error %q names an offset past the end", name, len(in), len(data), err)
			}
		}
		for n := 1; n < len(data); n++ {
			check(data[:n])
		}
		check(append(data[:len(data):len(data)], 'N'))
	}
}

// TestDecodeChangeAllocs: decoding a change and converting its tuples into
// cells allocates nothing once the cells have room.
func TestDecodeChangeAllocs(t *testing.T) {
	identity := []bool{true, false, false, true, false, false}
	var before, after []protocol.Cell
	for name, m := range testMessages() {
		data := encode(m)
		allocs := testing.AllocsPerRun(100, func() {
			c, _, err := decodeChange(data)
			if err != nil {
				t.Fatal(err)
			}
			before = appendCells(before[:0], c.old, identity, c.oldKind == 'K')
			after = appendCells(after[:0], c.new, identity, false)
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per change, want 0", name, allocs)
		}
	}
}

// pglogreplSafe reports whether pglogrepl.Parse may be given data, an
// Insert, Update or Delete message: false when it would read a column
// length past the end, for which it makes a slice of that length (up to
// 4 GiB) before its copy panics. It walks data as pglogrepl does: no
// bounds checks, no data for an unknown kind, any byte after an old tuple.
func pglogreplSafe(data []byte) bool {
	if len(data) < 6 {
		return true
	}
	tuples := 1
	if data[0] == 'U' && (data[5] == 'K' || data[5] == 'O') {
		tuples = 2
	}
	off := 6
	for range tuples {
		if off+2 > len(data) {
			return true
		}
		n := int(binary.BigEndian.Uint16(data[off:]))
		off += 2
		for range n {
			if off >= len(data) {
				return true
			}
			kind := data[off]
			off++
			if kind == 't' || kind == 'b' {
				if off+4 > len(data) {
					return true
				}
				l := binary.BigEndian.Uint32(data[off:])
				off += 4
				if uint64(l) > uint64(len(data)-off) {
					return false
				}
				off += int(l)
			}
		}
		off++
	}
	return true
}

// knownKinds reports whether every column of m's tuples is NULL, unchanged
// TOAST or text.
func knownKinds(m pglogrepl.Message) bool {
	_, _, _, oldTuple, newTuple := refChange(m)
	for _, t := range []*pglogrepl.TupleData{oldTuple, newTuple} {
		if t == nil {
			continue
		}
		for _, c := range t.Columns {
			if c.DataType != 'n' && c.DataType != 'u' && c.DataType != 't' {
				return false
			}
		}
	}
	return true
}

// FuzzDecodeChange: decodeChange never panics, names a byte offset in its
// errors, accepts exactly the messages pglogrepl.Parse accepts in their
// canonical form (no trailing bytes, 'N' before the new tuple, kinds n, u
// and t), and agrees with it on them. The one message it accepts that
// pglogrepl rejects is an insert into a table without columns.
func FuzzDecodeChange(f *testing.F) {
	for _, m := range testMessages() {
		// The long ones make minimizing a new input take minutes.
		if data := encode(m); len(data) <= 1024 {
			f.Add(data)
		}
	}
	f.Add([]byte("U\x00\x00\x40\x01K\x00\x02t\x00\x00\x00\x017nN\x00\x02t\x00\x00\x00\x028xu"))
	f.Add([]byte("I\x00\x00\x00\x09N\x00\x00"))
	f.Add([]byte("I\x00\x00\x00\x01N\x00\x01b\x00\x00\x00\x01x"))
	f.Add([]byte("U\x00\x00\x00\x01O\x00\x01nO\x00\x00"))
	f.Add([]byte("D\x00\x00\x00\x01K\x00\x02nxzz"))
	identities := testIdentities()
	f.Fuzz(func(t *testing.T, data []byte) {
		c, ok, err := decodeChange(data)
		if !ok {
			if err != nil || !reflect.DeepEqual(c, change{}) || len(data) > 0 && strings.IndexByte("IUD", data[0]) >= 0 {
				t.Fatalf("decodeChange(%q) = %+v, ok false, %v", data, c, err)
			}
			return
		}
		if err != nil && !byteOffset.MatchString(err.Error()) {
			t.Fatalf("error %q names no byte offset", err)
		}
		if !pglogreplSafe(data) {
			if err == nil {
				t.Fatalf("decodeChange accepted %q, which has a length past the end", data)
			}
			return
		}
		ref, refErr, _ := parseRef(data)
		if err == nil {
			if refErr != nil {
				if c.op == 'I' && len(data) == 8 {
					return // no columns: pglogrepl wants 8 bytes after the 'I'
				}
				t.Fatalf("decodeChange accepted %q, pglogrepl: %v", data, refErr)
			}
			if d := diffChange(c, ref, identities...); d != "" {
				t.Fatalf("%q: %s", data, d)
			}
			if canon := encode(ref); !bytes.Equal(canon, data) {
				t.Fatalf("decodeChange accepted %q, not in canonical form %q", data, canon)
			}
			return
		}
		if refErr != nil || !knownKinds(ref) {
			return
		}
		// pglogrepl ignored what decodeChange rejects: trailing bytes or
		// the byte before the new tuple of an update.
		canon := encode(ref)
		if bytes.Equal(canon, data) {
			t.Fatalf("decodeChange rejected %q, which pglogrepl decodes: %v", data, err)
		}
		c, _, err = decodeChange(canon)
		if err != nil {
			t.Fatalf("decodeChange(%q), canonical form of %q: %v", canon, data, err)
		}
		if d := diffChange(c, ref, identities...); d != "" {
			t.Fatalf("%q, canonical form of %q: %s", canon, data, d)
		}
	})
}

// BenchmarkDecodeChange decodes a 6-column update into cells, without and
// with the old row, with pglogrepl.Parse and refCells (as the Reader did)
// and with decodeChange and appendCells.
func BenchmarkDecodeChange(b *testing.B) {
	row := tuple(text("123456"), text("alice@example.com"), text("1234.56"), text("2026-11-25 07:00:00.123456+00"), null, text("a note of forty bytes, more or less, ok"))
	identity := []bool{true, false, false, false, false, false}
	for _, bm := range []struct {
		name string
		m    pglogrepl.Message
	}{
		{"new", &pglogrepl.UpdateMessage{RelationID: 16384, NewTuple: row}},
		{"old+new", &pglogrepl.UpdateMessage{RelationID: 16384, OldTupleType: 'O', OldTuple: row, NewTuple: row}},
	} {
		data := encode(bm.m)
		b.Run(bm.name+"/pglogrepl", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			var before, after []protocol.Cell
			for b.Loop() {
				m, err := pglogrepl.Parse(data)
				if err != nil {
					b.Fatal(err)
				}
				u := m.(*pglogrepl.UpdateMessage)
				before = refCells(before, u.OldTuple, identity, u.OldTupleType == 'K')
				after = refCells(after, u.NewTuple, identity, false)
			}
		})
		b.Run(bm.name+"/decodeChange", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			var before, after []protocol.Cell
			for b.Loop() {
				c, _, err := decodeChange(data)
				if err != nil {
					b.Fatal(err)
				}
				before = appendCells(before[:0], c.old, identity, c.oldKind == 'K')
				after = appendCells(after[:0], c.new, identity, false)
			}
		})
	}
}
