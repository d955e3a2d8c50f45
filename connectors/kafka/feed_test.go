package kafka_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/kafka"
	"github.com/sluicehq/sluice/connectors/kafka/kafkatest"
)

// A trigger feed reads the records produced after it first reads, in
// order; one opened again with the same name goes on after the last
// record marked done.
func TestFeed(t *testing.T) {
	c := kafkatest.Start(t)
	c.CreateTopic(t, "uploads", 1)
	cl := c.Client(t)
	c.Produce(t, cl, &kgo.Record{Topic: "uploads", Value: []byte(`{"before":true}`)})
	reg := connectors.NewRegistry()
	kafka.Register(reg)
	cfg, _ := json.Marshal(kafka.FeedConfig{Cluster: c.Config(), Topic: "uploads"})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	open := func() connectors.Feed {
		f, err := reg.OpenFeed(ctx, kafka.Kind, cfg, "sluice.trigger.p")
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	// The feed's first fetch comes once its group joined and its start
	// (the end of the topic) is resolved: produce then.
	fetching := make(chan struct{})
	var once sync.Once
	c.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		once.Do(func() { close(fetching) })
		return nil, nil, false
	})
	f := open()
	go func() {
		select {
		case <-fetching:
		case <-ctx.Done():
			return
		}
		c.Produce(t, cl, &kgo.Record{Topic: "uploads", Value: []byte(`{"n":1}`), Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("v")}}},
			&kgo.Record{Topic: "uploads", Value: []byte(`{"n":2}`)})
	}()
	ev, err := f.Next(ctx)
	if err != nil || string(ev.Data) != `{"n":1}` || ev.Headers["h"] != "v" || ev.ID != "uploads/0@1" {
		t.Fatalf("first event: %+v, %v", ev, err)
	}
	if err := f.Done(ctx, ev); err != nil {
		t.Fatal(err)
	}
	f.Close()
	f = open()
	defer f.Close()
	ev, err = f.Next(ctx)
	if err != nil || string(ev.Data) != `{"n":2}` {
		t.Fatalf("after a reopen: %+v, %v; want the record after the one done", ev, err)
	}
}
