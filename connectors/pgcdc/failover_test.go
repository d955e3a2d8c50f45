package pgcdc_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

// TestReaderOrderAcrossLeaderFailover: a Reader streams single-row updates
// of a few keys into SLUICE_CDC replicated on a 3-node JetStream cluster
// (in this process) while the stream's leader changes three times (a
// step-down: what it had in flight is lost, as when it dies, but the
// cluster is back within seconds). A publish that fails stops the Reader
// and a supervisor starts it again, as a worker does. Per key, the stream
// must hold every update once, in commit order: the value counts the key's
// updates, so the test knows the order from the source itself. With
// several messages in flight (before issue #20's fix) it failed in 1 of 3
// runs.
func TestReaderOrderAcrossLeaderFailover(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	c := startCluster(t, 3)
	var urls []string
	for _, n := range c.nodes {
		urls = append(urls, n.ClientURL())
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for { // the cluster elects its meta leader first
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		err := pgcdc.EnsureStream(actx, js, pgcdc.StreamConfig{Replicas: 3})
		acancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("ensure stream: %v", err)
		}
		t.Logf("ensure stream: %v", err)
		time.Sleep(100 * time.Millisecond)
	}

	const keys = 8
	e := &env{dsn: dsn, schema: schema, conn: conn, js: js}
	e.cfg = pgcdc.Config{
		DSN: dsn, Slot: schema + "_slot", Publication: schema + "_pub", Tables: []string{schema + ".k"}, Pipeline: "p1",
		Heartbeat: 200 * time.Millisecond, StatusInterval: 100 * time.Millisecond, AckTimeout: 3 * time.Second,
	}
	e.cleanupSlot(t)
	e.exec(t, fmt.Sprintf(`CREATE TABLE %s.k (id int PRIMARY KEY, n int NOT NULL)`, schema))
	e.exec(t, fmt.Sprintf(`INSERT INTO %s.k SELECT g, 0 FROM generate_series(1, %d) g`, schema, keys))

	// The supervisor: Run again after every error, as a worker does.
	rctx, stopReaders := context.WithCancel(ctx)
	var wg sync.WaitGroup
	streaming := make(chan struct{})
	var restarts atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		var once sync.Once
		for rctx.Err() == nil {
			r, err := pgcdc.NewReader(e.cfg, js, nil)
			if err != nil {
				t.Error(err)
				return
			}
			done := make(chan error, 1)
			go func() { done <- r.Run(rctx) }()
		wait:
			for {
				select {
				case err = <-done:
					break wait
				case <-time.After(20 * time.Millisecond):
					if r.Status().ConfirmedLSN != "" {
						once.Do(func() { close(streaming) })
					}
				}
			}
			if err != nil && rctx.Err() == nil {
				restarts.Add(1)
				t.Logf("reader stopped (restarting): %v", err)
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	defer func() { stopReaders(); wg.Wait() }()
	select {
	case <-streaming:
	case <-ctx.Done():
		t.Fatal("the reader did not start streaming")
	}

	// Single-row updates from two connections (the keys split between
	// them) until the stream's leader changed three times.
	wctx, stopWriters := context.WithCancel(ctx)
	var writers sync.WaitGroup
	var updates atomic.Int64
	errc := make(chan error, 2)
	for w := range 2 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				errc <- err
				return
			}
			defer c.Close(context.Background())
			for i := 0; wctx.Err() == nil; i++ {
				id := w + 1 + 2*(i%(keys/2))
				if _, err := c.Exec(ctx, fmt.Sprintf(`UPDATE %s.k SET n = n + 1 WHERE id = $1`, schema), id); err != nil {
					errc <- err
					return
				}
				updates.Add(1)
				time.Sleep(time.Millisecond)
			}
		}()
	}
	for updates.Load() < 200 {
		time.Sleep(10 * time.Millisecond)
	}
	for range 3 {
		leader := streamLeader(ctx, t, js)
		t.Logf("leader %s of %s steps down after %d updates", leader, protocol.StreamCDC, updates.Load())
		if _, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+protocol.StreamCDC, nil, 10*time.Second); err != nil {
			t.Fatalf("step down: %v", err)
		}
		waitStored(ctx, t, js, 50) // the next leader stores again
	}
	stopWriters()
	writers.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	want := map[string]int{}
	total := 0
	rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT id::text, n FROM %s.k`, schema))
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		want[id] = n
		total += n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	// Every update, once, in commit order per key.
	evs, _ := readStream(ctx, t, js, total)
	next := map[string]int{}
	for i, ev := range evs {
		if ev.Op != protocol.OpUpdate {
			t.Fatalf("event %d: %s, want update", i, ev.Op)
		}
		id, n := ev.After["id"].Text, ev.After["n"].Text
		w := next[id] + 1
		if n != strconv.Itoa(w) {
			t.Fatalf("event %d: key %s has n=%s after %d updates in the stream, want n=%d (out of order, lost or doubled)", i, id, n, w-1, w)
		}
		next[id] = w
	}
	for id, n := range want {
		if next[id] != n {
			t.Errorf("key %s: %d updates in the stream, want %d", id, next[id], n)
		}
	}
	t.Logf("%d updates of %d keys in order across three leader changes; the reader restarted %d times", len(evs), keys, restarts.Load())
}

// TestReaderBatchesOnReplicatedStream: on SLUICE_CDC replicated on three
// servers, a Reader gathers the single-row transactions of a backlog into
// atomic batches (it is not held to one message per replication round
// trip). A first Reader is stopped mid-backlog without confirming what it
// published (its walsender is terminated); a second backlog is written;
// the next Reader republishes the first one's tail from the slot's
// confirmed position (probes, JetStream reporting duplicates), then
// batches again. Per key, the stream must hold every update once, in
// commit order, and messages of atomic batches stored by both Readers.
func TestReaderBatchesOnReplicatedStream(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	c := startCluster(t, 3)
	var urls []string
	for _, n := range c.nodes {
		urls = append(urls, n.ClientURL())
	}
	nc, err := nats.Connect(strings.Join(urls, ","))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for { // the cluster elects its meta leader first
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		err := pgcdc.EnsureStream(actx, js, pgcdc.StreamConfig{Replicas: 3})
		acancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("ensure stream: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	streamLeader(ctx, t, js)

	const keys, txs1, txs2 = 8, 2000, 1000
	const txs = txs1 + txs2
	e := &env{dsn: dsn, schema: schema, conn: conn, js: js}
	e.cfg = pgcdc.Config{
		DSN: dsn, Slot: schema + "_slot", Publication: schema + "_pub", Tables: []string{schema + ".k"}, Pipeline: "p1",
		// Confirmed only at the end of an idle moment: the first Reader
		// leaves what it published unconfirmed.
		Heartbeat: -1, StatusInterval: time.Hour, AckTimeout: 10 * time.Second,
	}
	e.cleanupSlot(t)
	e.exec(t, fmt.Sprintf(`CREATE TABLE %s.k (id int PRIMARY KEY, n int NOT NULL)`, schema))
	e.exec(t, fmt.Sprintf(`INSERT INTO %s.k SELECT g, 0 FROM generate_series(1, %d) g`, schema, keys))
	_, stop0, _ := e.start(t) // creates the slot
	if err := stop0(); err != nil {
		t.Fatal(err)
	}
	e.exec(t, fmt.Sprintf(`CREATE PROCEDURE %[1]s.bump(txs int) LANGUAGE plpgsql AS $$
		BEGIN FOR i IN 1..txs LOOP UPDATE %[1]s.k SET n = n + 1 WHERE id = i %% %[2]d + 1; COMMIT; END LOOP; END $$`, schema, keys))
	e.exec(t, fmt.Sprintf(`CALL %s.bump(%d)`, schema, txs1)) // one transaction per update
	r1, stop1, done1 := e.start(t)

	// Stop the first Reader mid-backlog, without a confirmation.
	for r1.Status().Events < txs1/10 {
		select {
		case <-done1:
			t.Fatalf("the first reader stopped: %v", stop1())
		case <-ctx.Done():
			t.Fatalf("the first reader published %d events", r1.Status().Events)
		case <-time.After(time.Millisecond):
		}
	}
	e.exec(t, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, e.cfg.Slot)
	<-done1
	t.Logf("first reader stopped after %d events: %v", r1.Status().Events, stop1())
	select { // what it had in flight is stored or refused
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("the first reader's last publish got no answer")
	}
	before, batchedBefore, _ := readBatched(ctx, t, js)
	if batchedBefore == 0 {
		t.Errorf("the first reader stored %d messages, none in an atomic batch", before)
	}
	e.exec(t, fmt.Sprintf(`CALL %s.bump(%d)`, schema, txs2))

	r2, stop2, _ := e.start(t)
	waitEvents(ctx, t, js, txs)
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	msgs, batched, evs := readBatched(ctx, t, js)
	if msgs != txs || len(evs) != txs {
		t.Fatalf("%s holds %d events in %d messages, want %d", protocol.StreamCDC, len(evs), msgs, txs)
	}
	if republished := r2.Status().Events - int64(txs-int(before)); republished <= 0 {
		t.Errorf("the second reader published %d events, %d were not stored: it republished none of the first one's", r2.Status().Events, txs-int(before))
	}
	if batched == batchedBefore {
		t.Errorf("the second reader stored no message in an atomic batch")
	}
	next := map[string]int{}
	for i, ev := range evs {
		id, n := ev.After["id"].Text, ev.After["n"].Text
		w := next[id] + 1
		if ev.Op != protocol.OpUpdate || n != strconv.Itoa(w) {
			t.Fatalf("event %d: %s of key %s with n=%s after %d updates in the stream, want the update to n=%d (out of order, lost or doubled)", i, ev.Op, id, n, w-1, w)
		}
		next[id] = w
	}
	for id := 1; id <= keys; id++ {
		if got := next[strconv.Itoa(id)]; got != txs/keys {
			t.Errorf("key %d: %d updates in the stream, want %d", id, got, txs/keys)
		}
	}
	t.Logf("%d updates in order; %d of %d messages stored by atomic batches (%d by the first reader); the second republished %d events",
		len(evs), batched, txs, batchedBefore, r2.Status().Events-int64(txs-int(before)))
}

// waitEvents waits until the messages of SLUICE_CDC hold n events.
func waitEvents(ctx context.Context, t *testing.T, js jetstream.JetStream, n int) {
	t.Helper()
	for {
		if _, _, evs, err := readAll(ctx, js); err == nil && len(evs) >= n {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%s does not hold %d events", protocol.StreamCDC, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readBatched returns how many messages SLUICE_CDC holds, how many of them
// an atomic batch stored, and their events in stream order. It reads
// again after an error: a request to a loaded cluster may find no leader.
func readBatched(ctx context.Context, t *testing.T, js jetstream.JetStream) (msgs uint64, batched int, evs []protocol.ChangeEvent) {
	t.Helper()
	for {
		msgs, batched, evs, err := readAll(ctx, js)
		if err == nil {
			return msgs, batched, evs
		}
		if ctx.Err() != nil {
			t.Fatalf("read %s: %v", protocol.StreamCDC, err)
		}
		t.Logf("read %s (again): %v", protocol.StreamCDC, err)
		time.Sleep(100 * time.Millisecond)
	}
}

// readAll reads every message SLUICE_CDC holds with an ordered consumer.
func readAll(ctx context.Context, js jetstream.JetStream) (msgs uint64, batched int, evs []protocol.ChangeEvent, err error) {
	info, err := streamInfo(ctx, js)
	if err != nil {
		return 0, 0, nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	s, err := js.Stream(rctx, protocol.StreamCDC)
	if err != nil {
		return 0, 0, nil, err
	}
	cons, err := s.OrderedConsumer(rctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return 0, 0, nil, err
	}
	for msgs < info.State.Msgs {
		if err := rctx.Err(); err != nil {
			return 0, 0, nil, fmt.Errorf("read %d of %d messages: %w", msgs, info.State.Msgs, err)
		}
		batch, err := cons.Fetch(5000, jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			return 0, 0, nil, err
		}
		for m := range batch.Messages() {
			msgs++
			if m.Headers().Get("Nats-Batch-Id") != "" {
				batched++
			}
			got, err := protocol.DecodeChangeEvents(m.Data())
			if err != nil {
				return 0, 0, nil, err
			}
			evs = append(evs, got...)
		}
		if err := batch.Error(); err != nil {
			return 0, 0, nil, err
		}
	}
	return msgs, batched, evs, nil
}

// cluster is n JetStream servers in this process, routed into one
// cluster.
type cluster struct {
	dir   string
	ports []int // of the routes
	nodes []*server.Server
}

func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := &cluster{dir: t.TempDir(), ports: make([]int, n), nodes: make([]*server.Server, n)}
	for i := range c.ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c.ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	for i := range c.nodes {
		c.start(t, i)
	}
	return c
}

// start starts node i, with the store it had if it ran before.
func (c *cluster) start(t *testing.T, i int) {
	t.Helper()
	var routes []string
	for _, p := range c.ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	opts := &server.Options{
		ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: -1, NoLog: os.Getenv("SLUICE_TEST_NATS_LOG") == "", NoSigs: true, Debug: false,
		JetStream: true, StoreDir: fmt.Sprintf("%s/n%d", c.dir, i+1), JetStreamMaxStore: 1 << 40,
		Cluster: server.ClusterOpts{Name: "sluice-test", Host: "127.0.0.1", Port: c.ports[i]},
		Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	if !opts.NoLog {
		s.ConfigureLogger()
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatalf("server %s not ready", opts.ServerName)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	c.nodes[i] = s
}

// waitStored waits until SLUICE_CDC stored n more messages than it holds
// when called.
func waitStored(ctx context.Context, t *testing.T, js jetstream.JetStream, n uint64) {
	t.Helper()
	var from uint64
	var last string
	for {
		info, err := streamInfo(ctx, js)
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("last sequence %d", info.State.LastSeq)
			if from == 0 {
				from = info.State.LastSeq + 1
			} else if info.State.LastSeq >= from-1+n {
				return
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("%s stored less than %d messages more (%s)", protocol.StreamCDC, n, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// streamInfo asks for SLUICE_CDC's info, waiting at most 2s: a request
// lost in a failover would otherwise wait for ctx.
func streamInfo(ctx context.Context, js jetstream.JetStream) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, protocol.StreamCDC)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

// streamLeader waits until SLUICE_CDC has a leader and returns its name.
func streamLeader(ctx context.Context, t *testing.T, js jetstream.JetStream) string {
	t.Helper()
	for {
		info, err := streamInfo(ctx, js)
		if err == nil && info.Cluster != nil && info.Cluster.Leader != "" {
			return info.Cluster.Leader
		}
		if ctx.Err() != nil {
			t.Fatalf("no leader of %s: %v", protocol.StreamCDC, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readStream waits until SLUICE_CDC holds n events and returns them in
// stream order, and how many of its messages an atomic batch stored; it
// fails when the stream holds more.
func readStream(ctx context.Context, t *testing.T, js jetstream.JetStream, n int) ([]protocol.ChangeEvent, int) {
	t.Helper()
	var out []protocol.ChangeEvent
	var last uint64
	batched := 0
	for len(out) < n {
		if ctx.Err() != nil {
			t.Fatalf("stream holds %d events, want %d", len(out), n)
		}
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		var m *jetstream.RawStreamMsg
		s, err := js.Stream(cctx, protocol.StreamCDC)
		if err == nil {
			m, err = s.GetMsg(cctx, last+1)
		}
		ccancel()
		if err != nil { // not stored yet (jetstream.ErrMsgNotFound), or no leader now
			time.Sleep(50 * time.Millisecond)
			continue
		}
		evs, err := protocol.DecodeChangeEvents(m.Data)
		if err != nil {
			t.Fatalf("message %d: %v", m.Sequence, err)
		}
		out = append(out, evs...)
		last = m.Sequence
		if m.Header.Get("Nats-Batch-Id") != "" {
			batched++
		}
	}
	info, err := streamInfo(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != n || info.State.LastSeq != last {
		t.Fatalf("stream holds %d events or more (last sequence %d, read to %d), want %d", len(out), info.State.LastSeq, last, n)
	}
	return out, batched
}
