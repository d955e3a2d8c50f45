package cdctest

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/cdcapply"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/embednats"
	"github.com/sluicehq/sluice/protocol"
)

// StartJS starts an embedded JetStream server with the SLUICE_CDC stream,
// stopped when the test ends.
func StartJS(t testing.TB) jetstream.JetStream {
	t.Helper()
	srv, err := embednats.Start(embednats.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := pgcdc.EnsureStream(context.Background(), js, pgcdc.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	return js
}

// Publish publishes events on their CDC subjects, one message each, and
// returns their stream sequences.
func Publish(t testing.TB, js jetstream.JetStream, evs ...protocol.ChangeEvent) []uint64 {
	t.Helper()
	msgs := make([][]protocol.ChangeEvent, len(evs))
	for i := range evs {
		msgs[i] = evs[i : i+1]
	}
	return PublishPacked(t, js, msgs...)
}

// PublishPacked publishes each group of events as one message on the CDC
// subject of its first event, packed as the pgcdc Reader packs them (the
// encoded events joined by '\n', their count in the Sluice-Events header),
// and returns the messages' stream sequences.
func PublishPacked(t testing.TB, js jetstream.JetStream, msgs ...[]protocol.ChangeEvent) []uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var futs []jetstream.PubAckFuture
	for _, evs := range msgs {
		var data []byte
		for i, ev := range evs {
			b, err := ev.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if i > 0 {
				data = append(data, '\n')
			}
			data = append(data, b...)
		}
		m := nats.NewMsg(protocol.CDCSubject(evs[0].Pipeline, evs[0].Schema, evs[0].Table))
		m.Data = data
		m.Header.Set(protocol.HeaderEvents, strconv.Itoa(len(evs)))
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			t.Fatal(err)
		}
		futs = append(futs, f)
	}
	seqs := make([]uint64, len(futs))
	for i, f := range futs {
		select {
		case ack := <-f.Ok():
			seqs[i] = ack.Sequence
		case err := <-f.Err():
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatal("no publish ack")
		}
	}
	return seqs
}

// Run runs a Runner until stop is called; stop returns Run's error, done is
// closed when Run returns. The test's end stops it too.
func Run(t *testing.T, js jetstream.JetStream, cfg cdcapply.Config, a connectors.Applier) (r *cdcapply.Runner, stop func() error, done <-chan struct{}) {
	t.Helper()
	r, err := cdcapply.NewRunner(js, cfg, a, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan struct{})
	var result error
	go func() { result = r.Run(ctx); close(ch) }()
	stop = func() error {
		cancel()
		<-ch
		return result
	}
	t.Cleanup(func() { stop() })
	return r, stop, ch
}

// WaitFor polls cond until it holds; it fails when done closes first or
// after 90s (a bound for a loaded machine: what it waits for takes
// seconds).
func WaitFor(t *testing.T, what string, done <-chan struct{}, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		select {
		case <-done:
			t.Fatalf("Run ended while waiting for %s", what)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
