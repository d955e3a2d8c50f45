package protocol

import (
	"bytes"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestDecodeChangeEventsPacked(t *testing.T) {
	ct := time.Date(2026, 11, 26, 1, 2, 3, 0, time.UTC)
	var evs []ChangeEvent
	for i := range 3 {
		evs = append(evs, ChangeEvent{
			Op: OpUpdate, Pipeline: "p", Database: "db", Schema: "s", Table: "t", Key: []string{"id"},
			After: Row{"id": Text(strings.Repeat("7", i+1)), "note": Text("line\nbreak")},
			LSN:   "0/1", CommitLSN: "0/2", Index: i, Xid: 9, CommitTime: ct,
		})
	}
	var msg []byte
	for i, e := range evs {
		if i > 0 {
			msg = append(msg, '\n')
		}
		msg = e.AppendJSON(msg)
	}
	if n := CountChangeEvents(msg); n != 3 {
		t.Fatalf("CountChangeEvents = %d, want 3 (a newline inside a value is escaped)", n)
	}
	got, err := DecodeChangeEvents(msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("decoded %d events, want 3", len(got))
	}
	for i := range got {
		a, _ := got[i].Encode()
		b, _ := evs[i].Encode()
		if !bytes.Equal(a, b) {
			t.Errorf("event %d: got %s, want %s", i, a, b)
		}
	}

	// An event carrying its table's description decodes with it.
	withRel := evs[0]
	withRel.Relation = &Schema{System: "postgres", Key: []string{"id"}, Columns: []Column{
		{Name: "id", Type: TypeInt64, NotNull: true, Native: "bigint", ID: 1},
		{Name: "note", Type: TypeString, Native: "text", Default: "'n'::text", ID: 2},
	}}
	relMsg := withRel.AppendJSON(append(evs[1].AppendJSON(nil), '\n'))
	back, err := DecodeChangeEvents(relMsg)
	if err != nil || len(back) != 2 {
		t.Fatalf("message with a relation: %v, %d events", err, len(back))
	}
	if !reflect.DeepEqual(back[1].Relation, withRel.Relation) || back[0].Relation != nil {
		t.Errorf("relation decoded as %+v, want %+v", back[1].Relation, withRel.Relation)
	}

	one, err := DecodeChangeEvents(msg[:bytes.IndexByte(msg, '\n')])
	if err != nil || len(one) != 1 || one[0].Index != 0 {
		t.Fatalf("single-event message: %v %+v", err, one)
	}

	bad := append(append([]byte{}, msg...), "\n{\"v\":1,\"op\":\"nope\"}"...)
	if _, err := DecodeChangeEvents(bad); err == nil || !strings.Contains(err.Error(), "event 4 of the message") {
		t.Fatalf("bad 4th event: err = %v, want one naming event 4", err)
	}
	if _, err := DecodeChangeEvents(append(append([]byte{}, msg...), '\n')); err == nil || !strings.Contains(err.Error(), "event 4") {
		t.Fatalf("trailing newline: err = %v, want an error naming event 4", err)
	}
}

func BenchmarkDecodeChangeEvent(b *testing.B) {
	e, _, _ := benchEvent()
	e.Before = Row{"id": Text("123456"), "note": NullValue, "big": UnchangedValue}
	data, err := e.Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := DecodeChangeEvent(data); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzDecodeChangeEvent: the fast decoder takes every event AppendJSON
// writes, and whatever it takes, encoding/json decodes to the same event.
func FuzzDecodeChangeEvent(f *testing.F) {
	e, _, _ := benchEvent()
	e.Before = Row{"id": Text("1"), "n": NullValue, "t": UnchangedValue}
	seed, _ := e.Encode()
	f.Add(seed, "a", "b")
	f.Add([]byte(` { "v" : 1 , "op":"read","schema":"s","table":"t","key":[],"after":{},"before":null,"xid":4294967295,"index":-3} `), "\\", "\u2028")
	f.Add([]byte(`{"v":1,"op":"insert","schema":"s\u00e9\"","table":"t","after":{"a\/b":"x\ud83d\ude00"}}`), "<>&", "\x00\x1f")
	f.Add([]byte(`{"v":1,"op":"insert","schema":"s","table":"t","after":{"a":{"unchanged_toast":true}},"commit_time":"2026-01-02T03:04:05.123+01:00"}`), "\xff", "日本")
	for _, s := range trickyStrings {
		f.Add([]byte(`{"v":1,"op":"update","schema":"`+s+`","table":"t"}`), s, s)
	}
	f.Fuzz(func(t *testing.T, data []byte, s1, s2 string) {
		check := func(data []byte, mustTake bool) {
			fast, ok := decodeEventFast(data)
			if !ok {
				if mustTake {
					t.Fatalf("the fast decoder refused %s", data)
				}
				return
			}
			slow, err := decodeEventJSON(data)
			if err != nil {
				t.Fatalf("fast decoder took %s, encoding/json: %v", data, err)
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Fatalf("%s\nfast %#v\nslow %#v", data, fast, slow)
			}
			// Its strings as substrings of the input: the same event.
			in, ok := decodeEventFastIn(data, string(data))
			if !ok || !reflect.DeepEqual(in, fast) {
				t.Fatalf("%s\nover a string %#v (%v)\nover bytes %#v", data, in, ok, fast)
			}
		}
		check(data, false)
		ev := ChangeEvent{Op: Op(s1), Pipeline: s2, Database: s1, Schema: s2, Table: s1, Key: []string{s1, s2},
			Before: Row{s1: Text(s2), s2 + "x": NullValue}, After: Row{s2: Text(s1), s1 + "y": UnchangedValue},
			LSN: s1, CommitLSN: s2, Index: len(s1) - 5, Xid: uint32(len(s2)), CommitTime: time.Unix(int64(len(s1))*1e8, int64(len(s2))).UTC()}
		// A commit time JSON cannot carry (a year past 9999, from a long
		// s1) is one encoding/json refuses too.
		_, encErr := ev.Encode()
		check(ev.AppendJSON(nil), encErr == nil)
	})
}

// BenchmarkAppendChangeEvents decodes a message of 100 events, as a
// runner does for every message it applies.
func BenchmarkAppendChangeEvents(b *testing.B) {
	e, _, _ := benchEvent()
	var msg []byte
	for i := range 100 {
		e.After["id"] = Text(strconv.Itoa(i))
		data, err := e.Encode()
		if err != nil {
			b.Fatal(err)
		}
		if i > 0 {
			msg = append(msg, '\n')
		}
		msg = append(msg, data...)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	var dst []ChangeEvent
	for b.Loop() {
		var err error
		if dst, err = AppendChangeEvents(dst[:0], msg); err != nil || len(dst) != 100 {
			b.Fatal(err)
		}
	}
}
