package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/protocol"
)

// percentiles are in milliseconds.
type percentiles struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
	// Negative counts events that arrived before the client saw its
	// COMMIT return (the walsender is woken by the WAL flush, before the
	// backend answers): they count as their measured (negative) latency.
	Negative int `json:"negative,omitempty"`
}

type latency struct {
	Definition  string  `json:"definition"`
	Rate        int     `json:"rate_per_sec"`
	AchievedTPS float64 `json:"achieved_tx_per_sec"`
	Seconds     float64 `json:"seconds"`
	Conns       int     `json:"connections"`
	Sent        int     `json:"transactions"`
	// Stored: COMMIT returned -> the event delivered by an ordered consumer
	// of SLUICE_CDC (stored by JetStream first, so after the ack JetStream
	// sends the Reader): the headline figure, an upper bound of
	// commit-to-ack.
	Stored        percentiles `json:"commit_to_stored_event"`
	StoredMissing int         `json:"stored_missing"`
	// Published: COMMIT returned -> the event at a core NATS subscriber of
	// the subject (the server routes it there as it hands it to the
	// stream, before storing it): a lower bound of commit-to-ack.
	Published        percentiles `json:"commit_to_published_event"`
	PublishedMissing int         `json:"published_missing"`
	// Commit is how long each INSERT (autocommit) took at the client.
	Commit percentiles `json:"commit_duration"`
	// ReaderLagMaxMs is the most time.Since(Status().OldestPending) seen
	// while the inserts ran (sampled every 50 ms): how far behind its
	// source the Reader fell.
	ReaderLagMaxMs float64 `json:"reader_lag_max_ms"`
	// BareDecode: COMMIT returned -> the change decoded by a bare pglogrepl
	// loop on its own slot, under the same load just after: what
	// PostgreSQL and the machine cost without Sluice or JetStream.
	BareDecode        percentiles `json:"commit_to_bare_decode,omitempty"`
	BareDecodeMissing int         `json:"bare_decode_missing,omitempty"`
	// Reader is the Reader's configuration.
	Reader map[string]any `json:"reader"`
}

// arrivals records when the events of the paced inserts arrive, by row id:
// ids base+i for i < len(at), and warm-up ids from base-warmupSpan that
// only signal warm.
type arrivals struct {
	base int64
	warm chan struct{}

	mu      sync.Mutex
	at      []time.Time
	arrived int
}

// warmupSpan separates the warm-up ids from the measured ones.
const warmupSpan = 100_000_000

func newArrivals(base int64, n int) *arrivals {
	return &arrivals{base: base, warm: make(chan struct{}, 1), at: make([]time.Time, n)}
}

func (a *arrivals) record(id int64, now time.Time) {
	if id >= a.base-warmupSpan && id < a.base {
		select {
		case a.warm <- struct{}{}:
		default:
		}
		return
	}
	if i := id - a.base; i >= 0 && i < int64(len(a.at)) {
		a.mu.Lock()
		if a.at[i].IsZero() {
			a.at[i] = now
			a.arrived++
		}
		a.mu.Unlock()
	}
}

// recordEvents records the change events of a SLUICE_CDC message (one or
// more; those before an undecodable one) by the id of their After rows.
func (a *arrivals) recordEvents(data []byte, now time.Time) {
	evs, _ := protocol.DecodeChangeEvents(data)
	for _, ev := range evs {
		if id, err := strconv.ParseInt(ev.After["id"].Text, 10, 64); err == nil {
			a.record(id, now)
		}
	}
}

func (a *arrivals) complete() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.arrived == len(a.at)
}

// since summarizes the arrivals after from[i], and returns how many never
// arrived.
func (a *arrivals) since(from []time.Time) (percentiles, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ds []time.Duration
	for i, t := range a.at {
		if !t.IsZero() {
			ds = append(ds, t.Sub(from[i]))
		}
	}
	return summarize(ds), len(a.at) - len(ds)
}

// latency measures, with the Reader streaming live and then with a bare
// pglogrepl loop, the time from the return of each single-row INSERT's
// COMMIT to the arrival of its event, while cfg.rate such transactions a
// second arrive for cfg.duration.
func (b *bench) latency(ctx context.Context) (*latency, error) {
	cfg := b.cfg
	n := int(float64(cfg.rate) * cfg.duration.Seconds())
	lat := &latency{
		Definition: "from the return of each single-row INSERT's COMMIT at the client to the arrival of its event " +
			"(keyed by the row id in After, every event of each message decoded) at an ordered consumer of SLUICE_CDC: JetStream stores an event before it " +
			"acks the Reader's publish and before it delivers it, so this bounds commit-to-JetStream-ack from above; " +
			"commit_to_published_event (a core NATS subscriber on the subject) bounds it from below; " +
			"commit_to_bare_decode is the same load decoded by a bare pglogrepl loop (no JetStream), measured after",
		Rate: cfg.rate, Conns: cfg.conns, Sent: n,
		Reader: map[string]any{"heartbeat": "default (10s)", "status_interval": "default (10s)", "max_in_flight": "default (10000)"},
	}
	if cfg.maxInFlight != 0 {
		lat.Reader["max_in_flight"] = cfg.maxInFlight
	}
	lat.Reader["message_events"] = fmt.Sprintf("default (%d)", pgcdc.DefaultMessageEvents)
	if cfg.messageEvents != 0 {
		lat.Reader["message_events"] = cfg.messageEvents
	}
	if err := b.latencySluice(ctx, lat, n); err != nil {
		return nil, err
	}
	if !cfg.skipLatencyBaseline {
		if err := b.latencyBare(ctx, lat, n); err != nil {
			return nil, err
		}
	}
	return lat, nil
}

// latencySluice runs a Reader on a new slot with two subscribers of its
// subject and measures the paced inserts.
func (b *bench) latencySluice(ctx context.Context, lat *latency, n int) error {
	cfg := b.cfg
	const base = 1_000_000_000
	subject := protocol.CDCSubject(pipelineLatency, cfg.schema, tableName)
	slot := cfg.slotPrefix() + "lat"
	b.slots = append(b.slots, slot)
	defer b.dropSlot(slot)

	stored, published := newArrivals(base, n), newArrivals(base, n)
	oc, err := b.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject}, DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return err
	}
	cc, err := oc.Consume(func(m jetstream.Msg) { stored.recordEvents(m.Data(), time.Now()) })
	if err != nil {
		return err
	}
	defer cc.Stop()
	subNC, err := nats.Connect(b.js.Conn().ConnectedUrl())
	if err != nil {
		return err
	}
	defer subNC.Close()
	sub, err := subNC.Subscribe(subject, func(m *nats.Msg) { published.recordEvents(m.Data, time.Now()) })
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()

	r, err := pgcdc.NewReader(pgcdc.Config{
		DSN: cfg.dsn, Slot: slot, Publication: cfg.publication(), Tables: []string{cfg.srcTable()}, Pipeline: pipelineLatency,
		MaxInFlight: cfg.maxInFlight, MessageEvents: cfg.messageEvents, NoBatches: cfg.noBatches,
	}, b.js, b.log)
	if err != nil {
		return err
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()

	fmt.Fprintf(b.stdout, "latency, Sluice Reader: waiting for it to stream ... ")
	began := time.Now()
	if err := b.warmUp(ctx, base, stored.warm, done); err != nil {
		return err
	}
	fmt.Fprintf(b.stdout, "%.1fs; %d single-row INSERT transactions at %d/s from %d connections ... ", time.Since(began).Seconds(), n, cfg.rate, cfg.conns)
	sampling := make(chan struct{})
	lagDone := make(chan time.Duration, 1)
	go func() {
		var most time.Duration
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-sampling:
				lagDone <- most
				return
			case <-tick.C:
			}
			if p := r.Status().OldestPending; !p.IsZero() {
				most = max(most, time.Since(p))
			}
		}
	}()
	committed, durs, secs, err := b.paced(ctx, base, n)
	close(sampling)
	lat.ReaderLagMaxMs = measure.Round(float64(<-lagDone)/float64(time.Millisecond), 1)
	if err != nil {
		return err
	}
	lat.Seconds = measure.Round(secs, 2)
	lat.AchievedTPS = measure.Round(float64(n)/secs, 1)
	drain(cfg.drain, func() bool { return stored.complete() && published.complete() })
	cc.Stop()
	stop()
	if err := <-done; err != nil {
		return fmt.Errorf("latency reader: %w", err)
	}
	fmt.Fprintf(b.stdout, "%.1fs\n", secs)
	lat.Stored, lat.StoredMissing = stored.since(committed)
	lat.Published, lat.PublishedMissing = published.since(committed)
	lat.Commit = summarize(durs)
	if lat.StoredMissing > 0 {
		return fmt.Errorf("latency: %d of the %d inserted rows have no event in SLUICE_CDC %s after the last commit", lat.StoredMissing, n, cfg.drain)
	}
	return nil
}

// latencyBare measures the paced inserts decoded by a bare pglogrepl loop
// on a new slot: the floor of the Reader's latency on this machine.
func (b *bench) latencyBare(ctx context.Context, lat *latency, n int) error {
	cfg := b.cfg
	const base = 2_000_000_000
	slot := cfg.slotPrefix() + "lat_bare"
	if _, err := b.createSlot(ctx, slot); err != nil {
		return err
	}
	defer b.dropSlot(slot)
	decoded := newArrivals(base, n)
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- b.bareStream(lctx, slot, decoded) }()

	fmt.Fprintf(b.stdout, "latency, bare pglogrepl loop: the same inserts ... ")
	if err := b.warmUp(ctx, base, decoded.warm, done); err != nil {
		return err
	}
	committed, _, secs, err := b.paced(ctx, base, n)
	if err != nil {
		return err
	}
	drain(cfg.drain, decoded.complete)
	stop()
	if err := <-done; err != nil {
		return err
	}
	fmt.Fprintf(b.stdout, "%.1fs\n", secs)
	lat.BareDecode, lat.BareDecodeMissing = decoded.since(committed)
	if lat.BareDecodeMissing > 0 {
		return fmt.Errorf("latency: the bare loop decoded no insert of %d of the %d inserted rows %s after the last commit", lat.BareDecodeMissing, n, cfg.drain)
	}
	return nil
}

// bareStream streams slot until ctx ends and records the arrival of each
// insert by its first column (the id).
func (b *bench) bareStream(ctx context.Context, slot string, a *arrivals) error {
	rc, err := b.startReplication(ctx, slot)
	if err != nil {
		return fmt.Errorf("bare latency loop: %w", err)
	}
	defer rc.Close(context.Background())
	const statusInterval = 10 * time.Second
	var pos pglogrepl.LSN
	nextStatus := time.Now().Add(statusInterval)
	for {
		if !time.Now().Before(nextStatus) {
			if err := pglogrepl.SendStandbyStatusUpdate(ctx, rc, pglogrepl.StandbyStatusUpdate{WALWritePosition: pos}); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("bare latency loop: standby status update: %w", err)
			}
			nextStatus = time.Now().Add(statusInterval)
		}
		rctx, rcancel := context.WithDeadline(ctx, nextStatus)
		raw, err := rc.ReceiveMessage(rctx)
		rcancel()
		now := time.Now()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("bare latency loop: receive: %w", err)
		}
		m, ok := raw.(*pgproto3.CopyData)
		if !ok || len(m.Data) == 0 {
			if e, ok := raw.(*pgproto3.ErrorResponse); ok {
				return fmt.Errorf("bare latency loop: %w", pgconn.ErrorResponseToPgError(e))
			}
			continue
		}
		switch m.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
			if err != nil {
				return err
			}
			if ka.ReplyRequested {
				nextStatus = time.Time{}
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(m.Data[1:])
			if err != nil {
				return err
			}
			pos = xld.WALStart + pglogrepl.LSN(len(xld.WALData))
			msg, err := pglogrepl.Parse(xld.WALData)
			if err != nil {
				return fmt.Errorf("bare latency loop: parse at %s: %w", xld.WALStart, err)
			}
			if ins, ok := msg.(*pglogrepl.InsertMessage); ok && ins.Tuple != nil && len(ins.Tuple.Columns) > 0 {
				if id, err := strconv.ParseInt(string(ins.Tuple.Columns[0].Data), 10, 64); err == nil {
					a.record(id, now)
				}
			}
		}
	}
}

// warmUp inserts a row of a warm-up id below base every 200 ms until warm
// delivers (the decoder streams), stopped delivers, or a minute passed.
func (b *bench) warmUp(ctx context.Context, base int64, warm <-chan struct{}, stopped <-chan error) error {
	began := time.Now()
	for k := int64(0); ; k++ {
		if _, err := b.conn.Exec(ctx, "INSERT INTO "+b.cfg.srcTable()+" VALUES ($1, 'warm-up', 0, now(), '{}', 0)", base-warmupSpan+k); err != nil {
			return err
		}
		select {
		case <-warm:
			return nil
		case err := <-stopped:
			return fmt.Errorf("latency: the decoder stopped: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
			if time.Since(began) > time.Minute {
				return errors.New("latency: no event after 1 min")
			}
		}
	}
}

// paced issues n single-row INSERT transactions (autocommit) of the ids
// base+i at cfg.rate from cfg.conns connections, and returns when each
// COMMIT returned, how long each took, and the wall time of the whole.
func (b *bench) paced(ctx context.Context, base int64, n int) ([]time.Time, []time.Duration, float64, error) {
	cfg := b.cfg
	issued := make([]time.Time, n)
	committed := make([]time.Time, n)
	jobs := make(chan int, n)
	g, gctx := errgroup.WithContext(ctx)
	for range cfg.conns {
		c, err := pgx.Connect(ctx, cfg.dsn)
		if err != nil {
			return nil, nil, 0, err
		}
		defer c.Close(context.Background())
		// Prepared once, off the clock.
		if _, err := c.Prepare(ctx, "ins", "INSERT INTO "+b.cfg.srcTable()+" VALUES ($1, 'latency', 1.5, now(), '{\"k\": 1}', 1)"); err != nil {
			return nil, nil, 0, err
		}
		g.Go(func() error {
			for i := range jobs {
				issued[i] = time.Now()
				if _, err := c.Exec(gctx, "ins", base+int64(i)); err != nil {
					return fmt.Errorf("latency insert: %w", err)
				}
				committed[i] = time.Now()
			}
			return nil
		})
	}
	// Paced on a schedule (the i-th insert is due at start + i/rate), so
	// that a late wake-up is caught up instead of dropped as a ticker's
	// tick would be.
	period := time.Second / time.Duration(cfg.rate)
	start := time.Now()
	g.Go(func() error {
		defer close(jobs)
		for i := range n {
			if d := time.Until(start.Add(time.Duration(i) * period)); d > 0 {
				select {
				case <-time.After(d):
				case <-gctx.Done():
					return nil
				}
			}
			jobs <- i
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, nil, 0, err
	}
	secs := time.Since(start).Seconds()
	durs := make([]time.Duration, n)
	for i := range n {
		durs[i] = committed[i].Sub(issued[i])
	}
	return committed, durs, secs, nil
}

// drain waits up to d for done to hold.
func drain(d time.Duration, done func() bool) {
	for deadline := time.Now().Add(d); time.Now().Before(deadline) && !done(); {
		time.Sleep(20 * time.Millisecond)
	}
}

func summarize(ds []time.Duration) percentiles {
	if len(ds) == 0 {
		return percentiles{}
	}
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return measure.Round(float64(d)/1e6, 2) }
	// nearest rank
	at := func(p float64) time.Duration {
		i := int(p*float64(len(ds))+0.999999) - 1
		return ds[max(0, min(i, len(ds)-1))]
	}
	var sum time.Duration
	neg := 0
	for _, d := range ds {
		sum += d
		if d < 0 {
			neg++
		}
	}
	return percentiles{Count: len(ds), P50: ms(at(0.50)), P90: ms(at(0.90)), P99: ms(at(0.99)),
		Max: ms(ds[len(ds)-1]), Mean: ms(sum / time.Duration(len(ds))), Negative: neg}
}
