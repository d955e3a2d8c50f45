package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Op is the operation of a change event.
type Op string

// The change operations. OpRead marks a row read by a snapshot, not a
// change; OpSnapshot marks the start of a snapshot of a table.
const (
	OpInsert   Op = "insert"
	OpUpdate   Op = "update"
	OpDelete   Op = "delete"
	OpTruncate Op = "truncate"
	OpRead     Op = "read"
	// OpSnapshot: a snapshot of the table begins, at the position LSN.
	// The table's rows are from now on the read events of this snapshot
	// (those of LSN at or after it) and the changes after them: a
	// consumer keeping a copy of the table empties it, unless it took a
	// snapshot event of the same or a later LSN already (the marker may
	// come more than once); read events of an LSN before the last
	// snapshot event's are left out (an earlier, failed attempt's).
	// It has no rows.
	OpSnapshot Op = "snapshot"
	// OpSnapshotDone: the snapshot of the table that began with the last
	// snapshot event is complete (an incremental snapshot, whose chunks
	// came between changes of the table, ends with it; the initial
	// snapshot, whose rows all come before any change, has none). It has
	// no rows.
	OpSnapshotDone Op = "snapshot_done"
)

// Value is one column value of a change event, in PostgreSQL's text output
// format. Exactly one of three states holds: a text value, SQL NULL (Null),
// or Unchanged: a TOASTed value the update did not touch, which logical
// decoding does not send. Unchanged is never NULL: the column keeps the value
// it had before the update, which the event does not carry.
//
// In JSON a Value is a string, null, or {"unchanged_toast":true}.
type Value struct {
	Text      string
	Null      bool
	Unchanged bool
}

// Text returns a Value holding s.
func Text(s string) Value { return Value{Text: s} }

// NullValue is SQL NULL.
var NullValue = Value{Null: true}

// UnchangedValue marks an unchanged TOAST value.
var UnchangedValue = Value{Unchanged: true}

var unchangedJSON = []byte(`{"unchanged_toast":true}`)

// MarshalJSON implements json.Marshaler.
func (v Value) MarshalJSON() ([]byte, error) {
	switch {
	case v.Unchanged:
		return unchangedJSON, nil
	case v.Null:
		return []byte("null"), nil
	default:
		return AppendJSONString(make([]byte, 0, len(v.Text)+2), v.Text), nil
	}
}

// appendJSON appends v as MarshalJSON encodes it.
func (v Value) appendJSON(dst []byte) []byte {
	switch {
	case v.Unchanged:
		return append(dst, unchangedJSON...)
	case v.Null:
		return append(dst, "null"...)
	default:
		return AppendJSONString(dst, v.Text)
	}
}

// UnmarshalJSON implements json.Unmarshaler.
func (v *Value) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	// encoding/json hands over a valid JSON value: a string without a
	// backslash is its bytes between the quotes (no escape to undo, and
	// encoding/json would keep invalid UTF-8 as U+FFFD: so only valid
	// UTF-8 takes this way).
	if len(b) >= 2 && b[0] == '"' && bytes.IndexByte(b, '\\') < 0 && utf8.Valid(b[1:len(b)-1]) {
		*v = Text(string(b[1 : len(b)-1]))
		return nil
	}
	switch {
	case bytes.Equal(b, []byte("null")):
		*v = NullValue
		return nil
	case len(b) > 0 && b[0] == '{':
		var m struct {
			Unchanged *bool `json:"unchanged_toast"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
		if m.Unchanged == nil || !*m.Unchanged {
			return fmt.Errorf("value %s: an object must be {\"unchanged_toast\":true}", b)
		}
		*v = UnchangedValue
		return nil
	default:
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*v = Text(s)
		return nil
	}
}

// Row maps column names to values. A column absent from a Row was not sent
// by the source (see ChangeEvent.Before); it is not NULL.
type Row map[string]Value

// ChangeEvent is one change captured from a source database, published on
// CDCSubject(Pipeline, Schema, Table) in the SLUICE_CDC stream.
//
// Position: (CommitLSN, Index) identifies the event; events of one table
// arrive in commit order, and in change order within a transaction.
type ChangeEvent struct {
	V        int    `json:"v"`
	Op       Op     `json:"op"`
	Pipeline string `json:"pipeline"`
	// Database is the source database name.
	Database string `json:"database"`
	Schema   string `json:"schema"`
	Table    string `json:"table"`
	// Key lists the key columns: the primary key (in key order) under
	// REPLICA IDENTITY FULL, else the replica identity columns (the primary
	// key under DEFAULT, the index columns under USING INDEX).
	Key []string `json:"key,omitempty"`
	// Before is the old row. For REPLICA IDENTITY DEFAULT it holds only the
	// key columns, on delete and on an update that changed the key, and is
	// nil on other updates; REPLICA IDENTITY FULL gives the whole old row on
	// every update and delete. Nil on insert, read and truncate.
	Before Row `json:"before,omitempty"`
	// After is the new row on insert, update and read; nil on delete and
	// truncate.
	After Row `json:"after,omitempty"`
	// LSN is the position of the change itself; CommitLSN the position of
	// its transaction's commit record; Index the change's 0-based place in
	// its transaction.
	LSN        string    `json:"lsn"`
	CommitLSN  string    `json:"commit_lsn"`
	Index      int       `json:"index"`
	Xid        uint32    `json:"xid"`
	CommitTime time.Time `json:"commit_time"`
	// Relation describes the table's columns as the source's catalog does
	// (types, NOT NULL, defaults, key, and the ID that tells a renamed
	// column from a dropped and an added one). It is carried by the first
	// event of a table after each change of the table's shape, and by the
	// first read event of each snapshot message, not by every event: a
	// consumer keeps the last one it saw per table. An applier creating
	// its target tables takes their types from it, and one keeping a
	// replica compares it with the last one to add, drop, rename and
	// retype columns before applying the event. Nil on the other events.
	Relation *Schema `json:"relation,omitempty"`
}

// Encode stamps e with the current version and encodes it: the bytes of
// AppendJSON. It fails on a CommitTime that JSON cannot carry (see
// AppendJSON).
func (e ChangeEvent) Encode() ([]byte, error) {
	b := e.appendHead(make([]byte, 0, e.sizeHint()))
	b = appendRow(b, `,"before":`, e.Before)
	b = appendRow(b, `,"after":`, e.After)
	b, ok := e.appendTail(b)
	if !ok {
		return nil, e.timeError()
	}
	return e.appendRelation(b)
}

// AppendJSON appends e, stamped with the current version as Encode stamps
// it, to dst: byte for byte what json.Marshal returns for e with V set to
// Version (fields in declaration order, empty Key, Before and After left
// out, row keys sorted by their bytes, strings escaped as encoding/json
// escapes them, HTML characters and invalid UTF-8 included). A CommitTime
// that json.Marshal rejects (a year outside [0,9999], a zone offset of 24
// hours or more) is appended in its RFC 3339 form all the same; Encode
// reports it as an error instead.
func (e ChangeEvent) AppendJSON(dst []byte) []byte {
	dst = e.appendHead(dst)
	dst = appendRow(dst, `,"before":`, e.Before)
	dst = appendRow(dst, `,"after":`, e.After)
	dst, _ = e.appendTail(dst)
	dst, _ = e.appendRelation(dst)
	return dst
}

// AppendJSONCells appends what AppendJSON appends for e with Before and
// After replaced by the rows that before and after describe over cols:
// cell i is the value of column i; cells past the last column are
// ignored, and a CellAbsent or missing cell leaves its column out. A row
// left without any column is omitted, as an empty Row is. e.Before and
// e.After are ignored. It lets a source encode a decoded tuple without
// building a Row.
func (e ChangeEvent) AppendJSONCells(dst []byte, cols *Columns, before, after []Cell) []byte {
	dst = e.appendHead(dst)
	dst = cols.appendRow(dst, `,"before":`, before)
	dst = cols.appendRow(dst, `,"after":`, after)
	dst, _ = e.appendTail(dst)
	dst, _ = e.appendRelation(dst)
	return dst
}

// appendHead appends the fields before Before: {"v":...,"key":[...].
func (e *ChangeEvent) appendHead(dst []byte) []byte {
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, Version, 10)
	dst = append(dst, `,"op":`...)
	dst = AppendJSONString(dst, string(e.Op))
	return e.appendTable(dst)
}

// appendTable appends the fields from Pipeline to Key.
func (e *ChangeEvent) appendTable(dst []byte) []byte {
	dst = append(dst, `,"pipeline":`...)
	dst = AppendJSONString(dst, e.Pipeline)
	dst = append(dst, `,"database":`...)
	dst = AppendJSONString(dst, e.Database)
	dst = append(dst, `,"schema":`...)
	dst = AppendJSONString(dst, e.Schema)
	dst = append(dst, `,"table":`...)
	dst = AppendJSONString(dst, e.Table)
	if len(e.Key) > 0 {
		dst = append(dst, `,"key":[`...)
		for i, k := range e.Key {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = AppendJSONString(dst, k)
		}
		dst = append(dst, ']')
	}
	return dst
}

// appendTail appends the fields after After and the closing brace. ok is
// false when CommitTime is one json.Marshal rejects.
func (e *ChangeEvent) appendTail(dst []byte) (_ []byte, ok bool) {
	dst = append(dst, `,"lsn":`...)
	dst = AppendJSONString(dst, e.LSN)
	dst = append(dst, `,"commit_lsn":`...)
	dst = AppendJSONString(dst, e.CommitLSN)
	dst = append(dst, `,"index":`...)
	dst = strconv.AppendInt(dst, int64(e.Index), 10)
	dst = append(dst, `,"xid":`...)
	dst = strconv.AppendUint(dst, uint64(e.Xid), 10)
	dst = append(dst, `,"commit_time":"`...)
	n := len(dst)
	dst = e.CommitTime.AppendFormat(dst, time.RFC3339Nano)
	ok = validRFC3339(dst[n:])
	return append(dst, `"}`...), ok
}

// appendRelation adds e.Relation, when set, to the event that ends dst
// (its closing brace last).
func (e *ChangeEvent) appendRelation(dst []byte) ([]byte, error) {
	if e.Relation == nil {
		return dst, nil
	}
	b, err := json.Marshal(e.Relation)
	if err != nil {
		return dst, fmt.Errorf("encode change event: relation: %w", err)
	}
	return AppendRelation(dst, b), nil
}

// AppendRelation adds the relation field to the event that ends dst, as
// AppendChange or AppendJSON leave it (its closing brace last): relation
// is the JSON of a *Schema (json.Marshal's). The event then reads as one
// whose Relation is set.
func AppendRelation(dst, relation []byte) []byte {
	dst = append(dst[:len(dst)-1], `,"relation":`...)
	dst = append(dst, relation...)
	return append(dst, '}')
}

// validRFC3339 reports whether b, a time in time.RFC3339Nano, is one
// time.Time.MarshalJSON accepts: a four-digit year and a zone offset under
// 24 hours (the checks of the time package).
func validRFC3339(b []byte) bool {
	if len(b) < len("2006-01-02T15:04:05Z") || b[4] != '-' {
		return false
	}
	if b[len(b)-1] == 'Z' {
		return true
	}
	c := b[len(b)-len("Z07:00")]
	h := 10*int(b[len(b)-len("07:00")]-'0') + int(b[len(b)-len("7:00")]-'0')
	return (c < '0' || c > '9') && h < 24
}

// timeError is the error json.Marshal reports for e: only its CommitTime
// can make it fail.
func (e ChangeEvent) timeError() error {
	e.V = Version
	if _, err := json.Marshal(e); err != nil {
		return fmt.Errorf("encode change event: %w", err)
	}
	return fmt.Errorf("encode change event: commit time %s cannot be encoded", e.CommitTime)
}

// sizeHint is about the size of e's JSON, escapes aside.
func (e *ChangeEvent) sizeHint() int {
	n := 220 + len(e.Op) + len(e.Pipeline) + len(e.Database) + len(e.Schema) + len(e.Table) + len(e.LSN) + len(e.CommitLSN)
	for _, k := range e.Key {
		n += len(k) + 3
	}
	for _, row := range [2]Row{e.Before, e.After} {
		for k, v := range row {
			n += len(k) + len(v.Text) + 28 // "k":{"unchanged_toast":true},
		}
	}
	return n
}

// appendRow appends name and row as encoding/json encodes a map: keys in
// the order of their bytes. An empty row appends nothing (omitempty).
func appendRow(dst []byte, name string, row Row) []byte {
	if len(row) == 0 {
		return dst
	}
	var stack [32]string
	keys := stack[:0]
	for k := range row {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = append(dst, name...)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendJSONString(dst, k)
		dst = append(dst, ':')
		dst = row[k].appendJSON(dst)
	}
	return append(dst, '}')
}

// CellKind is the state of a Cell.
type CellKind uint8

// The cell kinds. The zero Cell is absent.
const (
	// CellAbsent leaves the column out of the row: a value the source did
	// not send, which is not NULL.
	CellAbsent CellKind = iota
	// CellText is a value in text format, Cell.Text (Value.Text).
	CellText
	// CellNull is SQL NULL (NullValue).
	CellNull
	// CellUnchanged is an unchanged TOAST value (UnchangedValue).
	CellUnchanged
)

// Cell is one column value of a row given column by column in table order,
// for ChangeEvent.AppendJSONCells. Text may alias a decoder's buffer: it is
// read only during the call.
type Cell struct {
	Text []byte
	Kind CellKind
}

// Columns holds the column names of a table, in table order, prepared for
// ChangeEvent.AppendJSONCells. It is immutable once made and may be shared.
type Columns struct {
	// keys[i] is column i's JSON object key with its colon: "name":
	keys [][]byte
	// order lists the column indexes in the order encoding/json sorts the
	// keys of a Row (by their bytes); a repeated name keeps table order.
	order []int
	// same[k] reports that order[k+1] has the name of order[k].
	same []bool
}

// NewColumns prepares the column names of a table, in table order. A name
// given twice is one key, whose value is the last present cell of that
// name, as in a Row filled column by column.
func NewColumns(names []string) *Columns {
	c := &Columns{keys: make([][]byte, len(names)), order: make([]int, len(names)), same: make([]bool, len(names))}
	for i, name := range names {
		c.keys[i] = append(AppendJSONString(nil, name), ':')
		c.order[i] = i
	}
	slices.SortStableFunc(c.order, func(a, b int) int { return strings.Compare(names[a], names[b]) })
	for k := 0; k+1 < len(c.order); k++ {
		c.same[k] = names[c.order[k]] == names[c.order[k+1]]
	}
	return c
}

// appendRow appends name and the row of cells, as appendRow appends the
// Row they describe.
func (c *Columns) appendRow(dst []byte, name string, cells []Cell) []byte {
	if c == nil || len(cells) == 0 {
		return dst
	}
	n0 := len(dst)
	dst = append(dst, name...)
	dst = append(dst, '{')
	open := len(dst)
	for k := 0; k < len(c.order); k++ {
		i := -1
		for {
			if j := c.order[k]; j < len(cells) && cells[j].Kind != CellAbsent {
				i = j
			}
			if !c.same[k] {
				break
			}
			k++
		}
		if i < 0 {
			continue
		}
		if len(dst) > open {
			dst = append(dst, ',')
		}
		dst = append(dst, c.keys[i]...)
		switch cells[i].Kind {
		case CellNull:
			dst = append(dst, "null"...)
		case CellUnchanged:
			dst = append(dst, unchangedJSON...)
		default:
			dst = AppendJSONString(dst, cells[i].Text)
		}
	}
	if len(dst) == open {
		return dst[:n0]
	}
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// htmlSafeLo and htmlSafeHi are the ASCII bytes encoding/json writes as
// they are in a string, HTML escaping on: ' ' and above but '"', '\\',
// '<', '>' and '&'. Bit b of htmlSafeLo is byte b, of htmlSafeHi byte 64+b.
const (
	htmlSafeLo = ^uint64(1<<' '-1) &^ (1<<'"' | 1<<'&' | 1<<'<' | 1<<'>')
	htmlSafeHi = ^uint64(1 << ('\\' - 64))
)

// htmlSafe reports whether encoding/json writes the ASCII byte b as it is.
// A shift by 64 or more gives 0, and for b below 64, b-64 wraps to 192 or
// more.
func htmlSafe(b byte) bool {
	return (htmlSafeLo>>b|htmlSafeHi>>(b-64))&1 != 0
}

// AppendJSONString appends s as encoding/json encodes a string (HTML
// escaping on): '"', '\\', control characters, '<', '>', '&', U+2028 and
// U+2029 escaped, each byte of invalid UTF-8 replaced by U+FFFD.
func AppendJSONString[T string | []byte](dst []byte, s T) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if htmlSafe(b) {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// DecodeChangeEvent decodes a change event and checks its version and op.
func DecodeChangeEvent(data []byte) (ChangeEvent, error) {
	return decodeChangeEventIn(data, "")
}

// decodeChangeEventIn is DecodeChangeEvent of data whose bytes text holds
// too, when not empty (see decodeEventFastIn).
func decodeChangeEventIn(data []byte, text string) (ChangeEvent, error) {
	return decodeChangeEventShared(data, text, nil)
}

// decodeChangeEventShared is decodeChangeEventIn sharing with the events
// decoded before it (see decodeEventShared).
func decodeChangeEventShared(data []byte, text string, sh *shared) (ChangeEvent, error) {
	e, ok := decodeEventShared(data, text, sh)
	if !ok {
		var err error
		if e, err = decodeEventJSON(data); err != nil {
			return e, err
		}
	}
	switch e.Op {
	case OpInsert, OpUpdate, OpDelete, OpTruncate, OpRead, OpSnapshot, OpSnapshotDone:
	default:
		return e, fmt.Errorf("decode change event: unknown op %q", e.Op)
	}
	if e.Schema == "" || e.Table == "" {
		return e, errors.New("decode change event: schema and table are required")
	}
	return e, nil
}

// decodeEventJSON decodes a change event with encoding/json and checks its
// version.
func decodeEventJSON(data []byte) (ChangeEvent, error) {
	// One pass: V decoded beside the event's fields (ChangeEvent's own V
	// is shadowed), and checked before anything else is looked at.
	var in struct {
		V *int `json:"v"`
		ChangeEvent
	}
	if err := json.Unmarshal(data, &in); err != nil {
		if in.V != nil && *in.V != Version {
			return ChangeEvent{}, fmt.Errorf("decode change event: version %d, this build speaks %d: %w", *in.V, Version, ErrVersion)
		}
		return ChangeEvent{}, fmt.Errorf("decode change event: %w", err)
	}
	if in.V == nil {
		return ChangeEvent{}, fmt.Errorf("decode change event: field \"v\" is missing: %w", ErrVersion)
	}
	if *in.V != Version {
		return ChangeEvent{}, fmt.Errorf("decode change event: version %d, this build speaks %d: %w", *in.V, Version, ErrVersion)
	}
	e := in.ChangeEvent
	e.V = *in.V
	return e, nil
}

// DecodeChangeEvents decodes the change events of one SLUICE_CDC message:
// one or more encoded ChangeEvents, one per line ('\n' between them, none
// after the last). Every event of a message belongs to the same table and
// the same transaction, in change order. An error names the event's
// 1-based place in the message. Events with the same key columns share
// one Key slice: a caller that changes it must copy it first.
func DecodeChangeEvents(data []byte) ([]ChangeEvent, error) {
	return AppendChangeEvents(nil, data)
}

// AppendChangeEvents is DecodeChangeEvents appending to dst.
func AppendChangeEvents(dst []ChangeEvent, data []byte) ([]ChangeEvent, error) {
	// One copy of the message as a string: the events' strings are
	// substrings of it rather than an allocation each.
	text := string(data)
	var sh shared
	for n := 1; ; n++ {
		line, rest, more := bytes.Cut(data, []byte{'\n'})
		ev, err := decodeChangeEventShared(line, text[:len(line)], &sh)
		text = text[min(len(line)+1, len(text)):]
		if err != nil {
			if n == 1 && !more {
				return dst, err
			}
			return dst, fmt.Errorf("event %d of the message: %w", n, err)
		}
		dst = append(dst, ev)
		if !more {
			return dst, nil
		}
		data = rest
	}
}

// CountChangeEvents returns the number of events of a SLUICE_CDC message
// without decoding them: its lines.
func CountChangeEvents(data []byte) int {
	return bytes.Count(data, []byte{'\n'}) + 1
}

// CDCSubject is the subject the change events of one table of a CDC
// pipeline are published on: sluice.cdc.<pipeline>.<schema>.<table>. A
// character that cannot appear in a subject token ('.', '*', '>', white
// space, control characters) is replaced by '_' in schema and table.
func CDCSubject(pipeline, schema, table string) string {
	return CDCSubjectPrefix(pipeline) + subjectToken(schema) + "." + subjectToken(table)
}

// CDCSubjectPrefix begins the subjects of a CDC pipeline's events:
// "sluice.cdc.<pipeline>.".
func CDCSubjectPrefix(pipeline string) string { return "sluice.cdc." + pipeline + "." }

// CDCMsgID is the Nats-Msg-Id of a SLUICE_CDC message: the slot, the commit
// LSN of its transaction and the index in the transaction of its first
// event. A message re-published after a restart gets the same id (the
// events of a transaction are packed into messages the same way each time).
func CDCMsgID(slot, commitLSN string, index int) string {
	var n [20]byte
	return slot + ":" + commitLSN + ":" + string(strconv.AppendInt(n[:0], int64(index), 10))
}

func subjectToken(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r == '.' || r == '*' || r == '>' || r <= ' ' || r == 0x7f:
			return '_'
		}
		return r
	}, s)
}
