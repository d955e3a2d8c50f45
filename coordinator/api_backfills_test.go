package coordinator

import (
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/protocol"
)

// The backfill list: newest first (the later of two created at once
// first), of one pipeline when asked, with the windows counted but not
// listed.
func TestBackfillSummaries(t *testing.T) {
	f := newFSM()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	add := func(id, pipeline string, seq int64, created time.Time, states ...string) {
		b := &backfillState{ID: id, Pipeline: pipeline, Seq: seq, Created: created, State: protocol.BackfillRunning}
		for _, s := range states {
			b.Windows = append(b.Windows, protocol.BackfillWindow{State: s, Rows: 10})
		}
		f.st.Backfills[id] = b
	}
	add("a-bf0001", "a", 1, t0, protocol.WindowCommitted, protocol.WindowFailed)
	add("a-bf0002", "a", 2, t0.Add(time.Hour), protocol.WindowCommitted, protocol.WindowRunning, protocol.WindowQueued)
	add("b-bf0001", "b", 3, t0.Add(time.Hour), protocol.WindowSkipped)
	var ids []string
	for _, s := range f.backfillSummaries("") {
		ids = append(ids, s.ID)
		if s.Windows != nil {
			t.Errorf("%s lists its windows", s.ID)
		}
	}
	if want := []string{"b-bf0001", "a-bf0002", "a-bf0001"}; !slices.Equal(ids, want) {
		t.Fatalf("order %v, want %v", ids, want)
	}
	got := f.backfillSummaries("a")
	if len(got) != 2 || got[0].ID != "a-bf0002" || got[0].Total != 3 || got[0].Committed != 1 || got[0].Running != 1 || got[0].Queued != 1 || got[0].Rows != 10 ||
		got[1].Failed != 1 {
		t.Fatalf("backfills of a %+v", got)
	}
	if len(f.st.Backfills["a-bf0002"].Windows) != 3 {
		t.Fatal("listing changed the state's windows")
	}
}
