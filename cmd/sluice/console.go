package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/console"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/protocol"
)

// consolePrefix is where the HTTP API serves the web console.
const consolePrefix = "/console/"

// Lag history: the node serving the HTTP API samples the CDC streams' lag
// every lagEvery and keeps lagKeep samples per stream (an hour).
const (
	lagEvery = 10 * time.Second
	lagKeep  = 360
)

// routeConsole adds the web console and the endpoints only it needs to mux:
//
//	GET    /                        redirects to /console/
//	GET    /console/                the console's page and assets (no data: open without the token)
//	GET    /v1/backfills[?pipeline=NAME&limit=N]  the backfills, newest first, without their windows
//	GET    /v1/cdc/history          the lag samples this node kept per stream, oldest first
//	GET    /v1/dlq[?limit=N]        the dead letters, oldest first (default 100), and how many there are
//	GET    /v1/dlq/{seq}            one dead letter
//	POST   /v1/dlq/{seq}/replay     replays it: a trigger published again, a dead task as a new run
//	DELETE /v1/dlq/{seq}            purges it
func (a *api) routeConsole(mux *http.ServeMux) {
	mux.Handle("GET "+consolePrefix, console.Handler(consolePrefix))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, consolePrefix, http.StatusFound)
	})
	mux.HandleFunc("GET /v1/backfills", func(w http.ResponseWriter, r *http.Request) {
		limit, ok := queryLimit(w, r, 0)
		if !ok {
			return
		}
		res, err := a.c.Backfills(r.Context(), protocol.BackfillsRequest{Pipeline: r.URL.Query().Get("pipeline"), Limit: limit})
		a.reply(w, res, err)
	})
	mux.HandleFunc("GET /v1/cdc/history", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.lag.snapshot())
	})
	mux.HandleFunc("GET /v1/dlq", func(w http.ResponseWriter, r *http.Request) {
		limit, ok := queryLimit(w, r, 100)
		if !ok {
			return
		}
		res, err := listDeadLetters(r.Context(), a.js, limit)
		a.reply(w, res, err)
	})
	mux.HandleFunc("GET /v1/dlq/{seq}", func(w http.ResponseWriter, r *http.Request) {
		seq, ok := pathSeq(w, r)
		if !ok {
			return
		}
		d, err := a.deadLetter(r.Context(), seq)
		a.reply(w, viewDeadLetter(d), err)
	})
	mux.HandleFunc("POST /v1/dlq/{seq}/replay", func(w http.ResponseWriter, r *http.Request) {
		seq, ok := pathSeq(w, r)
		if !ok {
			return
		}
		if _, err := a.deadLetter(r.Context(), seq); err != nil {
			a.reply(w, nil, err)
			return
		}
		rep, err := coordinator.ReplayDLQ(r.Context(), a.js, a.c, seq)
		a.reply(w, replayReply{Seq: seq, Subject: rep.Subject, StreamSeq: rep.Seq, MsgID: rep.MsgID, RunID: rep.Run.RunID, Tasks: rep.Run.Tasks}, err)
	})
	mux.HandleFunc("DELETE /v1/dlq/{seq}", func(w http.ResponseWriter, r *http.Request) {
		seq, ok := pathSeq(w, r)
		if !ok {
			return
		}
		if _, err := a.deadLetter(r.Context(), seq); err != nil {
			a.reply(w, nil, err)
			return
		}
		err := coordinator.PurgeDLQ(r.Context(), a.js, seq)
		a.reply(w, map[string]uint64{"purged": seq}, err)
	})
}

// consolePublic tells whether path is served without the token: the
// console's page and assets, which hold no data (the page asks for the
// token when the API answers 401), and the redirect to them.
func consolePublic(path string) bool {
	return path == "/" || strings.HasPrefix(path, consolePrefix)
}

// queryLimit parses ?limit=N (N >= 1); def when absent.
func queryLimit(w http.ResponseWriter, r *http.Request, def int) (int, bool) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return def, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		writeError(w, http.StatusBadRequest, codeInvalid, fmt.Sprintf("limit: %q is not an integer of 1 or more", s))
		return 0, false
	}
	return n, true
}

// pathSeq parses the {seq} of a dead letter's path.
func pathSeq(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	seq, err := seqArg(r.PathValue("seq"))
	if err != nil {
		writeError(w, http.StatusBadRequest, codeInvalid, err.Error())
		return 0, false
	}
	return seq, true
}

// deadLetter returns dead letter seq; one that is not there is a
// not_found answer.
func (a *api) deadLetter(ctx context.Context, seq uint64) (coordinator.DeadLetter, error) {
	d, err := coordinator.GetDLQ(ctx, a.js, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return d, &coordinator.APIError{Code: codeNotFound, Msg: fmt.Sprintf("dead letter %d not found: purged, or never written", seq)}
	}
	return d, err
}

// deadLetters answers GET /v1/dlq.
type deadLetters struct {
	// Total counts the dead letters in SLUICE_DLQ; DeadLetters holds the
	// oldest of them, at most the limit asked for.
	Total       uint64           `json:"total"`
	DeadLetters []deadLetterView `json:"dead_letters"`
}

func listDeadLetters(ctx context.Context, js jetstream.JetStream, limit int) (deadLetters, error) {
	out := deadLetters{DeadLetters: []deadLetterView{}}
	s, err := js.Stream(ctx, protocol.StreamDLQ)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("open %s: %w", protocol.StreamDLQ, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return out, fmt.Errorf("%s info: %w", protocol.StreamDLQ, err)
	}
	out.Total = info.State.Msgs
	dls, err := coordinator.ListDLQ(ctx, js, limit)
	for _, d := range dls {
		out.DeadLetters = append(out.DeadLetters, viewDeadLetter(d))
	}
	return out, err
}

// replayReply answers POST /v1/dlq/{seq}/replay: the trigger published
// again (Subject, its stream sequence and msg id) or the run a dead task
// started.
type replayReply struct {
	Seq       uint64 `json:"seq"`
	Subject   string `json:"subject,omitempty"`
	StreamSeq uint64 `json:"stream_seq,omitempty"`
	MsgID     string `json:"msg_id,omitempty"`
	RunID     string `json:"run,omitempty"`
	Tasks     int    `json:"tasks,omitempty"`
}

// lagSample is one stream's lag at one time.
type lagSample struct {
	Time       time.Time `json:"t"`
	LagBytes   int64     `json:"lag_bytes"`
	LagSeconds float64   `json:"lag_seconds"`
	Events     int64     `json:"events"`
}

// lagHistory keeps the newest samples of each stream's lag. It is safe for
// concurrent use.
type lagHistory struct {
	mu      sync.Mutex
	keep    int
	streams map[string][]lagSample
}

func newLagHistory(keep int) *lagHistory {
	return &lagHistory{keep: keep, streams: map[string][]lagSample{}}
}

// lagSnapshot answers GET /v1/cdc/history.
type lagSnapshot struct {
	Every   string                 `json:"every"`
	Streams map[string][]lagSample `json:"streams"`
}

func (h *lagHistory) snapshot() lagSnapshot {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := lagSnapshot{Every: lagEvery.String(), Streams: make(map[string][]lagSample, len(h.streams))}
	for name, s := range h.streams {
		out.Streams[name] = append([]lagSample(nil), s...)
	}
	return out
}

// record adds a sample of every stream in st taken at now; the streams st
// lacks (deleted pipelines) are forgotten.
func (h *lagHistory) record(st protocol.CDCStatusReply, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := make(map[string]bool, len(st.Streams))
	for _, s := range st.Streams {
		seen[s.Pipeline] = true
		ring := append(h.streams[s.Pipeline], lagSample{Time: now.UTC(), LagBytes: s.Status.LagBytes,
			LagSeconds: s.Status.LagTime.Seconds(), Events: s.Status.Events})
		if len(ring) > h.keep {
			ring = append(ring[:0:0], ring[len(ring)-h.keep:]...)
		}
		h.streams[s.Pipeline] = ring
	}
	for name := range h.streams {
		if !seen[name] {
			delete(h.streams, name)
		}
	}
}

// run samples the streams through c every interval (at once first) until
// ctx ends. A sample that fails (no leader for a while) is skipped.
func (h *lagHistory) run(ctx context.Context, c *coordinator.Client, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		sctx, cancel := context.WithTimeout(ctx, every)
		st, err := c.CDCStatus(sctx)
		cancel()
		switch {
		case err == nil:
			h.record(st, time.Now())
		case ctx.Err() == nil:
			log.Debug("console: sample cdc lag", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
