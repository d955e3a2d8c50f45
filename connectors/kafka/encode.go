package kafka

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/sluicehq/sluice/connectors"
)

// rowSplitter turns a batch into record values, one JSON object per row,
// and record keys from the columns Key names.
type rowSplitter struct {
	key []string
}

// split calls fn with each row of b as a JSON object and its key (nil
// without key columns, or when a single key column is null). JSONL lines
// pass as they are; CSV records become objects of strings; Arrow rows are
// rendered by arrow's JSON encoding. fn may keep neither slice.
func (s rowSplitter) split(b connectors.Batch, fn func(value, key []byte) error) error {
	var scratch bytes.Buffer
	row := func(n int64, line []byte) error {
		var key []byte
		if len(s.key) > 0 {
			k, err := s.keyOf(line)
			if err != nil {
				return &connectors.RowError{Location: b.Position, Row: n, Err: err}
			}
			key = k
		}
		return fn(line, key)
	}
	switch {
	case b.Record != nil:
		if err := array.RecordToJSON(b.Record, &scratch); err != nil {
			return fmt.Errorf("render rows as JSON: %w", err)
		}
		return eachLine(scratch.Bytes(), row)
	case b.Format == connectors.FormatJSONL:
		return eachLine(b.Raw, row)
	case b.Format == connectors.FormatCSV:
		r := csv.NewReader(bytes.NewReader(b.Raw))
		r.FieldsPerRecord = len(b.Columns)
		r.ReuseRecord = true
		var obj []byte
		for n := int64(1); ; n++ {
			rec, err := r.Read()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return &connectors.RowError{Location: b.Position, Row: n, Err: err}
			}
			obj = append(obj[:0], '{')
			for i, v := range rec {
				if i > 0 {
					obj = append(obj, ',')
				}
				obj = appendJSONString(obj, b.Columns[i])
				obj = append(obj, ':')
				obj = appendJSONString(obj, v)
			}
			obj = append(obj, '}')
			if err := row(n, obj); err != nil {
				return err
			}
		}
	}
	return fmt.Errorf("a kafka sink cannot take %s batches", b.Format)
}

// eachLine calls fn with each non-blank line of data, without its line
// ending, numbered from 1.
func eachLine(data []byte, fn func(n int64, line []byte) error) error {
	var n int64
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		n++
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if err := fn(n, line); err != nil {
			return err
		}
	}
	return nil
}

// keyOf returns the key of a row: the text of its one key column (a
// string's characters, another value's JSON text, nil for null or a
// missing column), or the JSON array of several.
func (s rowSplitter) keyOf(obj []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if len(s.key) == 1 {
		v, ok := m[s.key[0]]
		if !ok || string(v) == "null" {
			return nil, nil
		}
		var str string
		if v[0] == '"' && json.Unmarshal(v, &str) == nil {
			return []byte(str), nil
		}
		return bytes.Clone(v), nil
	}
	out := []byte{'['}
	for i, k := range s.key {
		if i > 0 {
			out = append(out, ',')
		}
		v, ok := m[k]
		if !ok {
			v = json.RawMessage("null")
		}
		out = append(out, v...)
	}
	return append(out, ']'), nil
}
