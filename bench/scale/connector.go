package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// kind is the connector kind of the benchmark: only its own processes
// register it (the sluice binary does not know it).
const kind = "scale_bench"

// sourceConfig configures the benchmark's source. A run without a window
// plans Tasks partitions; a run of a window (a backfill's) plans one. A
// partition's read reads File at Rate bytes a second (an I/O-bound task)
// and emits its lines; without File it reads nothing (a no-op task).
type sourceConfig struct {
	Tasks int    `json:"tasks,omitempty"`
	File  string `json:"file,omitempty"`
	Rate  int64  `json:"rate,omitempty"`
}

func (c sourceConfig) validate() error {
	if c.Tasks < 0 || c.Rate < 0 || c.File != "" && c.Rate == 0 {
		return fmt.Errorf("%s source: want tasks >= 0, and a rate > 0 with a file", kind)
	}
	return nil
}

// register adds the benchmark's kind to reg: a source and a sink that
// keeps nothing (its commit only reports the run's totals).
func register(reg *connectors.Registry) {
	reg.Register(connectors.Connector{
		Kind: kind,
		Source: func(_ context.Context, raw json.RawMessage) (connectors.Source, error) {
			var c sourceConfig
			if err := json.Unmarshal(raw, &c); err != nil {
				return nil, err
			}
			return &source{cfg: c}, c.validate()
		},
		ValidateSource: func(raw json.RawMessage) error {
			var c sourceConfig
			if err := json.Unmarshal(raw, &c); err != nil {
				return err
			}
			return c.validate()
		},
		Sink:             func(context.Context, json.RawMessage) (connectors.Sink, error) { return sink{}, nil },
		SinkValueWindows: true,
	})
}

type source struct{ cfg sourceConfig }

// Plan plans Tasks partitions, or one for a window.
func (s *source) Plan(_ context.Context, req connectors.PlanRequest) (connectors.Plan, error) {
	n := s.cfg.Tasks
	if req.Window != nil {
		n = 1
	}
	parts := make([]protocol.Partition, n)
	for i := range parts {
		parts[i] = protocol.Partition{Key: fmt.Sprintf("p%06d", i), Spec: json.RawMessage("{}")}
	}
	return connectors.Plan{Partitions: parts}, nil
}

// Read reads the file through a reader throttled to the rate, and emits
// its lines as one batch; without a file it emits nothing.
func (s *source) Read(ctx context.Context, p protocol.Partition, emit connectors.Emit) error {
	if s.cfg.File == "" {
		return nil
	}
	f, err := os.Open(s.cfg.File)
	if err != nil {
		return connectors.Permanent(err)
	}
	defer f.Close()
	b, err := io.ReadAll(&throttled{ctx: ctx, r: f, rate: s.cfg.Rate, start: time.Now()})
	if err != nil {
		return err
	}
	return emit(ctx, connectors.Batch{Raw: b, Format: connectors.FormatJSONL, Rows: int64(bytes.Count(b, []byte{'\n'})), Position: p.Key})
}

func (s *source) Close() error { return nil }

// throttled reads r at most rate bytes a second from start: what a disk or
// a network of that bandwidth gives, without using the CPU meanwhile.
type throttled struct {
	ctx   context.Context
	r     io.Reader
	rate  int64
	start time.Time
	n     int64
}

func (t *throttled) Read(p []byte) (int, error) {
	if len(p) > 32<<10 {
		p = p[:32<<10]
	}
	n, err := t.r.Read(p)
	t.n += int64(n)
	due := t.start.Add(time.Duration(float64(t.n) / float64(t.rate) * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		tm := time.NewTimer(d)
		defer tm.Stop()
		select {
		case <-t.ctx.Done():
			return n, t.ctx.Err()
		case <-tm.C:
		}
	}
	return n, err
}

// sink counts what its tasks write and keeps nothing.
type sink struct{}

func (sink) OpenTask(context.Context, connectors.TaskRef) (connectors.TaskWriter, error) {
	return &writer{}, nil
}

func (sink) Commit(_ context.Context, req connectors.CommitRequest) (connectors.CommitResult, error) {
	return connectors.CommitResult{Location: fmt.Sprintf("%s:%s", kind, req.RunID)}, nil
}

func (sink) Abort(context.Context, string) error { return nil }
func (sink) Close() error                        { return nil }

type writer struct{ out connectors.TaskOutput }

func (w *writer) Write(_ context.Context, b connectors.Batch) error {
	if b.Record != nil {
		return errors.New("the benchmark's sink takes raw batches")
	}
	w.out.Rows += b.Rows
	w.out.Bytes += int64(len(b.Raw))
	return nil
}

func (w *writer) Close(context.Context) (connectors.TaskOutput, error) { return w.out, nil }
func (w *writer) Abort(context.Context) error                          { return nil }
