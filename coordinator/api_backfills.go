package coordinator

import (
	"cmp"
	"context"
	"slices"

	"github.com/sluicehq/sluice/protocol"
)

// apiBackfills lists the backfills, newest first, without their windows.
func (t *leaderTerm) apiBackfills(data []byte) (any, error) {
	var req protocol.BackfillsRequest
	if err := decodeRequest(data, &req); err != nil {
		return nil, err
	}
	if req.Limit <= 0 || req.Limit > protocol.MaxBackfills {
		req.Limit = protocol.MaxBackfills
	}
	if req.Pipeline != "" {
		if _, ok := t.c.fsm.pipeline(req.Pipeline); !ok {
			return nil, refuse(refusedNotFound, "pipeline %q not found", req.Pipeline)
		}
	}
	out := t.c.fsm.backfillSummaries(req.Pipeline)
	return protocol.BackfillsReply{Backfills: out[:min(len(out), req.Limit)]}, nil
}

// backfillSummaries returns the status of every backfill (of pipeline when
// it is set) without its windows, newest first. The windows are counted
// in place, never copied: a backfill may have many.
func (f *fsm) backfillSummaries(pipeline string) []protocol.BackfillStatus {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := []protocol.BackfillStatus{}
	seq := map[string]int64{}
	for _, b := range f.st.Backfills {
		if pipeline != "" && b.Pipeline != pipeline {
			continue
		}
		s := backfillStatus(b)
		s.Windows = nil
		out = append(out, s)
		seq[b.ID] = b.Seq
	}
	slices.SortFunc(out, func(a, b protocol.BackfillStatus) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return cmp.Compare(seq[b.ID], seq[a.ID])
	})
	return out
}

// Backfills lists the backfills, newest first (of one pipeline when
// req.Pipeline is set), without their windows.
func (c *Client) Backfills(ctx context.Context, req protocol.BackfillsRequest) (protocol.BackfillsReply, error) {
	var reply protocol.BackfillsReply
	err := c.call(ctx, protocol.VerbBackfills, req, &reply, c.attempt)
	return reply, err
}
