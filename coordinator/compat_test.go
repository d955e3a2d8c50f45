package coordinator

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// The files in testdata were written by the FSM before its commands were
// typed: fsm-log-v1.txt is a Raft log that uses every command type (one
// entry a line: the type byte in decimal, a space, the JSON body), and
// fsm-snapshot-v1.json the snapshot of the state it gave. A node of this
// version replays such a log and restores such a snapshot.

// oldLog reads testdata/fsm-log-v1.txt as Raft log entries.
func oldLog(t *testing.T) []*raft.Log {
	t.Helper()
	data, err := os.ReadFile("testdata/fsm-log-v1.txt")
	if err != nil {
		t.Fatal(err)
	}
	var out []*raft.Log
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		typ, body, ok := strings.Cut(sc.Text(), " ")
		n, err := strconv.Atoi(typ)
		if !ok || err != nil || n < 1 || n > 255 {
			t.Fatalf("bad log line %q", sc.Text())
		}
		out = append(out, &raft.Log{Index: uint64(len(out) + 1), Type: raft.LogCommand, Data: append([]byte{byte(n)}, body...)})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// oldFSM is the FSM that replayed the old log.
func oldFSM(t *testing.T) *fsm {
	t.Helper()
	f := newFSM()
	for _, l := range oldLog(t) {
		f.Apply(l)
	}
	return f
}

func TestFSMReplaysOldLogAndSnapshot(t *testing.T) {
	f := oldFSM(t)
	want, err := os.ReadFile("testdata/fsm-snapshot-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	// The state the old log replays to encodes as the old snapshot, byte
	// for byte: no field was renamed, lost or added to a snapshot.
	got, err := json.Marshal(f.st)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the old log replays to another state:\n got %s\nwant %s", got, want)
	}
	// The checksums of the old entries, strings then, are typed sums.
	if ts := f.st.Runs["orders-000002"].Tasks[0]; ts.Checksum != 0xff || ts.checksum() != (connectors.Checksum{Sum: 0xff, Rows: 4}) {
		t.Errorf("task checksum %v (%+v), want 0xff over 4 rows", ts.Checksum, ts.checksum())
	}
	g := newFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(want))); err != nil {
		t.Fatal(err)
	}
	if again, _ := json.Marshal(g.st); !bytes.Equal(again, want) {
		t.Fatalf("the old snapshot restores to another state:\n got %s\nwant %s", again, want)
	}
}

// A backfill of the old log started its windows in Apply; it goes on
// that way on this version (a run's end starts the next queued window in
// the same entry), so the rest of an old log still replays as written.
// The leader starts only the windows of a backfill this version created.
func TestFSMOldBackfillGoesOn(t *testing.T) {
	f := oldFSM(t)
	b := f.st.Backfills["ev-bf0001"]
	if b.LeaderStarts || b.State != protocol.BackfillRunning || b.Windows[5].State != protocol.WindowQueued {
		t.Fatalf("old backfill %+v", b)
	}
	applyAll(t, f, commitEntries(b.Windows[3].Run, 2)...)
	w := b.Windows[5]
	if w.State != protocol.WindowRunning || w.Run == "" {
		t.Fatalf("the next window after a run of an old backfill ended: %+v, want running", w)
	}
	if r := f.st.Runs[w.Run]; r.Backfill != b.ID || *r.Window != *win(5, 6) || r.State != protocol.RunPlanning {
		t.Fatalf("its run %+v", r)
	}
	if err, _ := applyAll(t, f, windowRun("ev", b.ID, win(5, 6))).(error); !refused(err, refusedInvalid) {
		t.Fatalf("a leader's window run of an old backfill: %v, want refused", err)
	}
}
