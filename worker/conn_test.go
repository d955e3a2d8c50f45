package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// testConn is a connector for the tests: its source emits rows deterministic
// JSONL rows per partition, and its sink writes each task to one file,
// replacing the output of an earlier attempt. Its fields steer failures and
// blocking; it records what happened for the tests to check.
type testConn struct {
	kind  string
	dir   string // where the sink writes
	rows  int    // rows per partition
	batch int    // rows per batch

	// failFirst fails the first failFirst reads of each partition with a
	// retryable error.
	failFirst int
	// permanent fails every read with a *connectors.RowError at row 7.
	permanent bool
	// replan fails every read with a connectors.Replan error: what the
	// run was planned on is gone.
	replan bool
	// gate, when set, holds reads number 1..gateReads of each partition (all
	// reads when gateReads is 0) after their first batch until it is closed.
	gate      chan struct{}
	gateReads int
	// failWriteAt makes the sink reject, as permanent, the batch whose
	// position is this.
	failWriteAt string
	// blocked receives the partition key of each read held at the gate.
	blocked chan string

	mu        sync.Mutex
	reads     map[string][]time.Time // read start times by partition key
	refs      []connectors.TaskRef   // the task writers opened
	active    int
	maxActive int

	opens      atomic.Int32
	srcClosed  atomic.Int32
	sinkClosed atomic.Int32
}

func newTestConn(dir string) *testConn {
	return &testConn{
		kind:    "test",
		dir:     dir,
		rows:    45,
		batch:   10,
		reads:   map[string][]time.Time{},
		blocked: make(chan string, 100),
	}
}

func (c *testConn) register(reg *connectors.Registry) {
	reg.Register(connectors.Connector{
		Kind: c.kind,
		Source: func(context.Context, json.RawMessage) (connectors.Source, error) {
			c.opens.Add(1)
			return testSource{c}, nil
		},
		Sink: func(context.Context, json.RawMessage) (connectors.Sink, error) {
			c.opens.Add(1)
			return testSink{c}, nil
		},
	})
}

func (c *testConn) readTimes(key string) []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.reads[key]...)
}

// opened returns the task writers the sink opened.
func (c *testConn) opened() []connectors.TaskRef {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]connectors.TaskRef(nil), c.refs...)
}

func (c *testConn) maxConcurrent() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxActive
}

// row is row j (0-based) of partition part.
func row(part, j int) string { return fmt.Sprintf(`{"part":%d,"row":%d}`, part, j) }

// expected returns the JSONL output and checksum of partition part.
func (c *testConn) expected(part int) ([]byte, connectors.Checksum) {
	var buf bytes.Buffer
	var sum connectors.Checksum
	for j := range c.rows {
		r := row(part, j)
		sum.Add([]byte(r))
		buf.WriteString(r + "\n")
	}
	return buf.Bytes(), sum
}

type testSource struct{ c *testConn }

func (testSource) Plan(context.Context, connectors.PlanRequest) (connectors.Plan, error) {
	return connectors.Plan{}, errors.New("test source does not plan")
}

func (s testSource) Read(ctx context.Context, p protocol.Partition, emit connectors.Emit) error {
	c := s.c
	var spec struct {
		Part int `json:"part"`
	}
	if err := json.Unmarshal(p.Spec, &spec); err != nil {
		return connectors.Permanent(fmt.Errorf("partition spec: %w", err))
	}
	c.mu.Lock()
	c.reads[p.Key] = append(c.reads[p.Key], time.Now())
	n := len(c.reads[p.Key])
	c.active++
	c.maxActive = max(c.maxActive, c.active)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.active--
		c.mu.Unlock()
	}()

	if n <= c.failFirst {
		return fmt.Errorf("source unavailable on read %d", n)
	}
	file := fmt.Sprintf("part-%d.jsonl", spec.Part)
	if c.permanent {
		return &connectors.RowError{Location: file, Row: 7, Field: "row", Err: errors.New("not a number")}
	}
	if c.replan {
		return connectors.Replan(fmt.Errorf("%s: the run's snapshot is gone", file))
	}
	for start := 0; start < c.rows; start += c.batch {
		var buf bytes.Buffer
		end := min(start+c.batch, c.rows)
		for j := start; j < end; j++ {
			buf.WriteString(row(spec.Part, j) + "\n")
		}
		b := connectors.Batch{Raw: buf.Bytes(), Format: connectors.FormatJSONL, Rows: int64(end - start),
			Position: fmt.Sprintf("%s:%d", file, start+1)}
		if err := emit(ctx, b); err != nil {
			return fmt.Errorf("emit: %w", err)
		}
		if start == 0 && c.gate != nil && (c.gateReads == 0 || n <= c.gateReads) {
			c.blocked <- p.Key
			select {
			case <-c.gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

func (s testSource) Close() error { s.c.srcClosed.Add(1); return nil }

type testSink struct{ c *testConn }

func (s testSink) OpenTask(_ context.Context, t connectors.TaskRef) (connectors.TaskWriter, error) {
	s.c.mu.Lock()
	s.c.refs = append(s.c.refs, t)
	s.c.mu.Unlock()
	dir := filepath.Join(s.c.dir, t.RunID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	final := filepath.Join(dir, t.TaskID+".jsonl")
	tmp := fmt.Sprintf("%s.attempt-%d", final, t.Attempt)
	f, err := os.Create(tmp)
	if err != nil {
		return nil, err
	}
	return &testWriter{f: f, final: final, failAt: s.c.failWriteAt}, nil
}

func (testSink) Commit(context.Context, connectors.CommitRequest) (connectors.CommitResult, error) {
	return connectors.CommitResult{}, nil
}

func (testSink) Abort(context.Context, string) error { return nil }

func (s testSink) Close() error { s.c.sinkClosed.Add(1); return nil }

type testWriter struct {
	f      *os.File
	final  string
	failAt string
	out    connectors.TaskOutput
}

func (w *testWriter) Write(_ context.Context, b connectors.Batch) error {
	if w.failAt != "" && b.Position == w.failAt {
		return connectors.Permanent(errors.New("value out of range"))
	}
	if _, err := w.f.Write(b.Raw); err != nil {
		return err
	}
	for line := range bytes.Lines(b.Raw) {
		w.out.Checksum.Add(bytes.TrimSuffix(line, []byte("\n")))
	}
	w.out.Rows += b.Rows
	w.out.Bytes += int64(len(b.Raw))
	return nil
}

func (w *testWriter) Close(context.Context) (connectors.TaskOutput, error) {
	if err := w.f.Close(); err != nil {
		return connectors.TaskOutput{}, err
	}
	if err := os.Rename(w.f.Name(), w.final); err != nil {
		return connectors.TaskOutput{}, err
	}
	w.out.Location = w.final
	return w.out, nil
}

func (w *testWriter) Abort(context.Context) error {
	w.f.Close()
	return os.Remove(w.f.Name())
}
