package pgcdc

import "testing"

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
