package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/iceberg"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// The demo a new user runs first: it must load, commit and verify.
func TestDemo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err := run(ctx, []string{"demo", "--dir", dir, "--rows", "40000", "--files", "32"}, &out, &errb)
	if err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errb.String())
	}
	for _, want := range []string{
		"split into 8 bounded tasks",
		"committed dataset version 1: 40000 rows",
		"OK: every source row is in the output exactly once",
		"_SUCCESS",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	// Check the claim independently of the demo's own verification.
	src, err := files.ReadChecksum(filepath.Join(dir, "in"), "jsonl")
	if err != nil {
		t.Fatal(err)
	}
	cur, err := files.Current(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := files.ReadChecksum(cur, "jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if got != src || got.Rows != 40000 {
		t.Fatalf("output %d rows %s, source %d rows %s", got.Rows, got, src.Rows, src)
	}
	// The trace file holds the run's spans: run, plan, 8 tasks, commit.
	traces, err := os.ReadFile(filepath.Join(dir, "traces.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{`"Name":"run"`, `"Name":"plan"`, `"Name":"task"`, `"Name":"commit"`} {
		if !bytes.Contains(traces, []byte(name)) {
			t.Errorf("traces.jsonl has no span %s", name)
		}
	}
	if n := bytes.Count(traces, []byte(`"Name":"task"`)); n < 8 {
		t.Errorf("traces.jsonl has %d task spans, want at least 8", n)
	}
}

// The demo into an Iceberg table: it loads, commits and verifies; the
// table's snapshot holds the source's rows, read independently of the
// demo's own check.
func TestDemoIceberg(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err := run(ctx, []string{"demo", "--sink", "iceberg", "--dir", dir, "--rows", "20000", "--files", "16"}, &out, &errb)
	if err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errb.String())
	}
	for _, want := range []string{"split into 4 bounded tasks", "committed dataset version 1: 20000 rows", "OK: every source row is in the table exactly once", "iceberg_scan("} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	sn, err := iceberg.CurrentSnapshot(ctx, iceberg.Config{Table: "demo.events", Warehouse: filepath.Join(dir, "lake")})
	if err != nil || sn.Rows != 20000 || sn.Files != 4 {
		t.Fatalf("the table's snapshot: %+v %v, want 20000 rows in 4 files", sn, err)
	}
}

// The HTTP API: bearer token, apply with errors naming the line, a run
// started and followed to its commit.
func TestHTTPAPI(t *testing.T) {
	root := t.TempDir()
	in := filepath.Join(root, "in")
	if _, err := generateEvents(in, 3000, 6); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	err := runLocal(ctx, localConfig{
		Config: devcluster.Config{DataDir: filepath.Join(root, "cluster"), Workers: 1, Slots: 2,
			Log: log, Tracer: noop.NewTracerProvider(), Registry: newRegistry()},
		HTTPAddr: "127.0.0.1:0", APIToken: "s3cret",
	}, func(ctx context.Context, l *local) error {
		call := func(method, path, token, body string) (int, []byte) {
			t.Helper()
			req, err := http.NewRequestWithContext(ctx, method, l.HTTPURL+path, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, b
		}
		if code, _ := call("GET", "/healthz", "", ""); code != 200 {
			t.Errorf("healthz: %d", code)
		}
		spec := fmt.Sprintf("name: api\npattern: full_load\nsource: {kind: files, path: %s, format: jsonl}\nsink: {kind: files, path: %s}\npartitioning: {max_files: 2}\n",
			in, filepath.Join(root, "out"))
		if code, _ := call("POST", "/v1/pipelines", "", spec); code != http.StatusUnauthorized {
			t.Errorf("apply without token: %d, want 401", code)
		}
		if code, _ := call("POST", "/v1/pipelines", "wrong", spec); code != http.StatusUnauthorized {
			t.Errorf("apply with a wrong token: %d, want 401", code)
		}
		code, body := call("POST", "/v1/pipelines", "s3cret", strings.Replace(spec, "full_load", "ful_load", 1))
		if code != http.StatusBadRequest || !strings.Contains(string(body), `line 2: pattern: unknown pattern \"ful_load\"`) {
			t.Errorf("bad spec: %d %s; want 400 naming line 2", code, body)
		}
		if code, body := call("POST", "/v1/pipelines", "s3cret", spec); code != 200 {
			t.Fatalf("apply: %d %s", code, body)
		}
		if code, body := call("POST", "/v1/pipelines/nope/runs", "s3cret", ""); code != http.StatusNotFound {
			t.Errorf("run of an unknown pipeline: %d %s; want 404", code, body)
		}
		runReq := func(key string) triggerReply {
			t.Helper()
			req, _ := http.NewRequestWithContext(ctx, "POST", l.HTTPURL+"/v1/pipelines/api/runs", strings.NewReader(`{"params":{"why":"test"}}`))
			req.Header.Set("Authorization", "Bearer s3cret")
			req.Header.Set("Idempotency-Key", key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			var tr triggerReply
			if resp.StatusCode != http.StatusAccepted || json.Unmarshal(b, &tr) != nil {
				t.Fatalf("run: %d %s", resp.StatusCode, b)
			}
			return tr
		}
		rr := runReq("order-42")
		if rr.RunID == "" || rr.Tasks != 3 || rr.MsgID != "order-42" {
			t.Fatalf("run reply %+v; want a run of 3 tasks started by trigger order-42", rr)
		}
		// The same key again: JetStream drops the duplicate, same run.
		if again := runReq("order-42"); !again.Duplicate || again.RunID != rr.RunID {
			t.Fatalf("second request with the same key: %+v; want a duplicate of run %s", again, rr.RunID)
		}
		waitCommitted := func(id string) protocol.RunStatus {
			t.Helper()
			deadline := time.Now().Add(time.Minute)
			for {
				code, body := call("GET", "/v1/runs/"+id, "s3cret", "")
				var st protocol.RunStatus
				if code != 200 || json.Unmarshal(body, &st) != nil {
					t.Fatalf("get run: %d %s", code, body)
				}
				if st.State == protocol.RunCommitted {
					return st
				}
				if st.State == protocol.RunFailed || time.Now().After(deadline) {
					t.Fatalf("run %s: %s %s", id, st.State, st.Error)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		st := waitCommitted(rr.RunID)
		if st.Rows != 3000 || len(st.TaskList) != 3 {
			t.Fatalf("committed run: %d rows, %d tasks; want 3000 and 3", st.Rows, len(st.TaskList))
		}
		// The exposed version holds the source's rows, every column,
		// compared here row by row.
		cur, err := files.Current(filepath.Join(root, "out"))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := jsonlRows(t, cur), jsonlRows(t, in); !slices.Equal(got, want) || len(got) != 3000 {
			t.Fatalf("the exposed version holds %d rows, the source %d, or other rows", len(got), len(want))
		}
		if st.Trigger == nil || st.Trigger.Source != "http" || st.Trigger.Subject != "sluice.trigger.api" {
			t.Fatalf("run's trigger context %+v; want source http on sluice.trigger.api", st.Trigger)
		}

		// The stored spec, and rollback through the leader.
		code, body = call("GET", "/v1/pipelines/api", "s3cret", "")
		var got protocol.PipelineGetReply
		var stored pipeline.Spec
		if code != 200 || json.Unmarshal(body, &got) != nil || json.Unmarshal(got.Spec, &stored) != nil ||
			got.Status.Name != "api" || got.Status.Version != 1 || stored.Text != spec || stored.Sink.Kind != "files" {
			t.Errorf("get pipeline: %d %s; want its status and the spec as applied", code, body)
		}
		if code, body := call("GET", "/v1/pipelines/nope", "s3cret", ""); code != http.StatusNotFound {
			t.Errorf("get of an unknown pipeline: %d %s; want 404", code, body)
		}
		if code, body := call("POST", "/v1/pipelines/api/rollback", "", ""); code != http.StatusUnauthorized {
			t.Errorf("rollback without the token: %d %s; want 401", code, body)
		}
		if code, body := call("POST", "/v1/pipelines/api/rollback", "s3cret", `{"to":"one"}`); code != http.StatusBadRequest {
			t.Errorf("rollback with a bad body: %d %s; want 400", code, body)
		}
		if code, body := call("POST", "/v1/pipelines/api/rollback", "s3cret", ""); code != http.StatusBadRequest || !strings.Contains(string(body), "no kept version older than the exposed version 1") {
			t.Errorf("rollback with one version: %d %s; want 400 saying none is older", code, body)
		}
		if code, body := call("POST", "/v1/pipelines/nope/rollback", "s3cret", ""); code != http.StatusNotFound {
			t.Errorf("rollback of an unknown pipeline: %d %s; want 404", code, body)
		}
		if st := waitCommitted(runReq("order-43").RunID); st.Version != 2 {
			t.Fatalf("second run committed as version %d, want 2", st.Version)
		}
		rollback := func(key string) (int, protocol.RollbackReply) {
			t.Helper()
			req, _ := http.NewRequestWithContext(ctx, "POST", l.HTTPURL+"/v1/pipelines/api/rollback", strings.NewReader(`{"to":1}`))
			req.Header.Set("Authorization", "Bearer s3cret")
			req.Header.Set("Idempotency-Key", key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var rb protocol.RollbackReply
			b, _ := io.ReadAll(resp.Body)
			if err := json.Unmarshal(b, &rb); err != nil {
				t.Fatalf("rollback reply %s: %v", b, err)
			}
			return resp.StatusCode, rb
		}
		if code, rb := rollback("rb-1"); code != 200 || rb.From != 2 || rb.Version != 1 || len(rb.Versions) != 2 || !rb.Versions[0].Exposed {
			t.Fatalf("rollback: %d %+v; want 200, 2 -> 1", code, rb)
		}
		if code, body = call("GET", "/v1/status?pipeline=api", "s3cret", ""); code != 200 || !strings.Contains(string(body), `"version": 1,`) {
			t.Errorf("status right after the rollback: %d %s; want version 1", code, body)
		}
		// The same key again: the first request's answer.
		if code, rb := rollback("rb-1"); code != 200 || rb.From != 2 || rb.Version != 1 {
			t.Errorf("rollback repeated with its key: %d %+v", code, rb)
		}
		// Compaction and vacuum of the pipeline's dataset.
		var dry protocol.CompactReply
		if code, body := call("POST", "/v1/pipelines/api/compact?dry_run=true", "s3cret", ""); code != 200 || json.Unmarshal(body, &dry) != nil || len(dry.Groups) != 1 || dry.RunID != "" {
			t.Errorf("compact dry run: %d %s; want one group, no run", code, body)
		}
		var vac protocol.VacuumReply
		if code, body := call("POST", "/v1/pipelines/api/vacuum?dry_run=true", "s3cret", ""); code != 200 || json.Unmarshal(body, &vac) != nil || !vac.DryRun || len(vac.Kept) != 2 {
			t.Errorf("vacuum dry run: %d %s; want the two versions kept", code, body)
		}
		if code, body := call("POST", "/v1/pipelines/nope/vacuum", "s3cret", ""); code != http.StatusNotFound {
			t.Errorf("vacuum of an unknown pipeline: %d %s; want 404", code, body)
		}
		if code, body := call("POST", "/v1/pipelines/api/backfills", "s3cret", `{"from":"yesterday"}`); code != http.StatusBadRequest {
			t.Errorf("backfill with a bad body: %d %s; want 400", code, body)
		}
		if code, body := call("POST", "/v1/pipelines/nope/backfills", "s3cret", `{"from":"2026-01-01T00:00:00Z","to":"2026-01-02T00:00:00Z"}`); code != http.StatusNotFound {
			t.Errorf("backfill of an unknown pipeline: %d %s; want 404", code, body)
		}
		if code, body := call("POST", "/v1/pipelines/api/backfills", "s3cret", `{"from":"2026-01-01T00:00:00Z","to":"2026-01-02T00:00:00Z"}`); code != http.StatusBadRequest || !strings.Contains(string(body), "incremental") {
			t.Errorf("backfill of a full-load pipeline: %d %s; want 400 saying it needs an incremental pipeline", code, body)
		}
		code, body = call("GET", "/v1/status", "s3cret", "")
		if code != 200 || !strings.Contains(string(body), `"name": "api"`) {
			t.Errorf("status: %d %s", code, body)
		}
		if code, body = call("GET", "/v1/cdc", "s3cret", ""); code != 200 || !strings.Contains(string(body), `"streams": []`) {
			t.Errorf("cdc status without cdc pipelines: %d %s", code, body)
		}
		if code, body = call("DELETE", "/v1/pipelines/api", "", ""); code != http.StatusUnauthorized {
			t.Errorf("delete without the token: %d %s; want 401", code, body)
		}
		if code, body = call("DELETE", "/v1/pipelines/api", "s3cret", ""); code != 200 || !strings.Contains(string(body), `"pipeline": "api"`) {
			t.Errorf("delete: %d %s", code, body)
		}
		if code, body = call("DELETE", "/v1/pipelines/api", "s3cret", ""); code != http.StatusNotFound {
			t.Errorf("delete of a deleted pipeline: %d %s; want 404", code, body)
		}
		if code, body = call("GET", "/v1/status", "s3cret", ""); code != 200 || strings.Contains(string(body), `"name": "api"`) {
			t.Errorf("status after the delete: %d %s; want the pipeline gone", code, body)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// sluice apply checks every file before sending anything and names the
// file, line and field of each problem.
func TestApplyNamesEveryProblem(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("name: good\npattern: full_load\nsource: {kind: files, path: in}\nsink: {kind: files, path: out}\n"), 0o644)
	os.WriteFile(bad, []byte("name: bad\npattern: full_load\nsource:\n  kind: files\n  path: in\n  format: xml\nsink:\n  kind: files\n  keep_versions: -1\n"), 0o644)
	var errb bytes.Buffer
	// No cluster is running: the problems must be found before connecting.
	err := run(context.Background(), []string{"apply", "--nats", "nats://127.0.0.1:1", "-f", good, "-f", bad}, io.Discard, &errb)
	if err == nil {
		t.Fatal("apply accepted a bad spec")
	}
	for _, want := range []string{bad, "line 6: source.format", "sink.path: is required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "connect") {
		t.Errorf("apply tried to connect before every spec was valid: %v", err)
	}
	specs, err := loadSpecs([]string{good}, newRegistry(), nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(specs[0].Source.Config), filepath.Join(dir, "in")) {
		t.Errorf("relative source path not resolved against the spec's directory: %s", specs[0].Source.Config)
	}
}

// Every example spec is valid with this build's connectors, and the
// streamed ones' connector configurations are checked by their kinds:
// the cdc source, the cdc_apply sinks.
func TestExamplesAndStreamedSpecs(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("..", "..", "examples", "*.yaml"))
	if err != nil || len(paths) < 3 {
		t.Fatalf("examples: %v %v", paths, err)
	}
	if _, err := loadSpecs(paths, newRegistry(), nil, io.Discard); err != nil {
		t.Fatalf("the examples do not load: %v", err)
	}
	dir := t.TempDir()
	for _, c := range []struct{ yaml, want string }{
		{"name: a\npattern: cdc\nsource: {kind: postgres, dsn: \"postgres://h/db\"}\n", "source.tables: at least one table is required"},
		{"name: a\npattern: cdc\nsource: {kind: files, path: in}\n", `source.kind: connector "files" cannot be a cdc source (kinds: [postgres])`},
		{"name: a\npattern: cdc_apply\nsource: {kind: cdc, pipeline: up}\nsink: {kind: postgres, dsn: \"postgres://h/db\", schemaa: x}\n", "sink.schemaa"},
		{"name: a\npattern: cdc_apply\nsource: {kind: cdc, pipeline: up}\nsink: {kind: postgres}\n", "sink.dsn: dsn is required"},
		{"name: a\npattern: cdc_apply\nsource: {kind: cdc, pipeline: up}\nsink: {kind: files, path: out, close_after: soon}\n", `sink.close_after: "soon" is not a duration`},
		{"name: a\npattern: cdc_apply\nsource: {kind: cdc, pipeline: up}\nsink: {kind: postgres_cdc_snapshot}\n", `sink.kind: connector "postgres_cdc_snapshot" cannot be a cdc target (kinds: [clickhouse files kafka latest postgres])`},
		// The kinds of the cluster's own snapshot runs are neither offered
		// nor taken.
		{"name: a\npattern: full_load\nsource: {kind: postgres_cdc_snapshot}\nsink: {kind: files, path: out}\n", `source.kind: connector "postgres_cdc_snapshot" cannot be a source (kinds: [files iceberg kafka postgres])`},
		{"name: a\npattern: full_load\nsource: {kind: files, path: in}\nsink: {kind: nowhere}\n", `sink.kind: connector "nowhere" cannot be a sink (kinds: [clickhouse files iceberg kafka postgres])`},
	} {
		p := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(p, []byte(c.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := loadSpecs([]string{p}, newRegistry(), nil, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.yaml, err, c.want)
		}
	}
}

// jsonlRows returns the rows of the JSONL files under dir (hidden files
// and directories left out) in a canonical form (keys sorted, numbers as
// written), sorted: two datasets with the same rows give equal lists.
func jsonlRows(t *testing.T, dir string) []string {
	t.Helper()
	var rows []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir && (strings.HasPrefix(d.Name(), "_") || strings.HasPrefix(d.Name(), ".")) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || !strings.HasSuffix(p, ".jsonl") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		for {
			var v any
			if err := dec.Decode(&v); err == io.EOF {
				break
			} else if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			c, _ := json.Marshal(v)
			rows = append(rows, string(c))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(rows)
	return rows
}
