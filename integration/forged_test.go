package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluicehq/sluice/connectors/builtin"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/natsauth"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/signing"
	"github.com/sluicehq/sluice/worker"
)

// TestForgedMessagesRefused runs a cluster whose NATS server has Sluice's
// roles and whose leader signs what it issues, and plays an attacker on
// the bus: with the coordinator's NATS credentials but not the cluster
// key, it republishes a real task unsigned and with its signature over
// other bytes (a sink of its choosing), sends a worker a stream
// assignment, and as a worker forges "0 rows" results for queued tasks;
// with the admin's, a heartbeat; with the coordinator's, a max-deliveries
// advisory. Each is refused and counted (by the worker, the coordinator,
// or the server's permissions), nothing is read or written for them, the
// run commits only the real tasks' rows once a real worker runs them.
func TestForgedMessagesRefused(t *testing.T) {
	t.Parallel()
	in := writeDataset(t, 4, 50)
	root := t.TempDir()
	out, evil := filepath.Join(root, "out"), filepath.Join(root, "evil")
	dataDir := filepath.Join(root, "dev")
	reg := builtin.Registry()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := devcluster.Config{DataDir: dataDir, Workers: 0, Slots: 2, Log: log, Tracer: noop.NewTracerProvider(),
		Registry: reg, Roles: true, Sign: true}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	keys := filepath.Join(dataDir, devcluster.KeyDir)
	connectAs := func(url string, role natsauth.Role, errs chan<- error) *nats.Conn {
		opt, err := natsauth.NKeyOption(natsauth.SeedFile(keys, role))
		if err != nil {
			t.Fatal(err)
		}
		opts := []nats.Option{opt}
		if errs != nil {
			opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
		}
		nc, err := nats.Connect(url, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for !ok() {
			select {
			case <-ctx.Done():
				t.Fatalf("%s: not within the test's time", what)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	err := devcluster.Run(ctx, cfg, func(ctx context.Context, l *devcluster.Cluster) error {
		y := fmt.Sprintf("name: loads\npattern: full_load\nsource: {kind: files, path: %s, format: jsonl}\nsink: {kind: files, path: %s, format: jsonl}\npartitioning: {max_files: 1}\n", in, out)
		s, err := pipeline.Load([]byte(y), "loads.yaml", reg, nil)
		if err != nil {
			return err
		}
		if _, err := l.Client.Apply(ctx, s); err != nil {
			return err
		}
		rr, err := l.Client.Run(ctx, protocol.RunRequest{Pipeline: "loads"})
		if err != nil {
			return err
		}
		var st protocol.RunStatus
		waitFor("tasks published", func() bool {
			st, err = l.Client.GetRun(ctx, rr.RunID)
			return err == nil && st.Tasks == 4 && len(st.TaskList) == 4
		})

		// Forged results, from a worker's credentials: no task token.
		wnc := connectAs(l.NATSURL, natsauth.RoleWorker, nil)
		wjs, _ := jetstream.New(wnc)
		for _, ts := range st.TaskList {
			b, _ := protocol.Encode(protocol.Result{RunID: rr.RunID, TaskID: ts.TaskID, Pipeline: "loads", Attempt: 1, Worker: "evil"})
			if _, err := wjs.Publish(ctx, protocol.ResultSubject("loads"), b); err != nil {
				return err
			}
		}
		waitFor("forged results counted", func() bool { return l.Coordinator.Forged().Results == 4 })
		if st, _ := l.Client.GetRun(ctx, rr.RunID); st.TasksDone != 0 || st.State != protocol.RunRunning {
			t.Errorf("after forged results the run is %s with %d tasks done", st.State, st.TasksDone)
		}

		// A forged heartbeat (admin) and advisory (coordinator): refused
		// by the server, so the leader never sees them.
		errs := make(chan error, 10)
		anc := connectAs(l.NATSURL, natsauth.RoleAdmin, errs)
		hb, _ := protocol.Encode(protocol.Heartbeat{Worker: "evil"})
		_ = anc.Publish(protocol.SubjectHeartbeat, hb)
		cnc := connectAs(l.NATSURL, natsauth.RoleCoordinator, errs)
		adv, _ := json.Marshal(map[string]any{"stream_seq": 1, "deliveries": 99})
		_ = cnc.Publish("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."+protocol.StreamTasks+"."+protocol.ConsumerWorkers, adv)
		for range 2 {
			select {
			case err := <-errs:
				if !errors.Is(err, nats.ErrPermissionViolation) && !strings.Contains(err.Error(), "Permissions Violation") {
					t.Errorf("forged heartbeat or advisory: %v", err)
				}
			case <-ctx.Done():
				t.Fatal("a forged heartbeat or advisory was not refused")
			}
		}

		// A forged task: a real one taken from the queue, its sink
		// replaced, published unsigned and with the real signature.
		cjs, _ := jetstream.New(cnc)
		stream, err := cjs.Stream(ctx, protocol.StreamTasks)
		if err != nil {
			return err
		}
		raw, err := stream.GetMsg(ctx, 1)
		if err != nil {
			return err
		}
		if raw.Header.Get(protocol.HeaderSignature) == "" {
			t.Fatal("the leader's task carries no signature")
		}
		task, err := protocol.Decode[protocol.Task](raw.Data)
		if err != nil {
			return err
		}
		task.RunID, task.Sink.Config = "loads-999999", json.RawMessage(fmt.Sprintf(`{"path":%q,"format":"jsonl"}`, evil))
		forged, _ := protocol.Encode(task)
		for i, sig := range []string{"", raw.Header.Get(protocol.HeaderSignature)} {
			m := nats.NewMsg(protocol.TaskSubject("loads", task.RunID))
			m.Data = forged
			m.Header.Set(protocol.HeaderMsgID, fmt.Sprintf("forged-%d", i))
			if sig != "" {
				m.Header.Set(protocol.HeaderSignature, sig)
			}
			if _, err := cjs.PublishMsg(ctx, m); err != nil {
				return err
			}
		}

		// A real worker with the cluster's public key: it runs the four
		// real tasks and refuses the two forged ones unread.
		pub, err := signing.LoadVerifier(filepath.Join(dataDir, devcluster.KeyDirCluster, signing.PublicFile))
		if err != nil {
			return err
		}
		w, err := worker.New(worker.Config{ID: "w1", Slots: 2, Verifier: pub}, connectAs(l.NATSURL, natsauth.RoleWorker, nil), reg, log, noop.NewTracerProvider())
		if err != nil {
			return err
		}
		wctx, wcancel := context.WithCancel(ctx)
		wdone := make(chan error, 1)
		go func() { wdone <- w.Run(wctx) }()
		defer func() { wcancel(); <-wdone }()
		final, err := l.Client.WaitRun(ctx, rr.RunID, 50*time.Millisecond, nil)
		if err != nil {
			return err
		}
		if final.State != protocol.RunCommitted {
			t.Fatalf("run %s: %s (%s)", rr.RunID, final.State, final.Error)
		}
		assertSameRows(t, in, out)
		waitFor("forged tasks counted", func() bool { return w.Forged().Tasks == 2 })
		if _, err := os.Stat(evil); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the forged task's sink %s was written (%v)", evil, err)
		}

		// A forged stream assignment: refused, no stream held.
		a, _ := protocol.Encode(protocol.StreamAssignment{Pipeline: "cdc", Pattern: protocol.PatternCDC, Epoch: 1, Lease: time.Minute})
		rep, err := cnc.RequestWithContext(ctx, protocol.WorkerStreamSubject("w1"), a)
		if err != nil {
			return err
		}
		var ar protocol.AssignReply
		if err := json.Unmarshal(rep.Data, &ar); err != nil || ar.OK {
			t.Errorf("forged assignment answered %s", rep.Data)
		}
		if f := w.Forged(); f.Assignments != 1 {
			t.Errorf("forged assignments counted %d, want 1", f.Assignments)
		}
		if f := l.Coordinator.Forged(); f.Results != 4 {
			t.Errorf("forged results counted %d, want 4 (a real result counted as forged?)", f.Results)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
