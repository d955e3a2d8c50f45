package protocol

import (
	"bytes"
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
