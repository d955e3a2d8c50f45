package pgcdc

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/sluicehq/sluice/protocol"
)

// FuzzAppendJSONString: appendJSONString writes valid JSON that decodes to
// what encoding/json's own encoding of the same bytes decodes to (invalid
// UTF-8 becomes U+FFFD in both).
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", `q"uote\back`, "tab\tnl\nnul\x00\x1f", "日本語 ünï", "\xff\xfebad", "a\u2028b<>&"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var got, want string
		if err := json.Unmarshal(appendJSONString(nil, []byte(s)), &got); err != nil {
			t.Fatalf("appendJSONString(%q) = %s: %v", s, appendJSONString(nil, s), err)
		}
		std, _ := json.Marshal(s)
		if err := json.Unmarshal(std, &want); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("appendJSONString(%q) decodes to %q, encoding/json's to %q", s, got, want)
		}
	})
}

// TestRowEncoder: a line decodes as the SnapshotRow it encodes, NULL apart
// from the empty string.
func TestRowEncoder(t *testing.T) {
	at := time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC)
	enc, err := newRowEncoder(snapshotSpec{Database: "db", Schema: "s", Table: "t\"x", Key: []string{"id", "k"}, LSN: "0/16B3748", Time: at, Chunk: "ctid[0:4)"})
	if err != nil {
		t.Fatal(err)
	}
	line := enc.append(nil, 42, []string{"id", "k", "näme", "empty"}, [][]byte{[]byte("7"), []byte("a\nb"), nil, {}})
	var got SnapshotRow
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	want := SnapshotRow{Database: "db", Schema: "s", Table: "t\"x", Key: []string{"id", "k"}, LSN: "0/16B3748", Time: at, Chunk: "ctid[0:4)", N: 42,
		Row: protocol.Row{"id": protocol.Text("7"), "k": protocol.Text("a\nb"), "näme": protocol.NullValue, "empty": protocol.Text("")}}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) {
		t.Fatalf("line %s decodes to %s, want %s", line, gb, wb)
	}
}
