package natsauth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/protocol"
)

// startServer starts a nats-server from the configuration ServerConfig
// writes for a user of each role, their seeds in dir.
func startServer(t *testing.T, dir string) string {
	t.Helper()
	users, err := EnsureKeys(filepath.Join(dir, "keys"), Roles)
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nats.conf")
	text := ServerConfig{StoreDir: filepath.Join(dir, "js"), Users: users}.Text()
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("the configuration does not parse: %v\n%s", err, text)
	}
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(srv.Shutdown)
	return srv.ClientURL()
}

// violations collects the permission violations a connection is told of.
type violations struct {
	mu   sync.Mutex
	subj []string
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(err.Error(), "Permissions Violation") {
		v.mu.Lock()
		v.subj = append(v.subj, err.Error())
		v.mu.Unlock()
	}
}

func (v *violations) has(subject string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, s := range v.subj {
		if strings.Contains(s, `"`+subject+`"`) {
			return true
		}
	}
	return false
}

func connectAs(t *testing.T, url, dir string, role Role, v *violations) *nats.Conn {
	t.Helper()
	opt, err := NKeyOption(SeedFile(filepath.Join(dir, "keys"), role))
	if err != nil {
		t.Fatal(err)
	}
	opts := []nats.Option{opt, nats.Name(string(role))}
	if v != nil {
		opts = append(opts, nats.ErrorHandler(v.handler))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TestTriggerPublisherCannotForge connects a user of each role to a
// nats-server configured by ServerConfig and checks what the
// trigger-publisher and worker roles may publish: a trigger publisher
// publishes triggers and nothing else (no task, result, heartbeat, API
// request or advisory); a worker cannot publish a task, a trigger or an
// API request other than a lease renewal. Nothing denied reaches a
// subscriber or a stream.
func TestTriggerPublisherCannotForge(t *testing.T) {
	dir := t.TempDir()
	url := startServer(t, dir)
	coord := connectAs(t, url, dir, RoleCoordinator, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(coord)
	if err != nil {
		t.Fatal(err)
	}
	for name, subj := range map[string]string{protocol.StreamTasks: protocol.SubjectTasksAll, protocol.StreamResults: protocol.SubjectResultsAll, protocol.StreamTriggers: protocol.SubjectTriggersAll} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}}); err != nil {
			t.Fatal(err)
		}
	}
	// The coordinator sees every message published in the account.
	got := make(chan string, 100)
	sub, err := coord.Subscribe(">", func(m *nats.Msg) {
		if !strings.HasPrefix(m.Subject, "$JS.") && !strings.HasPrefix(m.Subject, "_INBOX.") {
			got <- m.Subject
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := coord.Flush(); err != nil {
		t.Fatal(err)
	}

	forged := []string{
		protocol.TaskSubject("p", "p-000001"),
		protocol.ResultSubject("p"),
		protocol.SubjectHeartbeat,
		protocol.APISubject(protocol.VerbApply),
		protocol.APISubject(protocol.VerbStatus),
		protocol.APISubject(protocol.VerbLeaseRenew),
		protocol.WorkerStreamSubject("w1"),
		"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + protocol.StreamTasks + "." + protocol.ConsumerWorkers,
		"$JS.API.STREAM.PURGE." + protocol.StreamTasks,
	}
	cases := []struct {
		role    Role
		denied  []string
		allowed string // published last: once it arrives, anything denied before it would have too
	}{
		{RoleTrigger, forged, protocol.TriggerSubject("p")},
		{RoleWorker, []string{protocol.TaskSubject("p", "p-000001"), protocol.TriggerSubject("p"),
			protocol.APISubject(protocol.VerbApply), protocol.APISubject(protocol.VerbStatus),
			"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + protocol.StreamTasks + "." + protocol.ConsumerWorkers,
			"$JS.API.STREAM.PURGE." + protocol.StreamTasks}, protocol.ResultSubject("p")},
		{RoleObserver, []string{protocol.TriggerSubject("p"), protocol.APISubject(protocol.VerbApply),
			protocol.APISubject(protocol.VerbDelete), protocol.ResultSubject("p")}, protocol.APISubject(protocol.VerbStatus)},
		{RoleAdmin, []string{protocol.TaskSubject("p", "p-000001"), protocol.ResultSubject("p"), protocol.SubjectHeartbeat,
			protocol.APISubject(protocol.VerbLeaseRenew)}, protocol.APISubject(protocol.VerbApply)},
	}
	for _, c := range cases {
		var v violations
		nc := connectAs(t, url, dir, c.role, &v)
		for _, s := range c.denied {
			if err := nc.Publish(s, []byte(`{"forged":true}`)); err != nil {
				t.Fatal(err)
			}
		}
		if err := nc.Publish(c.allowed, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		select {
		case s := <-got:
			if s != c.allowed {
				t.Fatalf("%s: %s reached a subscriber", c.role, s)
			}
		case <-ctx.Done():
			t.Fatalf("%s: the allowed %s never arrived", c.role, c.allowed)
		}
		for _, s := range c.denied {
			// The server tells the client of each violation after it
			// dropped the message; wait for the notice.
			for !v.has(s) {
				select {
				case <-ctx.Done():
					t.Fatalf("%s: no permission violation reported for %s (got %v)", c.role, s, v.subj)
				case <-time.After(10 * time.Millisecond):
				}
			}
		}
		// Through JetStream: a trigger publisher's task is refused and
		// never stored.
		if c.role == RoleTrigger {
			tjs, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
			if _, err := tjs.Publish(pctx, protocol.TaskSubject("p", "p-000002"), []byte(`{}`)); err == nil {
				t.Fatal("a trigger publisher published a task through JetStream")
			}
			pcancel()
			if _, err := tjs.Publish(ctx, protocol.TriggerSubject("p"), []byte(`{}`)); err != nil {
				t.Fatalf("a trigger publisher cannot publish a trigger: %v", err)
			}
			<-got
		}
	}
	for _, s := range []string{protocol.StreamTasks, protocol.StreamResults} {
		st, err := js.Stream(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := uint64(0)
		if s == protocol.StreamResults {
			want = 1 // the worker's
		}
		if info.State.Msgs != want {
			t.Errorf("%s holds %d messages, want %d", s, info.State.Msgs, want)
		}
	}
	// No user of a role may connect without its key.
	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Fatal("an anonymous client connected")
	}
}
