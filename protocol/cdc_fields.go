package protocol

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// TableFields holds the encoded fields that the events of one table share:
// pipeline, database, schema, table and key. It is immutable once made.
type TableFields struct {
	enc []byte // ,"pipeline":…,"table":…[,"key":[…]]
}

// NewTableFields encodes the fields the events of one table share.
func NewTableFields(pipeline, database, schema, table string, key []string) *TableFields {
	e := ChangeEvent{Pipeline: pipeline, Database: database, Schema: schema, Table: table, Key: key}
	return &TableFields{enc: e.appendTable(nil)}
}

// TxFields holds the encoded fields that the events of one transaction
// share: commit LSN, xid and commit time. Set reuses its memory.
type TxFields struct {
	lsn  []byte // ,"commit_lsn":"…","index":
	tail []byte // ,"xid":…,"commit_time":"…"}
	err  error
}

// Set encodes the fields of a transaction. It fails, as Encode does, on a
// commit time JSON cannot carry; AppendChange must then not be called.
func (t *TxFields) Set(commitLSN string, xid uint32, commitTime time.Time) error {
	t.lsn = append(t.lsn[:0], `,"commit_lsn":`...)
	t.lsn = AppendJSONString(t.lsn, commitLSN)
	t.lsn = append(t.lsn, `,"index":`...)
	t.tail = append(t.tail[:0], `,"xid":`...)
	t.tail = strconv.AppendUint(t.tail, uint64(xid), 10)
	t.tail = append(t.tail, `,"commit_time":"`...)
	n := len(t.tail)
	t.tail = commitTime.AppendFormat(t.tail, time.RFC3339Nano)
	t.err = nil
	if !validRFC3339(t.tail[n:]) {
		t.err = ChangeEvent{CommitLSN: commitLSN, Xid: xid, CommitTime: commitTime}.timeError()
	}
	t.tail = append(t.tail, `"}`...)
	return t.err
}

// AppendChange appends the event of one change as AppendJSONCells appends
// it for a ChangeEvent with the fields of table and tx, op, lsn (formatted
// by AppendLSN) and index: byte for byte the same, with the fields the
// events of a table or a transaction share copied instead of encoded.
func AppendChange(dst []byte, op Op, table *TableFields, cols *Columns, before, after []Cell, lsn uint64, index int, tx *TxFields) []byte {
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, Version, 10)
	dst = append(dst, `,"op":`...)
	dst = AppendJSONString(dst, string(op))
	dst = append(dst, table.enc...)
	dst = cols.appendRow(dst, `,"before":`, before)
	dst = cols.appendRow(dst, `,"after":`, after)
	dst = append(dst, `,"lsn":"`...)
	dst = AppendLSN(dst, lsn)
	dst = append(dst, '"')
	dst = append(dst, tx.lsn...)
	dst = strconv.AppendInt(dst, int64(index), 10)
	return append(dst, tx.tail...)
}

// AppendLSN appends a PostgreSQL WAL position as PostgreSQL prints it:
// the upper and lower 32 bits in upper-case hexadecimal, %X/%X.
func AppendLSN(dst []byte, lsn uint64) []byte {
	dst = appendUpperHex(dst, uint32(lsn>>32))
	return appendUpperHex(append(dst, '/'), uint32(lsn))
}

func appendUpperHex(dst []byte, v uint32) []byte {
	n := len(dst)
	dst = strconv.AppendUint(dst, uint64(v), 16)
	for i := n; i < len(dst); i++ {
		if c := dst[i]; c >= 'a' {
			dst[i] = c - 'a' + 'A'
		}
	}
	return dst
}

// ParseLSN parses a PostgreSQL WAL position as AppendLSN writes it (%X/%X,
// either case).
func ParseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok || hi == "" || lo == "" || len(hi) > 8 || len(lo) > 8 {
		return 0, fmt.Errorf("lsn %q: want %%X/%%X", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("lsn %q: want %%X/%%X", s)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("lsn %q: want %%X/%%X", s)
	}
	return h<<32 | l, nil
}
