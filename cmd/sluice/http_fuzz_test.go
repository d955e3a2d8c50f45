package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/protocol"
)

// nullRegistry has one connector kind, "null", that reads nothing and
// writes nothing: a fuzzed spec can be applied and run without touching
// the machine's files or servers.
func nullRegistry() *connectors.Registry {
	reg := connectors.NewRegistry()
	reg.Register(connectors.Connector{Kind: "null",
		Validate: func(config json.RawMessage) error {
			var m map[string]any
			if err := json.Unmarshal(config, &m); err != nil {
				return &connectors.FieldError{Field: "config", Msg: "not an object"}
			}
			return nil
		},
		Source: func(context.Context, json.RawMessage) (connectors.Source, error) { return nullSource{}, nil },
		Sink:   func(context.Context, json.RawMessage) (connectors.Sink, error) { return nullSink{}, nil },
	})
	return reg
}

type nullSource struct{}

func (nullSource) Plan(context.Context, connectors.PlanRequest) (connectors.Plan, error) {
	return connectors.Plan{Partitions: []protocol.Partition{{Key: "all"}}}, nil
}
func (nullSource) Read(context.Context, protocol.Partition, connectors.Emit) error { return nil }
func (nullSource) Close() error                                                    { return nil }

type nullSink struct{}

func (nullSink) OpenTask(context.Context, connectors.TaskRef) (connectors.TaskWriter, error) {
	return nullWriter{}, nil
}
func (nullSink) Commit(context.Context, connectors.CommitRequest) (connectors.CommitResult, error) {
	return connectors.CommitResult{}, nil
}
func (nullSink) Abort(context.Context, string) error { return nil }
func (nullSink) Close() error                        { return nil }

type nullWriter struct{}

func (nullWriter) Write(context.Context, connectors.Batch) error { return nil }
func (nullWriter) Close(context.Context) (connectors.TaskOutput, error) {
	return connectors.TaskOutput{}, nil
}
func (nullWriter) Abort(context.Context) error { return nil }

// FuzzHTTPAPI sends any method, path, body and headers to the HTTP API of
// an all-in-one cluster (connectors that touch nothing). Every answer is
// JSON with a status the API documents, never a 500; without the token
// everything but /healthz is 401; a value `${NAME}` expands to never shows
// in an answer.
func FuzzHTTPAPI(f *testing.F) {
	const token, secret = "fuzz-token", "planted-http-secret"
	f.Setenv("SLUICE_FUZZ_SECRET", secret)
	spec := "name: fz\npattern: full_load\nsource: {kind: null, x: '${SLUICE_FUZZ_SECRET}'}\nsink: {kind: null}\n"
	for _, s := range []struct {
		method, path, body string
		auth               bool
	}{
		{"GET", "/healthz", "", false},
		{"GET", "/v1/status?pipeline=fz&limit=3", "", true},
		{"POST", "/v1/pipelines", spec, true},
		{"POST", "/v1/pipelines", strings.Replace(spec, "null}", "null, format: '${SLUICE_FUZZ_SECRET}'}", 1), true},
		{"POST", "/v1/pipelines", spec, false},
		{"GET", "/v1/pipelines/fz", "", true},
		{"POST", "/v1/pipelines/fz/runs", `{"params":{"a":"b"},"logical_time":"2026-01-01T00:00:00Z"}`, true},
		{"POST", "/v1/pipelines/fz/backfills", `{"from":"2026-01-01T00:00:00Z","to":"2026-01-02T00:00:00Z","concurrency":2}`, true},
		{"POST", "/v1/pipelines/fz/rollback", `{"to":1}`, true},
		{"POST", "/v1/pipelines/fz/compact?dry_run=true", "", true},
		{"POST", "/v1/pipelines/fz/vacuum?dry_run=maybe", "", true},
		{"GET", "/v1/runs/fz-000001", "", true},
		{"GET", "/v1/backfills/x", "", true},
		{"GET", "/v1/cdc", "", true},
		{"DELETE", "/v1/pipelines/fz", "", true},
		{"PUT", "/v1/status", "[1]", true},
	} {
		f.Add(s.method, s.path, []byte(s.body), s.auth, "key-1")
	}

	root := f.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan http.Handler, 1)
	done := make(chan error, 1)
	reg := nullRegistry()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() {
		done <- runLocal(ctx, localConfig{Config: devcluster.Config{DataDir: filepath.Join(root, "cluster"), Workers: 1, Slots: 2,
			Log: log, Tracer: noop.NewTracerProvider(), Registry: reg},
		}, func(ctx context.Context, l *local) error {
			js, err := jetstream.New(l.NC)
			if err != nil {
				return err
			}
			ready <- newAPIHandler(l.Client, js, reg, token, newLagHistory(10), log)
			<-ctx.Done()
			return nil
		})
	}()
	var h http.Handler
	select {
	case h = <-ready:
	case err := <-done:
		cancel()
		f.Fatalf("cluster: %v", err)
	}
	f.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			f.Errorf("cluster: %v", err)
		}
	})
	documented := []int{200, 202, 400, 401, 404, 405, 409, 413, 503}
	f.Fuzz(func(t *testing.T, method, path string, body []byte, auth bool, key string) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer rcancel()
		req, err := http.NewRequestWithContext(rctx, method, "http://sluice.test"+path, strings.NewReader(string(body)))
		if err != nil {
			return // not a request a client can send
		}
		if auth {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		res := rec.Result()
		b, _ := io.ReadAll(res.Body)
		if !slices.Contains(documented, res.StatusCode) {
			t.Fatalf("%s %s: status %d %s", method, path, res.StatusCode, b)
		}
		if ct := res.Header.Get("Content-Type"); ct != "application/json" || !json.Valid(b) {
			t.Fatalf("%s %s: %d answered %q with Content-Type %q; want JSON", method, path, res.StatusCode, b, ct)
		}
		if !auth && req.URL.Path != "/healthz" && res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s %s without the token: %d %s", method, path, res.StatusCode, b)
		}
		if strings.Contains(string(b), secret) {
			t.Fatalf("%s %s: the answer shows the value of SLUICE_FUZZ_SECRET: %s", method, path, b)
		}
	})
}
