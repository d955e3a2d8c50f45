package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/natsauth"
	"github.com/sluicehq/sluice/protocol"
)

// sluice runs one command in-process as a user would type it and returns
// what it printed.
func sluice(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	var o, e bytes.Buffer
	err = run(ctx, args, &o, &e)
	return o.String(), e.String(), err
}

// withCluster runs body against an all-in-one cluster of one worker in a
// temporary directory; root is a directory for the test's files.
func withCluster(t *testing.T, body func(ctx context.Context, l *local, root string)) {
	t.Helper()
	runCluster(t, newRegistry(), 1, body)
}

// runCluster runs body against an all-in-one cluster of workers with the
// HTTP API, its connectors in reg.
func runCluster(t *testing.T, reg *connectors.Registry, workers int, body func(ctx context.Context, l *local, root string)) {
	t.Helper()
	root := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// The cluster's server requires a user of a role: the commands the
	// test runs connect as its admin.
	t.Setenv("SLUICE_NATS_NKEY", natsauth.SeedFile(filepath.Join(root, ".sluice", devcluster.KeyDir), natsauth.RoleAdmin))
	err := runLocal(ctx, localConfig{
		Config: devcluster.Config{DataDir: filepath.Join(root, ".sluice"), Workers: workers, Slots: 2,
			Log: log, Tracer: noop.NewTracerProvider(), Registry: reg, Roles: true, Sign: true},
		HTTPAddr: "127.0.0.1:0",
	}, func(ctx context.Context, l *local) error {
		body(ctx, l, root)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// writeSpec writes a spec file and returns its path.
func writeSpec(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// filesSpec is a full load of in (absolute) into out.
func filesSpec(name, in, out string) string {
	return fmt.Sprintf("name: %s\npattern: full_load\nsource: {kind: files, path: %s, format: jsonl}\nsink: {kind: files, path: %s, format: jsonl}\npartitioning: {max_files: 2}\n", name, in, out)
}

// Item 1: flags before or after the arguments, leftover arguments refused,
// the old single-dash spellings, --output on every read command, version,
// help and completion of pipeline names from the cluster.
func TestCLIFlagsAnywhereAndOutput(t *testing.T) {
	t.Setenv("SLUICE_NATS", "")
	withCluster(t, func(ctx context.Context, l *local, root string) {
		in := filepath.Join(root, "in")
		if _, err := generateEvents(in, 600, 3); err != nil {
			t.Fatal(err)
		}
		spec := writeSpec(t, root, "events.yaml", filesSpec("events", in, filepath.Join(root, "out")))
		url := l.NATSURL
		if _, _, err := sluice(ctx, "apply", "-f", spec, "--nats", url); err != nil {
			t.Fatal(err)
		}
		// Flags after the pipeline name are honoured: --wait waits.
		out, _, err := sluice(ctx, "run", "--timeout", "20s", "events", "--wait", "--nats", url)
		if err != nil || !strings.Contains(out, "committed: 600 rows") {
			t.Fatalf("run --timeout 20s events --wait: %v\n%s", err, out)
		}
		// The flag package's spellings still work.
		if out, _, err := sluice(ctx, "run", "events", "-wait", "-nats", url); err != nil || !strings.Contains(out, "committed") {
			t.Fatalf("run events -wait -nats: %v\n%s", err, out)
		}
		var ue *usageError
		if _, _, err := sluice(ctx, "run", "events", "more", "--nats", url); !errors.As(err, &ue) || !strings.Contains(err.Error(), "one pipeline only") {
			t.Errorf("run with two names: %v; want a usage error", err)
		}
		if _, _, err := sluice(ctx, "status", "--frobnicate"); !errors.As(err, &ue) || !strings.Contains(err.Error(), "unknown flag: --frobnicate") {
			t.Errorf("unknown flag: %v", err)
		}
		if _, _, err := sluice(ctx, "status", "-o", "yaml", "--nats", url); !errors.As(err, &ue) || !strings.Contains(err.Error(), `--output "yaml": want table or json`) {
			t.Errorf("-o yaml: %v", err)
		}

		// Every read command answers JSON with -o json.
		st, _, err := sluice(ctx, "status", "--nats", url, "-o", "json")
		var sr protocol.StatusReply
		if err != nil || json.Unmarshal([]byte(st), &sr) != nil || len(sr.Runs) != 2 {
			t.Fatalf("status -o json: %v\n%s", err, st)
		}
		runID := sr.Runs[0].RunID
		for _, args := range [][]string{
			{"status", "--run", runID}, {"status", "events", "--json"}, {"status", "--run", runID, "--wait"},
			{"pipelines", "list"}, {"pipelines", "get", "events"}, {"cdc", "status"}, {"dlq", "list"},
		} {
			out, _, err := sluice(ctx, append(args, "--nats", url, "-o", "json")...)
			if err != nil || !json.Valid([]byte(out)) {
				t.Errorf("%v -o json: %v\n%s", args, err, out)
			}
		}
		if out, _, err := sluice(ctx, "pipelines", "list", "--nats", url); err != nil || !strings.Contains(out, "events") || !strings.Contains(out, "full_load") {
			t.Errorf("pipelines list: %v\n%s", err, out)
		}

		// Item 7: a trigger of an unknown pipeline is refused, not
		// published; a duplicate says one thing: no new run, and which.
		if _, _, err := sluice(ctx, "trigger", "nosuch", "--nats", url); err == nil || !strings.Contains(err.Error(), `pipeline "nosuch" not found: nothing published`) {
			t.Errorf("trigger nosuch: %v", err)
		}
		out, _, err = sluice(ctx, "trigger", "events", "--id", "upload-1", "--nats", url)
		if err != nil || !strings.Contains(out, "run events-000003 started") {
			t.Fatalf("trigger events: %v\n%s", err, out)
		}
		out, _, err = sluice(ctx, "trigger", "events", "--id", "upload-1", "--nats", url)
		if err != nil || !strings.Contains(out, "duplicate trigger: id upload-1 was published before") || !strings.Contains(out, "its run is events-000003") || strings.Contains(out, "started") {
			t.Errorf("a duplicate trigger: %v\n%s", err, out)
		}

		// Completion asks the cluster for pipeline names.
		out, _, err = sluice(ctx, "__complete", "run", "--nats", url, "ev")
		if err != nil || !strings.Contains(out, "events\tfull_load") {
			t.Errorf("completion of run ev: %v\n%s", err, out)
		}
		out, _, err = sluice(ctx, "__complete", "status", "--nats", url, "--run", "")
		if err != nil || !strings.Contains(out, runID) {
			t.Errorf("completion of status --run: %v\n%s", err, out)
		}
		// Without a cluster (an address that never answers) it completes
		// nothing, quietly, within its bound.
		start := time.Now()
		out, errOut, err := sluice(ctx, "__complete", "run", "--nats", "nats://10.255.255.1:4222", "")
		if err != nil || strings.Contains(out, "events") || strings.Contains(errOut, "connect") || time.Since(start) > 5*time.Second {
			t.Errorf("completion without a cluster: %v, %q, %q after %s", err, out, errOut, time.Since(start))
		}
	})
	for _, shell := range []string{"bash", "zsh", "fish"} {
		if out, _, err := sluice(context.Background(), "completion", shell); err != nil || !strings.Contains(out, "sluice") {
			t.Errorf("completion %s: %v", shell, err)
		}
	}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, _, err := sluice(context.Background(), args...)
		if err != nil || !strings.HasPrefix(out, "sluice ") || !strings.Contains(out, "commit") || !strings.Contains(out, "go1.") {
			t.Errorf("%v: %v %q", args, err, out)
		}
	}
	out, _, err := sluice(context.Background(), "help", "run")
	if err != nil || !strings.Contains(out, "sluice run <pipeline>") || !strings.Contains(out, "--wait") {
		t.Errorf("help run: %v\n%s", err, out)
	}
}

// Item 2: a file of several documents and a directory of files are
// applied whole; one bad document stores nothing.
func TestApplyDocumentsAndDirectories(t *testing.T) {
	withCluster(t, func(ctx context.Context, l *local, root string) {
		url := l.NATSURL
		dir := filepath.Join(root, "specs")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		writeSpec(t, dir, "ab.yaml", filesSpec("a", "in", "out-a")+"---\n"+filesSpec("b", "in", "out-b"))
		writeSpec(t, dir, "c.yml", filesSpec("c", "in", "out-c"))
		writeSpec(t, dir, "notes.txt", "not a spec")
		bad := writeSpec(t, root, "bad.yaml", filesSpec("d", "in", "out-d")+"---\n"+strings.Replace(filesSpec("e", "in", "out-e"), "full_load", "ful_load", 1))
		_, _, err := sluice(ctx, "apply", "-f", bad, "--nats", url)
		if err == nil || !strings.Contains(err.Error(), "document 2 of 2, line 7") || !strings.Contains(err.Error(), `line 8: pattern: unknown pattern "ful_load"`) {
			t.Fatalf("apply of a file with a bad second document: %v", err)
		}
		out, _, err := sluice(ctx, "apply", "-f", dir, "--nats", url)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"a", "b", "c"} {
			if !strings.Contains(out, "pipeline "+p+" created") {
				t.Errorf("apply -f dir/ printed %q; want %s created", out, p)
			}
		}
		ps, err := l.Client.Pipelines(ctx)
		if err != nil || len(ps) != 3 {
			t.Fatalf("pipelines after the applies: %+v %v; want a, b and c only (d's file had a bad document)", ps, err)
		}
		// Each document is stored as its own spec, its relative paths
		// resolved against the file's directory.
		out, _, err = sluice(ctx, "pipelines", "get", "b", "--nats", url)
		if err != nil || !strings.Contains(out, "name: b") || strings.Contains(out, "name: a") {
			t.Errorf("pipelines get b: %v\n%s", err, out)
		}
		got, err := l.Client.GetPipeline(ctx, "b")
		if err != nil || !strings.Contains(string(got.Spec), filepath.Join(dir, "in")) {
			t.Errorf("b's stored spec: %s %v", got.Spec, err)
		}
	})
}

// Item 4: a client command says where its cluster came from unless the
// user named it, and never falls back to a default URL.
func TestClientSaysWhichCluster(t *testing.T) {
	t.Setenv("SLUICE_NATS", "")
	ctx := context.Background()
	empty := filepath.Join(t.TempDir(), ".sluice")
	_, _, err := sluice(ctx, "status", "--data-dir", empty)
	if err == nil || !strings.Contains(err.Error(), "no cluster to talk to") || strings.Contains(err.Error(), "127.0.0.1:4222") {
		t.Errorf("status without a cluster: %v; want it to say there is none", err)
	}
	withCluster(t, func(ctx context.Context, l *local, root string) {
		dataDir := filepath.Join(root, ".sluice")
		// A client without credentials of its own, run against the dev
		// of its data directory, uses the dev's admin key.
		seed := os.Getenv("SLUICE_NATS_NKEY")
		t.Setenv("SLUICE_NATS_NKEY", "")
		_, errOut, err := sluice(ctx, "status", "--data-dir", dataDir)
		want := fmt.Sprintf("using %s from %s\n", l.NATSURL, filepath.Join(dataDir, "nats.url"))
		if err != nil || errOut != want {
			t.Errorf("status from the dev's nats.url: %v; stderr %q, want %q", err, errOut, want)
		}
		t.Setenv("SLUICE_NATS_NKEY", seed)
		if _, errOut, err := sluice(ctx, "status", "--data-dir", dataDir, "--nats", l.NATSURL); err != nil || errOut != "" {
			t.Errorf("status --nats: %v; stderr %q, want nothing", err, errOut)
		}
		t.Setenv("SLUICE_NATS", l.NATSURL)
		t.Setenv("SLUICE_NATS_NKEY", "")
		if _, _, err := sluice(ctx, "status", "--data-dir", empty); err == nil {
			t.Error("status without credentials was let in")
		}
		t.Setenv("SLUICE_NATS_NKEY", seed)
		if _, errOut, err := sluice(ctx, "status", "--data-dir", empty); err != nil || errOut != "" {
			t.Errorf("status with $SLUICE_NATS: %v; stderr %q, want nothing", err, errOut)
		}
	})
	// A nats.url left by a dev that is gone says so.
	if err := os.MkdirAll(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	writeSpec(t, empty, "nats.url", "nats://127.0.0.1:1\n")
	t.Setenv("SLUICE_NATS", "")
	if _, _, err := sluice(ctx, "status", "--data-dir", empty); err == nil || !strings.Contains(err.Error(), "no longer running") {
		t.Errorf("status with a stale nats.url: %v", err)
	}
}

// A progress line is redrawn only on a terminal; elsewhere (a log, a
// pipe) each line is whole, at most one per interval.
func TestProgressOffTerminal(t *testing.T) {
	var b bytes.Buffer
	p := newProgress(&b)
	for i := range 50 {
		p.update(protocol.RunStatus{State: protocol.RunRunning, Tasks: 50, TasksDone: i})
	}
	p.update(protocol.RunStatus{State: protocol.RunCommitted, Tasks: 50, TasksDone: 50})
	p.done()
	got := b.String()
	if strings.Contains(got, "\r") || strings.Count(got, "\n") != 2 || !strings.Contains(got, "committed 50/50") {
		t.Errorf("progress off a terminal wrote %q; want two whole lines (running, committed)", got)
	}
}

// Item 6: the HTTP API answers JSON everywhere, errors with a code and a
// message in the user's terms; a relative path is refused naming its
// field; a body over the limit is 413.
func TestHTTPAPIErrorsInUserTerms(t *testing.T) {
	withCluster(t, func(ctx context.Context, l *local, root string) {
		call := func(method, path, body string) (int, http.Header, map[string]any) {
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
			var v map[string]any
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" || json.Unmarshal(b, &v) != nil && !json.Valid(b) {
				t.Errorf("%s %s: %d %s with Content-Type %q; want JSON", method, path, resp.StatusCode, b, ct)
			}
			return resp.StatusCode, resp.Header, v
		}
		in := filepath.Join(root, "in")
		if _, err := generateEvents(in, 100, 1); err != nil {
			t.Fatal(err)
		}
		errorIs := func(what string, code int, v map[string]any, wantStatus int, wantCode, wantMsg string) {
			t.Helper()
			msg, _ := v["error"].(string)
			if code != wantStatus || v["code"] != wantCode || !strings.Contains(msg, wantMsg) {
				t.Errorf("%s: %d %v; want %d, code %s, error containing %q", what, code, v, wantStatus, wantCode, wantMsg)
			}
		}
		code, _, v := call("POST", "/v1/pipelines", filesSpec("rel", "in", filepath.Join(root, "out")))
		errorIs("a relative path", code, v, 400, "invalid", "source.path: a relative path")
		if code, _, _ := call("POST", "/v1/pipelines", filesSpec("abs", in, filepath.Join(root, "out"))); code != 200 {
			t.Fatalf("apply with absolute paths: %d", code)
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", l.HTTPURL+"/v1/pipelines", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var ps []protocol.PipelineStatus
		if json.NewDecoder(resp.Body).Decode(&ps) != nil || resp.StatusCode != 200 || len(ps) != 1 || ps[0].Name != "abs" {
			t.Errorf("GET /v1/pipelines: %d %+v", resp.StatusCode, ps)
		}
		resp.Body.Close()
		code, _, v = call("GET", "/v1/nope", "")
		errorIs("an unknown path", code, v, 404, "not_found", "no such endpoint: GET /v1/nope")
		code, h, v := call("PUT", "/v1/status", "")
		errorIs("a method the path does not take", code, v, 405, "method_not_allowed", "PUT /v1/status: method not allowed")
		if !strings.Contains(h.Get("Allow"), "GET") {
			t.Errorf("405 without Allow: %v", h)
		}
		code, _, v = call("POST", "/v1/pipelines", strings.Repeat("#", 2<<20))
		errorIs("a body over the limit", code, v, 413, "too_large", "larger than 1048576 bytes")
		code, _, v = call("POST", "/v1/pipelines/abs/runs", `{"params":{"note":5}}`)
		errorIs("a number for a parameter", code, v, 400, "invalid", "params: want a string, not a number")
		code, _, v = call("POST", "/v1/pipelines/abs/runs", `{"logical_time":"noon"}`)
		errorIs("a bad time", code, v, 400, "invalid", `logical_time: "noon" is not an RFC 3339 time`)
		code, _, v = call("POST", "/v1/pipelines/abs/runs", `{"param":{}}`)
		errorIs("an unknown field", code, v, 400, "invalid", "param: unknown field (known: params, logical_time)")
		code, _, v = call("POST", "/v1/pipelines/abs/backfills", `{"from":"yesterday"}`)
		errorIs("a backfill with a bad body", code, v, 400, "invalid", `from: "yesterday" is not an RFC 3339 time`)
		code, _, v = call("GET", "/v1/runs/nope-000001", "")
		errorIs("an unknown run", code, v, 404, "not_found", `run "nope-000001" not found`)
		for _, body := range []string{"", "[1]"} {
			if code, _, v := call("POST", "/v1/pipelines/abs/rollback", body); code == 200 || v["code"] == nil {
				t.Errorf("rollback with %q: %d %v; want a JSON error", body, code, v)
			}
		}
	})
}
