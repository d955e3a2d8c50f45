package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/telemetry"
)

// syncBuffer is a buffer the cluster's goroutines log into.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Issue 18 item 4: a secret in an environment variable a spec refers to
// shows in no validation error, run status, log or trace, while each of
// them shows the error with the reference the spec wrote. The runs fail in
// the coordinator (planning a source path) and in a worker (writing into a
// regular file).
func TestPlantedSecretNeverEchoes(t *testing.T) {
	const secret = "Pl4nted-s3cret-7f1c"
	root := t.TempDir()
	in := filepath.Join(root, "in")
	if _, err := generateEvents(in, 100, 1); err != nil {
		t.Fatal(err)
	}
	// A sink directory that is a regular file cannot be written.
	if err := os.WriteFile(filepath.Join(root, "out-"+secret), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SLUICE_TEST_SECRET", secret)
	t.Setenv("SLUICE_TEST_SECRET_MISSING", filepath.Join(root, "missing-"+secret))
	t.Setenv("SLUICE_TEST_SECRET_OUT", filepath.Join(root, "out-"+secret))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	traceFile := filepath.Join(root, "traces.jsonl")
	tf, err := os.Create(traceFile)
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	tp, err := telemetry.Setup(ctx, telemetry.Config{Service: "sluice-test", File: tf})
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	var ef envFlags
	reg, log := ef.registry("the test", slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	var shown []string // every response and status the test saw
	err = runLocal(ctx, localConfig{
		Config: devcluster.Config{DataDir: filepath.Join(root, "cluster"), Workers: 1, Slots: 2,
			Log: log, Tracer: tp, Registry: reg},
		HTTPAddr: "127.0.0.1:0",
	}, func(ctx context.Context, l *local) error {
		call := func(method, path, body string) (int, string) {
			t.Helper()
			req, err := http.NewRequestWithContext(ctx, method, l.HTTPURL+path, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			shown = append(shown, string(b))
			return resp.StatusCode, string(b)
		}
		spec := func(name, in, format, out string) string {
			return fmt.Sprintf("name: %s\npattern: full_load\nretry:\n  max_attempts: 1\nsource:\n  kind: files\n  path: %s\n  format: %s\nsink:\n  kind: files\n  path: %s\n",
				name, in, format, out)
		}
		// A validation error quotes the reference, not the value.
		code, body := call("POST", "/v1/pipelines", spec("v", in, "${SLUICE_TEST_SECRET}", filepath.Join(root, "out")))
		if code != http.StatusBadRequest || !strings.Contains(body, "source.format") || !strings.Contains(body, "${SLUICE_TEST_SECRET}") {
			t.Errorf("bad format from a variable: %d %s; want 400 quoting ${SLUICE_TEST_SECRET}", code, body)
		}
		// Runs failing in the coordinator and in a worker.
		for _, c := range []struct{ name, ref, spec string }{
			{"plan", "${SLUICE_TEST_SECRET_MISSING}", spec("plan", "${SLUICE_TEST_SECRET_MISSING}", "jsonl", filepath.Join(root, "out"))},
			{"write", "${SLUICE_TEST_SECRET_OUT}", spec("write", in, "jsonl", "${SLUICE_TEST_SECRET_OUT}")},
		} {
			if code, body := call("POST", "/v1/pipelines", c.spec); code != 200 {
				t.Fatalf("apply %s: %d %s", c.name, code, body)
			}
			rr, err := l.Client.Run(ctx, protocol.RunRequest{Pipeline: c.name})
			if err != nil {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("run %s: the error shows the secret: %v", c.name, err)
				}
				if !strings.Contains(err.Error(), c.ref) {
					t.Errorf("run %s: %v", c.name, err)
				}
				continue
			}
			st, err := l.Client.WaitRun(ctx, rr.RunID, 50*time.Millisecond, nil)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := json.Marshal(st)
			shown = append(shown, string(raw))
			if st.State != protocol.RunFailed || !strings.Contains(string(raw), c.ref) {
				t.Errorf("run %s: %s; want failed naming %s", c.name, raw, c.ref)
			}
			_, body := call("GET", "/v1/runs/"+rr.RunID, "")
			_, _ = call("GET", "/v1/status", "")
			if !strings.Contains(body, c.ref) {
				t.Errorf("GET run %s: %s; want its error naming %s", c.name, body, c.ref)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	traces, err := os.ReadFile(traceFile)
	if err != nil {
		t.Fatal(err)
	}
	for what, text := range map[string]string{"responses and status": strings.Join(shown, "\n"), "logs": logs.String(), "traces": string(traces)} {
		if strings.Contains(text, secret) {
			i := strings.Index(text, secret)
			t.Errorf("the %s show the secret: ...%s...", what, text[max(0, i-300):min(len(text), i+100)])
		}
	}
	// The failures were recorded, by reference.
	for what, text := range map[string]string{"logs": logs.String(), "traces": string(traces)} {
		if !strings.Contains(text, "SLUICE_TEST_SECRET_OUT") || !strings.Contains(text, "SLUICE_TEST_SECRET_MISSING") {
			t.Errorf("the %s do not show the failures by reference:\n%s", what, text)
		}
	}
}

// Issue 18 item 4: a run records only the trigger headers the cluster
// allows (--trigger-headers) besides Nats-Msg-Id; a producer's credentials
// in another header are not kept.
func TestTriggerHeadersAllowList(t *testing.T) {
	root := t.TempDir()
	in := filepath.Join(root, "in")
	if _, err := generateEvents(in, 100, 1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := runLocal(ctx, localConfig{
		Config: devcluster.Config{DataDir: filepath.Join(root, "cluster"), Workers: 1, Slots: 2,
			Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Tracer: noop.NewTracerProvider(), Registry: newRegistry(),
			TriggerHeaders: []string{"x-request-id"}},
	}, func(ctx context.Context, l *local) error {
		spec, err := pipeline.Load([]byte(filesSpec("hdr", in, filepath.Join(root, "out"))), "hdr.yaml", newRegistry(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Client.Apply(ctx, spec); err != nil {
			t.Fatal(err)
		}
		js, err := jetstream.New(l.NC)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(protocol.TriggerSubject("hdr"))
		m.Header.Set(protocol.HeaderMsgID, "h-1")
		m.Header.Set("X-Request-Id", "req-7")
		m.Header.Set("Authorization", "Bearer producer-credential")
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
		var st protocol.RunStatus
		for deadline := time.Now().Add(30 * time.Second); st.Trigger == nil; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("no triggered run")
			}
			reply, err := l.Client.Status(ctx, protocol.StatusRequest{Pipeline: "hdr"})
			if err == nil && len(reply.Runs) > 0 {
				st = reply.Runs[0]
			}
		}
		want := map[string]string{protocol.HeaderMsgID: "h-1", "X-Request-Id": "req-7"}
		if !maps.Equal(st.Trigger.Headers, want) {
			t.Errorf("recorded headers %v, want %v", st.Trigger.Headers, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
