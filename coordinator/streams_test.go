package coordinator

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/protocol"
)

// Every Sluice stream is capped; a full tasks or results stream refuses
// the next message (the publisher gets an error, nothing is dropped), a
// full events stream drops its oldest, and dead letters expire.
func TestEnsureStreamsBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(connect(t, startNATS(t)))
	if err != nil {
		t.Fatal(err)
	}
	const capBytes = 4096
	if err := EnsureStreams(ctx, js, StreamConfig{MaxBytes: capBytes, CDCMaxBytes: 2 * capBytes, DLQMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		maxBytes int64
		maxAge   time.Duration
		discard  jetstream.DiscardPolicy
	}{
		protocol.StreamTasks:    {capBytes, 0, jetstream.DiscardNew},
		protocol.StreamResults:  {capBytes, 0, jetstream.DiscardNew},
		protocol.StreamTriggers: {capBytes, triggersMaxAge, jetstream.DiscardNew},
		protocol.StreamEvents:   {capBytes, eventsMaxAge, jetstream.DiscardOld},
		protocol.StreamDLQ:      {capBytes, time.Hour, jetstream.DiscardOld},
		protocol.StreamCDC:      {2 * capBytes, protocol.CDCRetention, jetstream.DiscardNew},
	}
	for name, w := range want {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		if c.MaxBytes != w.maxBytes || c.MaxAge != w.maxAge || c.Discard != w.discard {
			t.Errorf("%s: max bytes %d, max age %v, discard %v; want %d, %v, %v", name, c.MaxBytes, c.MaxAge, c.Discard, w.maxBytes, w.maxAge, w.discard)
		}
	}
	payload := []byte(strings.Repeat("x", 1000))
	fill := func(subject string) error {
		for range 20 {
			if _, err := js.Publish(ctx, subject, payload); err != nil {
				return err
			}
		}
		return nil
	}
	for _, subject := range []string{protocol.TaskSubject("p", "p-000001"), protocol.ResultSubject("p")} {
		if err := fill(subject); err == nil || !strings.Contains(err.Error(), "maximum bytes") {
			t.Errorf("publish to a full stream on %s: %v, want refused (maximum bytes exceeded)", subject, err)
		}
	}
	if err := fill("sluice.events.p"); err != nil {
		t.Errorf("publish to a full events stream: %v, want the oldest dropped", err)
	}
	// Defaults apply to what is not set, on a stream that exists.
	if err := EnsureStreams(ctx, js, StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	s, _ := js.Stream(ctx, protocol.StreamDLQ)
	if c := s.CachedInfo().Config; c.MaxAge != DefaultDLQMaxAge || c.MaxBytes != DefaultStreamMaxBytes {
		t.Errorf("DLQ defaults: max age %v, max bytes %d", c.MaxAge, c.MaxBytes)
	}
}
