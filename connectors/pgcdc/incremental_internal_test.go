package pgcdc

import (
	"testing"

	"github.com/sluicehq/sluice/protocol"
)

// invisible finds a delivered transaction that a snapshot has in progress
// or has not begun, with ids placed in the snapshot's epoch.
func TestInvisible(t *testing.T) {
	for _, tc := range []struct {
		snap      string
		delivered []uint32
		want      uint32
		missed    bool
	}{
		{"100:105:", []uint32{90, 99, 104}, 0, false},
		{"100:105:100,103", []uint32{90, 99, 104}, 0, false},
		{"100:105:100,103", []uint32{90, 103, 104}, 103, true},
		{"100:105:", []uint32{104, 105}, 105, true}, // committed in WAL, not completed for the snapshot
		{"100:105:", []uint32{110}, 110, true},
		{"100:105:", nil, 0, false},
		// In the epoch after the first: 4294967290 is of the epoch before.
		{"4294967301:4294967310:4294967305", []uint32{4294967290, 3, 9}, 9, true},
		{"4294967301:4294967310:", []uint32{4294967290, 3, 9}, 0, false},
		{"4294967301:4294967310:", []uint32{13, 14}, 14, true},
		{"8589934590:8589934600:", []uint32{4294967290}, 0, false},
		{"8589934590:8589934600:", []uint32{7, 8}, 8, true},
	} {
		got, missed, err := invisible(tc.snap, tc.delivered)
		if err != nil || got != tc.want || missed != tc.missed {
			t.Errorf("invisible(%q, %v) = %d, %v, %v; want %d, %v", tc.snap, tc.delivered, got, missed, err, tc.want, tc.missed)
		}
	}
	for _, bad := range []string{"", "1:2", "1:x:", "1:2:3,y"} {
		if _, _, err := invisible(bad, []uint32{1}); err == nil {
			t.Errorf("invisible(%q) accepted it", bad)
		}
	}
}

// An update between a chunk's watermarks that leaves a TOAST value
// unchanged keeps its key's row in the chunk, with the values it sent
// written over it (an applier without the row leaves such an update out,
// counting on the chunk); an update sending every value, a key change and
// a delete take the row out as before.
func TestChunkKeepsRowOfPartialUpdate(t *testing.T) {
	text := func(s string) protocol.Cell { return protocol.Cell{Kind: protocol.CellText, Text: []byte(s)} }
	unchanged := protocol.Cell{Kind: protocol.CellUnchanged}
	null := protocol.Cell{Kind: protocol.CellNull}
	// The stream's relation puts the columns in another order than the
	// chunk's select did.
	rel := &relation{schema: "s", table: "t", names: []string{"note", "id", "big", "v"}, keyIdx: []int{1}}
	job := func() *snapJob {
		j := &snapJob{schema: "s", table: "t", phase: phaseWindow, cols: []string{"id", "v", "note", "big"}, keyIdx: []int{0}, rows: map[string][][]byte{}}
		for _, id := range []string{"1", "2", "3", "4"} {
			j.rows[id] = [][]byte{[]byte(id), []byte("v" + id), nil, []byte("BIG" + id)}
			j.order = append(j.order, id)
		}
		return j
	}
	j := job()
	j.onChange(rel, protocol.OpUpdate, nil, []protocol.Cell{text("n1"), text("1"), unchanged, text("")})
	j.onChange(rel, protocol.OpUpdate, nil, []protocol.Cell{null, text("1"), unchanged, text("w1")})
	j.onChange(rel, protocol.OpUpdate, nil, []protocol.Cell{text("n2"), text("2"), text("big2"), text("w2")}) // every value sent
	j.onChange(rel, protocol.OpUpdate, []protocol.Cell{{}, text("3"), {}, {}}, []protocol.Cell{null, text("30"), unchanged, text("w3")})
	j.onChange(rel, protocol.OpDelete, []protocol.Cell{{}, text("4"), {}, {}}, nil)
	row, ok := j.rows["1"]
	if !ok {
		t.Fatal("the row of the partial updates left the chunk")
	}
	if string(row[1]) != "w1" || row[2] != nil || string(row[3]) != "BIG1" {
		t.Errorf("row 1 = %q, want v w1, note NULL, big BIG1 kept", row)
	}
	for _, k := range []string{"2", "3", "4", "30"} {
		if _, ok := j.rows[k]; ok {
			t.Errorf("row %s still in the chunk", k)
		}
	}
	// An empty text is not NULL.
	j = job()
	j.onChange(rel, protocol.OpUpdate, nil, []protocol.Cell{text(""), text("1"), unchanged, text("v")})
	if row := j.rows["1"]; row[2] == nil || len(row[2]) != 0 {
		t.Errorf("note = %q (nil %v), want an empty text", row[2], row[2] == nil)
	}
	// Outside the window nothing changes.
	j = job()
	j.phase = phaseLow
	j.onChange(rel, protocol.OpDelete, []protocol.Cell{{}, text("4"), {}, {}}, nil)
	if len(j.rows) != 4 {
		t.Errorf("%d rows after a change outside the window, want 4", len(j.rows))
	}
}
