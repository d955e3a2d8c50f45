package protocol

import (
	"encoding/json"
	"testing"
	"time"
)

// A time window encodes as it always did (old Raft entries and snapshots
// decode to the same window); a window of values has its own fields.
func TestWindowEncoding(t *testing.T) {
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tw := Window{From: from, To: from.Add(time.Hour)}
	b, err := json.Marshal(tw)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"from":"2026-01-01T00:00:00Z","to":"2026-01-01T01:00:00Z"}`; string(b) != want {
		t.Fatalf("time window encodes as %s, want %s", b, want)
	}
	vw := ValueWindow(0, 1000)
	b, _ = json.Marshal(vw)
	if want := `{"values":true,"hi":1000}`; string(b) != want {
		t.Fatalf("window of values encodes as %s, want %s", b, want)
	}
	var back Window
	if err := json.Unmarshal(b, &back); err != nil || back != vw {
		t.Fatalf("decoded %+v (%v), want %+v", back, err, vw)
	}
}

func TestWindowRanges(t *testing.T) {
	v := ValueWindow
	h := func(n int) time.Time { return time.Date(2026, 1, 1, n, 0, 0, 0, time.UTC) }
	tw := func(a, b int) Window { return Window{From: h(a), To: h(b)} }
	tests := []struct {
		name                      string
		a, b                      Window
		covers, touches, overlaps bool
		union                     Window
	}{
		{"values inside", v(0, 10), v(2, 5), true, true, true, v(0, 10)},
		{"values meeting", v(0, 10), v(10, 20), false, true, false, v(0, 20)},
		{"values apart", v(0, 10), v(11, 20), false, false, false, v(0, 20)},
		{"values overlapping", v(0, 10), v(5, 20), false, true, true, v(0, 20)},
		{"times meeting", tw(0, 1), tw(1, 2), false, true, false, tw(0, 2)},
		{"times inside", tw(0, 3), tw(1, 2), true, true, true, tw(0, 3)},
		{"other kinds", tw(0, 1), v(0, 10), false, false, false, tw(0, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a.Covers(tt.b); got != tt.covers {
				t.Errorf("Covers = %v", got)
			}
			if got := tt.a.Touches(tt.b); got != tt.touches {
				t.Errorf("Touches = %v", got)
			}
			if got := tt.a.Overlaps(tt.b); got != tt.overlaps {
				t.Errorf("Overlaps = %v", got)
			}
			if tt.touches && !tt.a.Union(tt.b).Equal(tt.union) {
				t.Errorf("Union = %v, want %v", tt.a.Union(tt.b), tt.union)
			}
		})
	}
	if !v(5, 5).Empty() || v(5, 6).Empty() || !tw(2, 1).Empty() {
		t.Error("Empty")
	}
	if s := v(-5, 10).String(); s != "[-5, 10)" {
		t.Errorf("String = %q", s)
	}
}
