package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/pprof"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/protocol"
)

// sluiceDecode runs a Reader on slot until SLUICE_CDC holds every event of
// the workload and its status confirms endLSN, then stops it and checks
// the stream. With profile set, it records a CPU profile of the run into
// it.
func (b *bench) sluiceDecode(ctx context.Context, slot string, wl *workload, endLSN pglogrepl.LSN, profile io.Writer) (decodeResult, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.timeout)
	defer cancel()
	if err := b.stream.Purge(ctx); err != nil {
		return decodeResult{}, err
	}
	r, err := pgcdc.NewReader(pgcdc.Config{
		DSN: b.cfg.dsn, Slot: slot, Publication: b.cfg.publication(), Tables: []string{b.cfg.srcTable()}, Pipeline: pipelineThroughput,
		MaxInFlight: b.cfg.maxInFlight, MessageEvents: b.cfg.messageEvents, NoBatches: b.cfg.noBatches,
	}, b.js, b.log)
	if err != nil {
		return decodeResult{}, err
	}
	counter, err := b.countEvents(ctx, wl.Changes)
	if err != nil {
		return decodeResult{}, err
	}
	defer counter.stop()
	if profile != nil {
		if err := pprof.StartCPUProfile(profile); err != nil {
			return decodeResult{}, err
		}
		defer pprof.StopCPUProfile()
	}
	runtime.GC()
	cpu0, srv0 := measure.SelfCPU(), measure.ServerCPU()
	start := time.Now()
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()

	at, err := counter.wait(ctx, done)
	if err != nil {
		return decodeResult{}, fmt.Errorf("reader on %s: %w", slot, err)
	}
	res := decodeResult{secs: at.Sub(start).Seconds(), cpu: cpuUse{client: measure.SelfCPU() - cpu0, server: measure.ServerCPU() - srv0}}
	counter.stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for endLSN != 0 {
		if lsn, err := pglogrepl.ParseLSN(r.Status().ConfirmedLSN); err == nil && lsn >= endLSN {
			res.confirmed = time.Since(start).Seconds()
			break
		}
		select {
		case err := <-done:
			return decodeResult{}, fmt.Errorf("reader on %s stopped early: %v", slot, err)
		case <-ctx.Done():
			return decodeResult{}, fmt.Errorf("reader on %s: %w", slot, ctx.Err())
		case <-tick.C:
		}
	}
	stop()
	if err := <-done; err != nil {
		return decodeResult{}, fmt.Errorf("reader on %s: %w", slot, err)
	}
	err = b.verifyEvents(ctx, wl, slot, &res)
	return res, err
}

// verifyEvents reads back what a Reader published to SLUICE_CDC, decodes
// every event, and checks it holds every change of the workload exactly
// once, packed as the Reader packs, the last one the last change; it
// records the stream's figures in res.
func (b *bench) verifyEvents(ctx context.Context, wl *workload, slot string, res *decodeResult) error {
	defer func(began time.Time) { res.checkSecs = time.Since(began).Seconds() }(time.Now())
	var t tally
	var evs []protocol.ChangeEvent
	var last protocol.ChangeEvent
	state, err := b.readStream(ctx, func(m jetstream.Msg) error {
		id := m.Headers().Get(jetstream.MsgIDHeader)
		n, err := eventsHeader(m)
		if err != nil {
			return err
		}
		data := m.Data()
		if c := protocol.CountChangeEvents(data); c != n {
			return fmt.Errorf("verify: message %s holds %d events, its %s header says %d", id, c, protocol.HeaderEvents, n)
		}
		if evs, err = protocol.AppendChangeEvents(evs[:0], data); err != nil {
			return fmt.Errorf("verify: message %s: %w", id, err)
		}
		if limit := b.cfg.msgEvents(); n > limit || (n > 1 && len(data) > pgcdc.MaxMessageBytes) {
			return fmt.Errorf("verify: message %s holds %d events in %d bytes, over %d or %d", id, n, len(data), limit, pgcdc.MaxMessageBytes)
		}
		first := evs[0]
		if want := protocol.CDCMsgID(slot, first.CommitLSN, first.Index); id != want {
			return fmt.Errorf("verify: message %s, want the Nats-Msg-Id of its first event, %s", id, want)
		}
		if want := protocol.CDCSubject(pipelineThroughput, first.Schema, first.Table); m.Subject() != want {
			return fmt.Errorf("verify: message %s on %s, want %s", id, m.Subject(), want)
		}
		for k, ev := range evs {
			if ev.CommitLSN != first.CommitLSN || ev.Index != first.Index+k || ev.Schema != first.Schema || ev.Table != first.Table {
				return fmt.Errorf("verify: message %s: event %d is index %d of %s on %s.%s, want index %d of %s on %s.%s", id, k+1,
					ev.Index, ev.CommitLSN, ev.Schema, ev.Table, first.Index+k, first.CommitLSN, first.Schema, first.Table)
			}
			switch ev.Op {
			case protocol.OpInsert:
				t.ins++
			case protocol.OpUpdate:
				t.upd++
			case protocol.OpDelete:
				t.del++
			default:
				return fmt.Errorf("verify: message %s: event %d is a %s", id, k+1, ev.Op)
			}
		}
		t.add(first.CommitLSN, first.Index, n)
		last = evs[n-1]
		return nil
	})
	if err != nil {
		return err
	}
	if err := t.check(wl, state, res); err != nil {
		return err
	}
	// The last change: the last delete, else the last update, else the
	// last insert.
	op, row, want := protocol.OpInsert, last.After, wl.Inserts
	if wl.Deletes > 0 {
		op, row, want = protocol.OpDelete, last.Before, wl.Deletes
	} else if wl.Updates > 0 {
		op, row, want = protocol.OpUpdate, last.After, wl.Updates
	}
	id := row["id"]
	if last.Op != op || id != protocol.Text(strconv.FormatInt(want, 10)) {
		return fmt.Errorf("verify: last event is the %s of id %v, want the %s of id %d", last.Op, id.Text, op, want)
	}
	return nil
}
