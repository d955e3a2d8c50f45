package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Op is the operation of a change event.
type Op string

// The change operations. OpRead marks a row read by a snapshot, not a change.
const (
	OpInsert   Op = "insert"
	OpUpdate   Op = "update"
	OpDelete   Op = "delete"
	OpTruncate Op = "truncate"
	OpRead     Op = "read"
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
		return json.Marshal(v.Text)
	}
}

// UnmarshalJSON implements json.Unmarshaler.
func (v *Value) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
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
}

// Encode stamps e with the current version and encodes it.
func (e ChangeEvent) Encode() ([]byte, error) {
	e.V = Version
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode change event: %w", err)
	}
	return b, nil
}

// DecodeChangeEvent decodes a change event and checks its version and op.
func DecodeChangeEvent(data []byte) (ChangeEvent, error) {
	var e ChangeEvent
	var head struct {
		V *int `json:"v"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return e, fmt.Errorf("decode change event: %w", err)
	}
	if head.V == nil {
		return e, fmt.Errorf("decode change event: field \"v\" is missing: %w", ErrVersion)
	}
	if *head.V != Version {
		return e, fmt.Errorf("decode change event: version %d, this build speaks %d: %w", *head.V, Version, ErrVersion)
	}
	if err := json.Unmarshal(data, &e); err != nil {
		return e, fmt.Errorf("decode change event: %w", err)
	}
	switch e.Op {
	case OpInsert, OpUpdate, OpDelete, OpTruncate, OpRead:
	default:
		return e, fmt.Errorf("decode change event: unknown op %q", e.Op)
	}
	if e.Schema == "" || e.Table == "" {
		return e, errors.New("decode change event: schema and table are required")
	}
	return e, nil
}

// CDCSubject is the subject the change events of one table of a CDC
// pipeline are published on: sluice.cdc.<pipeline>.<schema>.<table>. A
// character that cannot appear in a subject token ('.', '*', '>', white
// space, control characters) is replaced by '_' in schema and table.
func CDCSubject(pipeline, schema, table string) string {
	return "sluice.cdc." + pipeline + "." + subjectToken(schema) + "." + subjectToken(table)
}

// CDCMsgID is the Nats-Msg-Id of a change event: the slot, the commit LSN of
// its transaction and its index in the transaction. A change re-published
// after a restart gets the same id.
func CDCMsgID(slot, commitLSN string, index int) string {
	return fmt.Sprintf("%s:%s:%d", slot, commitLSN, index)
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
