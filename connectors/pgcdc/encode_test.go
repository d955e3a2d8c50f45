package pgcdc

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/sluicehq/sluice/protocol"
)

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
