package kafka

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// rowEncoder appends records as JSONL rows in a source's format.
type rowEncoder struct {
	format   string
	metadata bool
	base64   bool
	scratch  bytes.Buffer
}

func newRowEncoder(c SourceConfig) *rowEncoder {
	return &rowEncoder{format: c.format(), metadata: c.Metadata, base64: c.Encoding == EncodingBase64}
}

// appendRow appends r as one JSONL line (with its newline) to dst. A
// value that format json cannot take (not a JSON object) or text that is
// not UTF-8 is a permanent *connectors.RowError naming the record.
func (e *rowEncoder) appendRow(dst []byte, r *kgo.Record) ([]byte, error) {
	bad := func(field string, err error) error {
		return connectors.Permanent(&connectors.RowError{Location: fmt.Sprintf("%s/%d", r.Topic, r.Partition), Row: r.Offset, Field: field, Err: err})
	}
	if e.format == FormatRecord {
		dst = append(dst, `{"topic":`...)
		dst = appendJSONString(dst, r.Topic)
		dst = append(dst, `,"partition":`...)
		dst = strconv.AppendInt(dst, int64(r.Partition), 10)
		dst = append(dst, `,"offset":`...)
		dst = strconv.AppendInt(dst, r.Offset, 10)
		dst = append(dst, `,"timestamp":`...)
		dst = appendTime(dst, r.Timestamp)
		var err error
		dst = append(dst, `,"key":`...)
		if dst, err = e.appendBytes(dst, r.Key); err != nil {
			return dst, bad("key", err)
		}
		dst = append(dst, `,"value":`...)
		if dst, err = e.appendBytes(dst, r.Value); err != nil {
			return dst, bad("value", err)
		}
		dst = append(dst, `,"headers":[`...)
		for i, h := range r.Headers {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"key":`...)
			dst = appendJSONString(dst, h.Key)
			dst = append(dst, `,"value":`...)
			if dst, err = e.appendBytes(dst, h.Value); err != nil {
				return dst, bad("headers["+strconv.Itoa(i)+"]", err)
			}
			dst = append(dst, '}')
		}
		return append(dst, "]}\n"...), nil
	}
	v := bytes.TrimSpace(r.Value)
	if len(v) < 2 || v[0] != '{' || !json.Valid(v) {
		return dst, bad("value", errors.New("the value is not a JSON object (format json; format record takes any value)"))
	}
	if bytes.ContainsAny(v, "\r\n") {
		e.scratch.Reset()
		if err := json.Compact(&e.scratch, v); err != nil {
			return dst, bad("value", err)
		}
		v = e.scratch.Bytes()
	}
	if !e.metadata {
		dst = append(dst, v...)
		return append(dst, '\n'), nil
	}
	dst = append(dst, `{"_topic":`...)
	dst = appendJSONString(dst, r.Topic)
	dst = append(dst, `,"_partition":`...)
	dst = strconv.AppendInt(dst, int64(r.Partition), 10)
	dst = append(dst, `,"_offset":`...)
	dst = strconv.AppendInt(dst, r.Offset, 10)
	dst = append(dst, `,"_timestamp":`...)
	dst = appendTime(dst, r.Timestamp)
	dst = append(dst, `,"_key":`...)
	if r.Key == nil {
		dst = append(dst, "null"...)
	} else {
		dst = appendJSONString(dst, r.Key)
	}
	rest := bytes.TrimSpace(v[1:])
	if rest[0] != '}' {
		dst = append(dst, ',')
	}
	dst = append(dst, rest...)
	return append(dst, '\n'), nil
}

// appendBytes appends b as a JSON string in the encoder's encoding, or
// null for nil.
func (e *rowEncoder) appendBytes(dst, b []byte) ([]byte, error) {
	switch {
	case b == nil:
		return append(dst, "null"...), nil
	case e.base64:
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, b)
		return append(dst, '"'), nil
	case !utf8.Valid(b):
		return dst, errors.New("not UTF-8 text (set encoding: base64)")
	}
	return appendJSONString(dst, b), nil
}

func appendTime(dst []byte, t time.Time) []byte {
	dst = append(dst, '"')
	dst = t.UTC().AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

// appendJSONString appends s as a JSON string (protocol.AppendJSONString).
func appendJSONString[T string | []byte](dst []byte, s T) []byte {
	return protocol.AppendJSONString(dst, s)
}
