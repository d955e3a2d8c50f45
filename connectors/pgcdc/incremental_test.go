package pgcdc_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/protocol"
)

// lockedBuffer is a log's output read while it is written.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestIncrementalSnapshotSeesDeliveredTransactions: a chunk of an
// incremental snapshot is not read on a snapshot of the database that
// misses a transaction whose commit the stream delivered. PostgreSQL makes
// a commit visible a moment after it can be streamed; on a loaded machine
// the chunk's select could miss it and publish a row older than the
// change the stream published before it (a replica then holds the old
// value). The moment is stretched here: a transaction is held open and
// the Reader is told it delivered its commit. While it is open, the chunk
// starts again at new low watermarks and nothing of the table is
// published but its snapshot event (which comes before any chunk); once
// it ends the table is read whole, once.
func TestIncrementalSnapshotSeesDeliveredTransactions(t *testing.T) {
	e := setup(t, "a")
	ctx := context.Background()
	e.exec(t, fmt.Sprintf(`CREATE TABLE %[1]s.a (id int PRIMARY KEY, v text);
		INSERT INTO %[1]s.a SELECT g, 'a' || g FROM generate_series(1, 100) g`, e.schema))
	// The slot made first: making one waits for open transactions.
	_, first, _ := e.start(t)
	if err := first(); err != nil {
		t.Fatal(err)
	}
	xid, endHeld := e.holdTx(t)
	e.cfg.Snapshots = []protocol.TableSnapshot{{ID: "s1", Table: e.schema + ".a", Reason: protocol.SnapshotAdded}}
	e.cfg.ChunkRows = 40
	var logs lockedBuffer
	r, err := pgcdc.NewReader(e.cfg, e.js, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	pgcdc.SeedDelivered(r, xid)
	stop, done := e.run(t, r)

	// The chunk tried again and again: a hundred low watermarks.
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(logs.String(), "tries=100") {
		select {
		case <-done:
			t.Fatalf("reader stopped: %v", stop())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the chunk was not tried again 100 times in 60s: %s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	subject := protocol.CDCSubject("p1", e.schema, "a")
	s, err := e.js.Stream(ctx, protocol.StreamCDC)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[subject]; n != 1 {
		t.Fatalf("%d messages of the table published while the transaction delivered was not visible, want 1 (its snapshot event)", n)
	}
	if st := r.Status().Snapshots; len(st) != 1 || st[0].Rows != 0 || st[0].State == protocol.TableSnapshotted {
		t.Fatalf("snapshot status %+v while the transaction is open", st)
	}

	endHeld()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if st := r.Status().Snapshots; len(st) == 1 && st[0].State == protocol.TableSnapshotted {
			if st[0].Rows != 100 {
				t.Fatalf("snapshot status %+v, want 100 rows", st[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshot not taken in 60s after the transaction ended: %+v", r.Status().Snapshots)
		}
	}
	reads := map[string]int{}
	var marks, dones int
	for _, ev := range e.events(t, 102) {
		switch ev.ev.Op {
		case protocol.OpRead:
			reads[ev.ev.After["id"].Text]++
		case protocol.OpSnapshot:
			marks++
		case protocol.OpSnapshotDone:
			dones++
		}
	}
	if len(reads) != 100 || marks != 1 || dones != 1 {
		t.Errorf("%d rows read, %d snapshot and %d snapshot_done events; want 100, 1 and 1", len(reads), marks, dones)
	}
	for id, n := range reads {
		if n != 1 {
			t.Errorf("row %s read %d times", id, n)
		}
	}
}
