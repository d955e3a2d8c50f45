package main

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/protocol"
)

// publishMode is what a bare loop publishes to SLUICE_CDC.
type publishMode int

const (
	publishNone   publishMode = iota // (a): nothing
	publishPacked                    // (c): the raw changes, packed as the Reader packs its events
	publishEach                      // (d): the raw changes, one message each
)

// startReplication opens a replication connection and starts streaming
// slot with pgoutput (protocol version 1, the benchmark's publication), as
// the bare loops read it.
func (b *bench) startReplication(ctx context.Context, slot string) (*pgconn.PgConn, error) {
	pcfg, err := pgconn.ParseConfig(b.cfg.dsn)
	if err != nil {
		return nil, err
	}
	pcfg.RuntimeParams["replication"] = "database"
	rc, err := pgconn.ConnectConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("replication connect: %w", err)
	}
	err = pglogrepl.StartReplication(ctx, rc, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + b.cfg.publication() + "'", "messages 'true'"},
	})
	if err != nil {
		rc.Close(context.Background())
		return nil, fmt.Errorf("start replication on %s: %w", slot, err)
	}
	return rc, nil
}

// bareDecode streams slot with a minimal pglogrepl loop until it has seen
// every change of the workload, and returns the time to the last change.
// It confirms the received position on each standby status update (every
// 10 s, as the Reader's default, and when the server asks). With a publish
// mode, it also publishes the raw pgoutput message of each change to
// SLUICE_CDC (see rawPacker) and stops the clock when the stream holds
// them all, then reads them back (verifyRaw).
func (b *bench) bareDecode(ctx context.Context, slot string, wl *workload, mode publishMode) (decodeResult, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.timeout)
	defer cancel()
	var pack *rawPacker
	var counter *eventCounter
	var err error
	if mode != publishNone {
		if err := b.stream.Purge(ctx); err != nil {
			return decodeResult{}, err
		}
		limit := b.cfg.msgEvents()
		if mode == publishEach {
			limit = 1
		} else if counter, err = b.countEvents(ctx, wl.Changes); err != nil {
			return decodeResult{}, err
		}
		defer counter.stop()
		pack = &rawPacker{js: b.js, slot: slot, limit: limit, subjects: map[uint32]string{}, expect: []string{protocol.StreamCDC}}
	}
	runtime.GC()
	cpu0, srv0 := measure.SelfCPU(), measure.ServerCPU()
	start := time.Now()
	rc, err := b.startReplication(ctx, slot)
	if err != nil {
		return decodeResult{}, fmt.Errorf("bare loop: %w", err)
	}
	defer rc.Close(context.Background())
	const statusInterval = 10 * time.Second
	var pos pglogrepl.LSN
	var ins, upd, del int64
	var res decodeResult
	nextStatus := time.Now().Add(statusInterval)
	for {
		if !time.Now().Before(nextStatus) {
			if err := pglogrepl.SendStandbyStatusUpdate(ctx, rc, pglogrepl.StandbyStatusUpdate{WALWritePosition: pos}); err != nil {
				return decodeResult{}, fmt.Errorf("bare loop: standby status update: %w", err)
			}
			nextStatus = time.Now().Add(statusInterval)
		}
		rctx, rcancel := context.WithDeadline(ctx, nextStatus)
		raw, err := rc.ReceiveMessage(rctx)
		rcancel()
		if err != nil {
			if ctx.Err() == nil && pgconn.Timeout(err) {
				continue
			}
			return decodeResult{}, fmt.Errorf("bare loop: receive (%d of %d changes): %w", ins+upd+del, wl.Changes, err)
		}
		m, ok := raw.(*pgproto3.CopyData)
		if !ok {
			if e, ok := raw.(*pgproto3.ErrorResponse); ok {
				return decodeResult{}, fmt.Errorf("bare loop: %w", pgconn.ErrorResponseToPgError(e))
			}
			return decodeResult{}, fmt.Errorf("bare loop: unexpected message %T", raw)
		}
		if len(m.Data) == 0 {
			continue
		}
		switch m.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
			if err != nil {
				return decodeResult{}, err
			}
			if ka.ReplyRequested {
				nextStatus = time.Time{}
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(m.Data[1:])
			if err != nil {
				return decodeResult{}, err
			}
			msg, err := pglogrepl.Parse(xld.WALData)
			if err != nil {
				return decodeResult{}, fmt.Errorf("bare loop: parse at %s: %w", xld.WALStart, err)
			}
			pos = xld.WALStart + pglogrepl.LSN(len(xld.WALData))
			var rel uint32
			switch msg := msg.(type) {
			case *pglogrepl.InsertMessage:
				ins, rel = ins+1, msg.RelationID
			case *pglogrepl.UpdateMessage:
				upd, rel = upd+1, msg.RelationID
			case *pglogrepl.DeleteMessage:
				del, rel = del+1, msg.RelationID
			case *pglogrepl.RelationMessage:
				if pack != nil {
					pack.subjects[msg.RelationID] = protocol.CDCSubject(pipelineThroughput+"-raw", msg.Namespace, msg.RelationName)
				}
				continue
			case *pglogrepl.BeginMessage:
				if pack != nil {
					pack.commitLSN, pack.index = msg.FinalLSN.String(), 0
				}
				continue
			case *pglogrepl.CommitMessage:
				if pack != nil {
					if err := pack.flush(); err != nil {
						return decodeResult{}, err
					}
				}
				if ins+upd+del < wl.Changes {
					continue
				}
				if ins != wl.Inserts || upd != wl.Updates || del != wl.Deletes {
					return decodeResult{}, fmt.Errorf("bare loop: %d inserts, %d updates, %d deletes; want %d, %d, %d",
						ins, upd, del, wl.Inserts, wl.Updates, wl.Deletes)
				}
				res.endLSN = msg.TransactionEndLSN
				switch mode {
				case publishNone:
					return res, nil
				case publishPacked:
					at, err := counter.wait(ctx, nil)
					if err != nil {
						return decodeResult{}, fmt.Errorf("bare loop: %w", err)
					}
					res.secs = at.Sub(start).Seconds()
				case publishEach:
					if err := b.waitStored(ctx, wl.Changes, nil); err != nil {
						return decodeResult{}, fmt.Errorf("bare loop: %w", err)
					}
					res.secs = time.Since(start).Seconds()
				}
				res.cpu = cpuUse{client: measure.SelfCPU() - cpu0, server: measure.ServerCPU() - srv0}
				counter.stop()
				// Not return res, b.verifyRaw(..., &res): the order of the
				// two is unspecified.
				err = b.verifyRaw(ctx, wl, slot, pack.limit, &res)
				return res, err
			default:
				continue
			}
			// A change.
			if pack != nil {
				if err := pack.add(rel, xld.WALData); err != nil {
					return decodeResult{}, err
				}
			}
			if mode == publishNone && ins+upd+del == wl.Changes {
				res.secs = time.Since(start).Seconds()
				res.cpu = cpuUse{client: measure.SelfCPU() - cpu0, server: measure.ServerCPU() - srv0}
			}
		}
	}
}
