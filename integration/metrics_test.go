package integration

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/telemetry"
)

// newMetrics returns new metrics served over HTTP on loopback, and their
// URL; nil and "" unless the cluster was made with metrics.
func (c *cluster) newMetrics() (*telemetry.Metrics, string) {
	if !c.cfg.metrics {
		return nil, ""
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	m := telemetry.NewMetrics()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := telemetry.ServeMetrics(ctx, ln, m, c.log); err != nil {
			c.t.Error(err)
		}
	}()
	c.t.Cleanup(func() { cancel(); <-done })
	return m, "http://" + ln.Addr().String() + "/metrics"
}

// series are the samples of one scrape, by series: the metric's name
// and its labels as name="value" pairs sorted by name.
type series map[string]float64

// seriesKey is the key of a series: labels as name, value pairs.
func seriesKey(name string, labels ...string) string {
	var kv []string
	for i := 0; i+1 < len(labels); i += 2 {
		kv = append(kv, fmt.Sprintf("%s=%q", labels[i], labels[i+1]))
	}
	slices.Sort(kv)
	return name + "{" + strings.Join(kv, ",") + "}"
}

// scrape fetches url over HTTP and parses the text exposition format
// (label values here hold no comma or escaped quote).
func scrape(t *testing.T, url string) series {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s", url, resp.Status)
	}
	out := series{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("scrape %s: line %q: %v", url, line, err)
		}
		name, labels, _ := strings.Cut(line[:i], "{")
		var kv []string
		for _, p := range strings.Split(strings.TrimSuffix(labels, "}"), ",") {
			if p != "" {
				kv = append(kv, p)
			}
		}
		slices.Sort(kv)
		out[name+"{"+strings.Join(kv, ",")+"}"] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// get returns the sample of name with labels given as name, value pairs,
// and whether it is there.
func (s series) get(name string, labels ...string) (float64, bool) {
	v, ok := s[seriesKey(name, labels...)]
	return v, ok
}

func (s series) value(name string, labels ...string) float64 {
	v, _ := s.get(name, labels...)
	return v
}

// eventuallyMetric scrapes url until the sample equals want.
func eventuallyMetric(t *testing.T, url string, want float64, name string, labels ...string) {
	t.Helper()
	var got float64
	var ok bool
	if !waitForOK(30*time.Second, func() bool {
		got, ok = scrape(t, url).get(name, labels...)
		return ok && got == want
	}) {
		t.Fatalf("%s%v at %s: %v (present %v), want %v", name, labels, url, got, ok, want)
	}
}

// The metrics of a cluster that loaded PostgreSQL tables, streamed a
// table's changes into a replica, dead-lettered a poison trigger and lost
// its leader match what happened, scraped over HTTP; the spans of the
// CDC batches link to the snapshot run, and a run started by after: to
// its upstream run.
func TestMetricsAndLinks(t *testing.T) {
	t.Parallel()
	holdSlot(t)
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	slot := cdcSlot(t, dsn, schema, "_met")
	const srcRows, itemRows, streamed = 6000, 300, 100
	for _, q := range []string{
		fmt.Sprintf(`CREATE TABLE %s.src (id bigint PRIMARY KEY, v text)`, schema),
		fmt.Sprintf(`INSERT INTO %s.src SELECT g, 'v' || g FROM generate_series(1, %d) g`, schema, srcRows),
		fmt.Sprintf(`CREATE TABLE %s.items (id bigint PRIMARY KEY, v text)`, schema),
		fmt.Sprintf(`INSERT INTO %s.items SELECT g, 'i' || g FROM generate_series(1, %d) g`, schema, itemRows),
		fmt.Sprintf(`CREATE SCHEMA %s_r`, schema),
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	c := newCluster(t, clusterConfig{workers: 2, metrics: true, tracer: tp})

	// Loads: two runs of pgload, each starting a run of pgdown (after:).
	load := func(name, extra string) string {
		return fmt.Sprintf("name: %s\npattern: full_load\nsource: {kind: postgres, dsn: %q, table: %s.src}\nsink: {kind: files, path: %s, format: csv}\npartitioning: {target_rows: 1500}\n%s",
			name, dsn, schema, t.TempDir(), extra)
	}
	for _, y := range []string{load("pgload", ""), load("pgdown", "trigger: {after: pgload}\n")} {
		if err := c.tryApply(y); err != nil {
			t.Fatal(err)
		}
	}
	var upstream []protocol.RunStatus
	tasks := 0
	for range 2 {
		st := c.wait(c.run("pgload").RunID)
		if st.State != protocol.RunCommitted || st.Rows != srcRows {
			t.Fatalf("run %s: %s, %d rows (%s)", st.RunID, st.State, st.Rows, st.Error)
		}
		upstream = append(upstream, st)
		tasks += st.Tasks
	}
	downs := c.runsOf("pgdown", 2)
	for _, r := range downs {
		if st := c.wait(r.RunID); st.State != protocol.RunCommitted {
			t.Fatalf("downstream run %s: %s (%s)", st.RunID, st.State, st.Error)
		}
	}

	// A poison trigger: its pipeline does not exist.
	if _, err := coordinator.PublishTrigger(c.ctx(), c.js, "nosuch", protocol.Trigger{}, "poison-1"); err != nil {
		t.Fatal(err)
	}
	expectMessages(t, c.js, protocol.StreamDLQ, protocol.DLQSubject("trigger", "nosuch"), 1)

	// CDC: the snapshot, then changes streamed into a replica.
	if err := c.tryApply(fmt.Sprintf("name: items\npattern: cdc\nsource: {kind: postgres, dsn: %q, tables: [%s.items]}\ncdc: {slot: %s, publication: %s, lease: 2s}\n",
		dsn, schema, slot, slot)); err != nil {
		t.Fatal(err)
	}
	snap := c.runsOf("items", 1)[0]
	if err := c.tryApply(fmt.Sprintf("name: items-replica\npattern: cdc_apply\nsource: {kind: cdc, pipeline: items}\nsink: {kind: postgres, dsn: %q, schema: %s_r, create_tables: true}\ncdc: {lease: 2s}\n",
		dsn, schema)); err != nil {
		t.Fatal(err)
	}
	replicaRows := func() int {
		var n int
		_ = conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s_r.items`, schema)).Scan(&n)
		return n
	}
	waitFor(t, 60*time.Second, "the snapshot in the replica", func() bool { return replicaRows() == itemRows })
	if _, err := conn.Exec(ctx, fmt.Sprintf(`INSERT INTO %s.items SELECT g, 'late' FROM generate_series(%d, %d) g`, schema, itemRows+1, itemRows+streamed)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the streamed rows in the replica", func() bool { return replicaRows() == itemRows+streamed })

	// The coordinators' metrics: the run counters summed over the
	// coordinators (each run is counted by the leader that announced it,
	// and the test's load may move the leadership), the cluster gauges on
	// the leader.
	sum := func(name string, labels ...string) func() float64 {
		return func() float64 {
			v := 0.0
			for _, n := range c.coords {
				v += scrape(t, n.metricsURL).value(name, labels...)
			}
			return v
		}
	}
	onLeader := func(name string, labels ...string) func() float64 {
		return func() float64 { return scrape(t, c.leader().metricsURL).value(name, labels...) }
	}
	expect := func(what string, want float64, got func() float64) {
		t.Helper()
		var v float64
		if !waitForOK(30*time.Second, func() bool { v = got(); return v == want }) {
			t.Fatalf("%s: %v, want %v", what, v, want)
		}
	}
	for _, p := range []string{"pgload", "pgdown"} {
		expect(p+" runs committed", 2, sum("sluice_runs_total", "pipeline", p, "outcome", "committed"))
		expect(p+" rows committed", 2*srcRows, sum("sluice_run_rows_total", "pipeline", p))
		expect(p+" runs failed", 0, sum("sluice_runs_total", "pipeline", p, "outcome", "failed"))
	}
	expect("cdc snapshot runs committed", 1, sum("sluice_runs_total", "pipeline", "items", "outcome", "committed"))
	expect("pgload tasks ended", float64(tasks), sum("sluice_run_task_attempts_count", "pipeline", "pgload"))
	expect("pgload tasks done at the first attempt", float64(tasks), sum("sluice_run_task_attempts_bucket", "pipeline", "pgload", "le", "1"))
	expect("dead letters", 1, onLeader("sluice_stream_messages", "stream", protocol.StreamDLQ))
	expect("tasks queued", 0, onLeader("sluice_stream_messages", "stream", protocol.StreamTasks))
	expect("live workers", 2, onLeader("sluice_workers"))
	expect("their slots", 4, onLeader("sluice_cluster_slots"))
	expect("leaders", 1, sum("sluice_raft_leader"))
	if v := sum("sluice_raft_commit_seconds_count", "command", "task result")(); v < float64(2*tasks) {
		t.Fatalf("%v task results committed through Raft, want at least %d", v, 2*tasks)
	}
	lead := c.leader()

	// The workers' metrics.
	wurl := c.workerMetricsURL
	eventuallyMetric(t, wurl, float64(tasks), "sluice_task_attempts_total", "pipeline", "pgload", "outcome", "succeeded")
	eventuallyMetric(t, wurl, 2*srcRows, "sluice_task_rows_total", "pipeline", "pgload")
	eventuallyMetric(t, wurl, 2, "sluice_worker_slots", "worker", "w0")
	eventuallyMetric(t, wurl, 0, "sluice_worker_slots_busy", "worker", "w1")
	eventuallyMetric(t, wurl, streamed, "sluice_cdc_events_total", "pipeline", "items", "slot", slot)
	eventuallyMetric(t, wurl, 0, "sluice_cdc_apply_pending_messages", "pipeline", "items-replica")
	ws := scrape(t, wurl)
	if _, ok := ws.get("sluice_cdc_lag_bytes", "pipeline", "items", "slot", slot); !ok {
		t.Fatal("no sluice_cdc_lag_bytes of the slot")
	}
	if _, ok := ws.get("sluice_cdc_apply_lag_seconds", "pipeline", "items-replica"); !ok {
		t.Fatal("no sluice_cdc_apply_lag_seconds of the replica")
	}
	// Applied: the snapshot's rows, its snapshot_done event, the
	// streamed rows.
	// The worker reports them with its lease renewals: the count may trail
	// the replica by one renewal.
	const applied = itemRows + 1 + streamed
	eventuallyMetric(t, wurl, applied, "sluice_cdc_applied_events_total", "pipeline", "items-replica")
	for _, o := range []string{"retried", "failed"} {
		if v, ok := ws.get("sluice_task_attempts_total", "pipeline", "pgload", "outcome", o); ok {
			t.Fatalf("%v pgload task attempts %s", v, o)
		}
	}
	if n := ws.value("sluice_task_duration_seconds_count", "pipeline", "pgload", "outcome", "succeeded"); n != float64(tasks) {
		t.Fatalf("%v task durations observed, want %d", n, tasks)
	}

	// Spans: a run started by after: links to its upstream run's trace;
	// every CDC batch to the snapshot run's.
	ups := map[string]bool{}
	for _, u := range upstream {
		ups[u.TraceID] = true
	}
	linked := map[string]bool{}
	batchEvents := map[string]int64{}
	for _, s := range rec.Ended() {
		attrs := attrMap(s.Attributes())
		switch s.Name() {
		case telemetry.SpanRun:
			if attrs[telemetry.AttrPipeline] != "pgdown" {
				continue
			}
			for _, l := range s.Links() {
				if id := l.SpanContext.TraceID().String(); ups[id] && attrMap(l.Attributes)[telemetry.AttrLink] == telemetry.LinkUpstream {
					linked[id] = true
				}
			}
		case telemetry.SpanCDCBatch, telemetry.SpanApplyBatch:
			if len(s.Links()) != 1 || s.Links()[0].SpanContext.TraceID().String() != snap.TraceID {
				t.Fatalf("%s span of %s links %v, want the snapshot run's trace %s", s.Name(), attrs[telemetry.AttrPipeline], s.Links(), snap.TraceID)
			}
			n, _ := strconv.ParseInt(attrs[telemetry.AttrEvents], 10, 64)
			batchEvents[s.Name()] += n
		}
	}
	if len(linked) != 2 {
		t.Fatalf("downstream runs linked to %d upstream traces, want 2 (%v)", len(linked), ups)
	}
	if batchEvents[telemetry.SpanCDCBatch] != streamed || batchEvents[telemetry.SpanApplyBatch] != int64(applied) {
		t.Fatalf("events in batch spans %v, want %d published and %v applied", batchEvents, streamed, applied)
	}

	// The leader stops: a follower sees a new leader.
	var follower *node
	for _, n := range c.coords {
		if n != lead {
			follower = n
			break
		}
	}
	before := scrape(t, follower.metricsURL).value("sluice_raft_leader_changes_total")
	if before < 1 {
		t.Fatalf("follower saw %v leader changes, want the first election", before)
	}
	lead.c.Kill()
	lead.killed = true
	next := c.leader()
	waitFor(t, 30*time.Second, "a leader change on the follower", func() bool {
		return scrape(t, follower.metricsURL).value("sluice_raft_leader_changes_total") >= before+1
	})
	eventuallyMetric(t, next.metricsURL, 1, "sluice_raft_leader")
	for _, n := range c.coords {
		if n != next && !n.killed {
			eventuallyMetric(t, n.metricsURL, 0, "sluice_raft_leader")
		}
	}
}

func attrMap(kvs []attribute.KeyValue) map[attribute.Key]string {
	m := map[attribute.Key]string{}
	for _, kv := range kvs {
		m[kv.Key] = kv.Value.Emit()
	}
	return m
}
