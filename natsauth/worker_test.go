package natsauth

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/protocol"
)

// TestWorkerJetStreamRights connects a worker to a nats-server configured
// by ServerConfig, beside streams the coordinator created (the tasks with
// their shared consumer, SLUICE_CDC, the triggers, a cdc pipeline's
// latest-state stream), and checks that the worker does through JetStream
// what a worker does (pull and acknowledge a task, publish a result, a
// change event and a latest-state row, read a row back, run a cdc_apply
// consumer the leader made: look it up, fetch, acknowledge, reset) and
// nothing else: it cannot create a stream, update, delete or purge the
// latest-state stream or a Sluice stream, delete a message, create,
// change or delete a consumer (a push consumer on SLUICE_CDC delivering
// to a control API subject among them), pull or acknowledge another
// stream's deliveries, or read a Sluice stream's messages by sequence.
// Afterwards every stream and message is still there.
func TestWorkerJetStreamRights(t *testing.T) {
	dir := t.TempDir()
	url := startServer(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cjs, err := jetstream.New(connectAs(t, url, dir, RoleCoordinator, nil))
	if err != nil {
		t.Fatal(err)
	}
	const latest, latestSubjects = "SLUICE_LATEST_UP", "sluice.latest.up.>"
	for _, sc := range []jetstream.StreamConfig{
		{Name: protocol.StreamTasks, Subjects: []string{protocol.SubjectTasksAll}, Retention: jetstream.WorkQueuePolicy},
		{Name: protocol.StreamResults, Subjects: []string{protocol.SubjectResultsAll}},
		{Name: protocol.StreamTriggers, Subjects: []string{protocol.SubjectTriggersAll}},
		{Name: protocol.StreamCDC, Subjects: []string{protocol.SubjectCDCAll}},
		{Name: latest, Subjects: []string{latestSubjects}, MaxMsgsPerSubject: 1},
	} {
		if _, err := cjs.CreateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cjs.CreateOrUpdateConsumer(ctx, protocol.StreamTasks, jetstream.ConsumerConfig{
		Durable: protocol.ConsumerWorkers, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	if _, err := cjs.CreateOrUpdateConsumer(ctx, protocol.StreamTriggers, jetstream.ConsumerConfig{
		Durable: "sluice-leader", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{protocol.TaskSubject("p", "p-000001"), protocol.TaskSubject("p", "p-000002"),
		protocol.TriggerSubject("p"), "sluice.cdc.up.public.t", "sluice.cdc.other.public.t", "sluice.latest.up.public.t.1"} {
		if _, err := cjs.Publish(ctx, subj, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}

	var v violations
	wnc := connectAs(t, url, dir, RoleWorker, &v)
	js, err := jetstream.New(wnc)
	if err != nil {
		t.Fatal(err)
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("a worker cannot %s: %v", what, err)
		}
	}

	// What a worker does.
	tasks, err := js.Consumer(ctx, protocol.StreamTasks, protocol.ConsumerWorkers)
	must("look up the task consumer", err)
	task, err := tasks.Next(jetstream.FetchMaxWait(5 * time.Second))
	must("pull a task", err)
	must("report a task in progress", task.InProgress())
	must("acknowledge a task", task.DoubleAck(ctx))
	_, err = js.Publish(ctx, protocol.ResultSubject("p"), []byte(`{}`))
	must("publish a result", err)
	_, err = js.Publish(ctx, "sluice.cdc.up.public.t", []byte(`{}`))
	must("publish a change event", err)
	_, err = js.Publish(ctx, "sluice.latest.up.public.t.2", []byte(`{}`))
	must("publish a latest-state row", err)
	ls, err := js.Stream(ctx, latest)
	must("look up the latest-state stream", err)
	_, err = ls.GetLastMsgForSubject(ctx, "sluice.latest.up.public.t.1")
	must("read a latest-state row", err)
	cdc, err := js.Stream(ctx, protocol.StreamCDC)
	must("look up SLUICE_CDC", err)
	_, err = cdc.Info(ctx)
	must("read SLUICE_CDC's information", err)
	name := protocol.CDCApplyConsumer("up-latest")
	// The leader creates a cdc_apply consumer.
	if _, err := cjs.CreateOrUpdateConsumer(ctx, protocol.StreamCDC, jetstream.ConsumerConfig{Durable: name,
		FilterSubject: "sluice.cdc.up.>", AckPolicy: jetstream.AckAllPolicy}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, protocol.StreamCDC, name)
	must("look up its cdc_apply consumer", err)
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	must("fetch change events", err)
	n := 0
	for m := range batch.Messages() {
		must("acknowledge change events", m.DoubleAck(ctx))
		n++
	}
	if n != 1 {
		t.Fatalf("fetched %d change events, want 1 (%v)", n, batch.Error())
	}
	_, err = cons.Info(ctx)
	must("read its consumer's information", err)
	_, err = js.ResetConsumerToSequence(ctx, protocol.StreamCDC, name, 1)
	must("reset its consumer", err)

	// What it may not do: each request is refused by the server, which
	// tells the client.
	denied := map[string]func(context.Context) error{
		"$JS.API.STREAM.CREATE.EVIL": func(ctx context.Context) error {
			_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVIL", Subjects: []string{"evil.>"}})
			return err
		},
		"$JS.API.STREAM.UPDATE." + latest: func(ctx context.Context) error {
			_, err := js.UpdateStream(ctx, jetstream.StreamConfig{Name: latest, Subjects: []string{latestSubjects, "sluice.api.>"}})
			return err
		},
		"$JS.API.STREAM.DELETE." + latest:                func(ctx context.Context) error { return js.DeleteStream(ctx, latest) },
		"$JS.API.STREAM.PURGE." + latest:                 func(ctx context.Context) error { return ls.Purge(ctx) },
		"$JS.API.STREAM.MSG.DELETE." + latest:            func(ctx context.Context) error { return ls.DeleteMsg(ctx, 1) },
		"$JS.API.STREAM.PURGE." + protocol.StreamCDC:     func(ctx context.Context) error { return cdc.Purge(ctx) },
		"$JS.API.STREAM.DELETE." + protocol.StreamTasks:  func(ctx context.Context) error { return js.DeleteStream(ctx, protocol.StreamTasks) },
		"$JS.API.STREAM.MSG.GET." + protocol.StreamTasks: func(ctx context.Context) error { return getMsg(ctx, js, protocol.StreamTasks) },
		"$JS.API.STREAM.MSG.GET." + protocol.StreamCDC:   func(ctx context.Context) error { return getMsg(ctx, js, protocol.StreamCDC) },
		"$JS.API.CONSUMER.DELETE." + protocol.StreamTasks + "." + protocol.ConsumerWorkers: func(ctx context.Context) error {
			return js.DeleteConsumer(ctx, protocol.StreamTasks, protocol.ConsumerWorkers)
		},
		"$JS.API.CONSUMER.CREATE." + protocol.StreamTasks + ".evil." + protocol.SubjectTasksAll: func(ctx context.Context) error {
			return createConsumer(ctx, js, protocol.StreamTasks, protocol.SubjectTasksAll)
		},
		"$JS.API.CONSUMER.CREATE." + latest + ".evil." + latestSubjects: func(ctx context.Context) error {
			return createConsumer(ctx, js, latest, latestSubjects)
		},
		"$JS.API.CONSUMER.CREATE." + protocol.StreamCDC + ".evil": func(ctx context.Context) error {
			_, err := js.CreateOrUpdateConsumer(ctx, protocol.StreamCDC, jetstream.ConsumerConfig{Durable: "evil",
				FilterSubjects: []string{"sluice.cdc.up.>", "sluice.cdc.other.>"}})
			return err
		},
		// A push consumer would have the server publish change events the
		// worker wrote to a subject of its choosing: a control API request.
		"$JS.API.CONSUMER.CREATE." + protocol.StreamCDC + ".evil.sluice.cdc.up.>": func(ctx context.Context) error {
			_, err := js.CreateOrUpdateConsumer(ctx, protocol.StreamCDC, jetstream.ConsumerConfig{Durable: "evil",
				FilterSubject: "sluice.cdc.up.>", DeliverSubject: protocol.APISubject(protocol.VerbApply)})
			return err
		},
		"$JS.API.CONSUMER.CREATE." + protocol.StreamCDC + "." + name + ".sluice.cdc.>": func(ctx context.Context) error {
			_, err := js.UpdateConsumer(ctx, protocol.StreamCDC, jetstream.ConsumerConfig{Durable: name,
				FilterSubject: "sluice.cdc.>", AckPolicy: jetstream.AckAllPolicy})
			return err
		},
		"$JS.API.CONSUMER.DELETE." + protocol.StreamCDC + "." + name: func(ctx context.Context) error {
			return js.DeleteConsumer(ctx, protocol.StreamCDC, name)
		},
		"$JS.API.CONSUMER.MSG.NEXT." + protocol.StreamTriggers + ".sluice-leader": func(ctx context.Context) error {
			_, err := wnc.RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT."+protocol.StreamTriggers+".sluice-leader", []byte(`{"batch":1}`))
			return err
		},
		"$JS.ACK." + protocol.StreamTriggers + ".sluice-leader.1.1.1.1.0": func(ctx context.Context) error {
			return wnc.Publish("$JS.ACK."+protocol.StreamTriggers+".sluice-leader.1.1.1.1.0", nil)
		},
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(denied))
	for subj, call := range denied {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
			defer ccancel()
			err := call(cctx)
			for !v.has(subj) {
				select {
				case <-ctx.Done():
					errs <- errors.New("no permission violation reported for " + subj)
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
			if err == nil && subj[:8] != "$JS.ACK." {
				errs <- errors.New(subj + " answered")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// Everything is still there: the streams, their messages, the task
	// consumer; no stream was made.
	for name, want := range map[string]uint64{protocol.StreamTasks: 1, protocol.StreamTriggers: 1, protocol.StreamCDC: 3, latest: 2} {
		s, err := cjs.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs != want {
			t.Errorf("%s holds %d messages, want %d", name, info.State.Msgs, want)
		}
		if name == latest && (len(info.Config.Subjects) != 1 || info.Config.Subjects[0] != latestSubjects) {
			t.Errorf("%s's subjects are %q", name, info.Config.Subjects)
		}
	}
	if _, err := cjs.Consumer(ctx, protocol.StreamTasks, protocol.ConsumerWorkers); err != nil {
		t.Errorf("the task consumer: %v", err)
	}
	if c, err := cjs.Consumer(ctx, protocol.StreamCDC, name); err != nil || c.CachedInfo().Config.FilterSubject != "sluice.cdc.up.>" {
		t.Errorf("the cdc_apply consumer: %v", err)
	}
	if _, err := cjs.Stream(ctx, "EVIL"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("the worker's stream: %v", err)
	}
	for _, s := range []string{protocol.StreamTasks, protocol.StreamCDC, latest} {
		st, err := cjs.Stream(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		names := st.ConsumerNames(ctx)
		for n := range names.Name() {
			if n == "evil" {
				t.Errorf("the worker made a consumer on %s", s)
			}
		}
	}
}

func getMsg(ctx context.Context, js jetstream.JetStream, stream string) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	_, err = s.GetMsg(ctx, 1)
	return err
}

func createConsumer(ctx context.Context, js jetstream.JetStream, stream, filter string) error {
	_, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: "evil", FilterSubject: filter})
	return err
}
