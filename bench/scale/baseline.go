package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/protocol"
)

// limitSample is the JetStream limit of one measurement: the same number
// of task messages, of the same size and headers, published to a
// work-queue stream by one publisher and consumed and acked by consumers
// connections (one a worker process), each answering with a result
// message of the result's size on a second work-queue stream, which one
// consumer consumes and acks: the messages a Sluice task moves, without
// Raft, the FSM or any task work.
type limitSample struct {
	Tasks           int     `json:"tasks"`
	Consumers       int     `json:"consumers"`
	TaskBytes       int     `json:"task_message_bytes"`
	ResultBytes     int     `json:"result_message_bytes"`
	Seconds         float64 `json:"seconds"`
	PublishSeconds  float64 `json:"publish_seconds"`
	PublishedPerSec float64 `json:"published_per_sec"`
	// PerSec is tasks whose result was consumed per second: the limit.
	PerSec float64 `json:"tasks_per_sec"`
}

const (
	limitTasks   = "SCALE_LIMIT_TASKS"
	limitResults = "SCALE_LIMIT_RESULTS"
)

// limit measures the JetStream limit of n tasks with consumers consumers,
// sending copies of task and result (a message of each that Sluice sent).
func (c *cluster) limit(ctx context.Context, n, consumers int, task, result *nats.Msg) (limitSample, error) {
	s := limitSample{Tasks: n, Consumers: consumers, TaskBytes: msgSize(task), ResultBytes: msgSize(result)}
	for _, sc := range []jetstream.StreamConfig{
		{Name: limitTasks, Subjects: []string{"scale.limit.tasks.>"}},
		{Name: limitResults, Subjects: []string{"scale.limit.results.>"}},
	} {
		sc.Retention, sc.Storage, sc.Duplicates, sc.Discard = jetstream.WorkQueuePolicy, jetstream.FileStorage, 2*time.Minute, jetstream.DiscardNew
		sc.MaxBytes = 1 << 30
		c.js.DeleteStream(ctx, sc.Name)
		if _, err := c.js.CreateStream(ctx, sc); err != nil {
			return s, fmt.Errorf("limit: create stream %s: %w", sc.Name, err)
		}
		defer c.js.DeleteStream(context.WithoutCancel(ctx), sc.Name)
	}
	cons := jetstream.ConsumerConfig{Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 10000, AckWait: 30 * time.Second}
	if _, err := c.js.CreateConsumer(ctx, limitTasks, cons); err != nil {
		return s, err
	}
	cons.Durable = "leader"
	if _, err := c.js.CreateConsumer(ctx, limitResults, cons); err != nil {
		return s, err
	}
	var conns []*nats.Conn
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	connect := func(name string) (jetstream.JetStream, error) {
		nc, err := nats.Connect(c.url, nats.Name(name))
		if err != nil {
			return nil, err
		}
		conns = append(conns, nc)
		return jetstream.New(nc)
	}

	var done atomic.Int64
	finished := make(chan struct{})
	errc := make(chan error, consumers+2)
	// The "leader": consumes the results.
	ljs, err := connect("limit-leader")
	if err != nil {
		return s, err
	}
	rc, err := ljs.Consumer(ctx, limitResults, "leader")
	if err != nil {
		return s, err
	}
	lcc, err := rc.Consume(func(m jetstream.Msg) {
		if err := m.Ack(); err != nil {
			errc <- err
			return
		}
		if done.Add(1) == int64(n) {
			close(finished)
		}
	})
	if err != nil {
		return s, err
	}
	defer lcc.Stop()
	// The "workers": consume the tasks, publish a result each, ack.
	for i := range consumers {
		wjs, err := connect(fmt.Sprintf("limit-worker-%d", i))
		if err != nil {
			return s, err
		}
		wc, err := wjs.Consumer(ctx, limitTasks, "workers")
		if err != nil {
			return s, err
		}
		cc, err := wc.Consume(func(m jetstream.Msg) {
			r := nats.NewMsg("scale.limit.results." + m.Headers().Get(protocol.HeaderTask))
			r.Data = result.Data
			copyHeaders(r, result)
			r.Header.Set(protocol.HeaderMsgID, "r-"+m.Headers().Get(protocol.HeaderMsgID))
			if _, err := wjs.PublishMsgAsync(r); err != nil {
				errc <- err
				return
			}
			if err := m.Ack(); err != nil {
				errc <- err
			}
		})
		if err != nil {
			return s, err
		}
		defer cc.Stop()
	}
	// The "leader" publishes the tasks.
	start := time.Now()
	var futs []jetstream.PubAckFuture
	waited := 0
	for i := range n {
		m := nats.NewMsg("scale.limit.tasks." + strconv.Itoa(i%64))
		m.Data = task.Data
		copyHeaders(m, task)
		id := "t" + strconv.Itoa(i)
		m.Header.Set(protocol.HeaderTask, id)
		m.Header.Set(protocol.HeaderMsgID, id)
		f, err := c.js.PublishMsgAsync(m)
		if err != nil {
			return s, fmt.Errorf("limit: publish: %w", err)
		}
		// At most 2,048 in flight, as the leader publishes.
		if futs = append(futs, f); len(futs)-waited >= 2048 {
			for ; waited < len(futs)-1024; waited++ {
				select {
				case <-futs[waited].Ok():
				case err := <-futs[waited].Err():
					return s, fmt.Errorf("limit: publish: %w", err)
				}
			}
		}
	}
	select {
	case <-c.js.PublishAsyncComplete():
	case <-ctx.Done():
		return s, ctx.Err()
	}
	s.PublishSeconds = measure.Round(time.Since(start).Seconds(), 3)
	select {
	case <-finished:
	case err := <-errc:
		return s, fmt.Errorf("limit: %w", err)
	case <-time.After(time.Duration(n)*time.Millisecond + time.Minute):
		return s, errors.New("limit: the results did not all come back")
	case <-ctx.Done():
		return s, ctx.Err()
	}
	secs := time.Since(start).Seconds()
	s.Seconds = measure.Round(secs, 3)
	s.PerSec = measure.Round(float64(n)/secs, 0)
	s.PublishedPerSec = measure.Round(float64(n)/s.PublishSeconds, 0)
	return s, nil
}

// copyHeaders copies the headers of from into m.
func copyHeaders(m, from *nats.Msg) {
	for k, vs := range from.Header {
		for _, v := range vs {
			m.Header.Add(k, v)
		}
	}
}

// msgSize is a message's payload and header size, as it travels.
func msgSize(m *nats.Msg) int {
	n := len(m.Data)
	for k, vs := range m.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}
