package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/protocol"
)

// The console's page is served without the token (it holds no data) under
// a strict content security policy; every endpoint it reads needs the
// token; the dead-letter endpoints list, show, replay and purge, and say
// not found in the API's terms.
func TestConsoleEndpoints(t *testing.T) {
	root := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	const token = "t0ken"
	err := runLocal(ctx, localConfig{
		Config: devcluster.Config{DataDir: filepath.Join(root, ".sluice"), Workers: 1, Slots: 1,
			Log: log, Tracer: noop.NewTracerProvider(), Registry: newRegistry()},
		HTTPAddr: "127.0.0.1:0", APIToken: token,
	}, func(ctx context.Context, l *local) error {
		noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		call := func(method, path string, auth bool) (*http.Response, string) {
			t.Helper()
			req, err := http.NewRequestWithContext(ctx, method, l.HTTPURL+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if auth {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp, string(b)
		}
		resp, body := call("GET", "/console/", false)
		if resp.StatusCode != 200 || !strings.Contains(body, `<script src="app.js"`) ||
			!strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
			t.Errorf("GET /console/: %d %v %.80s; want the page with a CSP", resp.StatusCode, resp.Header, body)
		}
		for _, asset := range []string{"app.js", "app.css"} {
			if resp, _ := call("GET", "/console/"+asset, false); resp.StatusCode != 200 {
				t.Errorf("GET /console/%s: %d", asset, resp.StatusCode)
			}
		}
		if resp, _ := call("GET", "/", false); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/console/" {
			t.Errorf("GET /: %d to %q; want a redirect to /console/", resp.StatusCode, resp.Header.Get("Location"))
		}
		for _, path := range []string{"/v1/dlq", "/v1/backfills", "/v1/cdc/history", "/console/../v1/status", "/console/%2e%2e/v1/status"} {
			if resp, body := call("GET", path, false); resp.StatusCode == 200 {
				t.Errorf("GET %s without the token: 200 %s", path, body)
			}
		}
		expect := func(method, path string, code int, want string) string {
			t.Helper()
			resp, body := call(method, path, true)
			if resp.StatusCode != code || !strings.Contains(body, want) {
				t.Errorf("%s %s: %d %s; want %d with %q", method, path, resp.StatusCode, body, code, want)
			}
			return body
		}
		expect("GET", "/v1/backfills", 200, `"backfills": []`)
		expect("GET", "/v1/backfills?pipeline=nope", 404, `pipeline \"nope\" not found`)
		expect("GET", "/v1/backfills?limit=x", 400, `limit: \"x\" is not an integer`)
		expect("GET", "/v1/cdc/history", 200, `"every": "10s"`)
		expect("GET", "/v1/dlq", 200, `"total": 0`)
		expect("GET", "/v1/dlq/7", 404, "dead letter 7 not found")
		expect("GET", "/v1/dlq/x", 400, "not a dead letter's sequence number")
		expect("POST", "/v1/dlq/7/replay", 404, "dead letter 7 not found")
		// A browser's request from another site that would change something
		// is refused before it reaches a handler; the console's own (same
		// origin) is served.
		for _, c := range []struct {
			header, value string
			code          int
		}{
			{"Sec-Fetch-Site", "cross-site", http.StatusForbidden},
			{"Origin", "http://evil.example", http.StatusForbidden},
			{"Sec-Fetch-Site", "same-origin", http.StatusNotFound},
		} {
			req, err := http.NewRequestWithContext(ctx, "POST", l.HTTPURL+"/v1/dlq/7/replay", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set(c.header, c.value)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.code {
				t.Errorf("POST with %s: %s: %d %s; want %d", c.header, c.value, resp.StatusCode, b, c.code)
			}
		}

		js, err := jetstream.New(l.NC)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := coordinator.PublishTrigger(ctx, js, "nope", protocol.Trigger{}, "e-1"); err != nil {
			t.Fatal(err)
		}
		var list deadLetters
		deadline := time.Now().Add(30 * time.Second)
		for list.Total == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the trigger of a missing pipeline was not dead-lettered within 30s")
			}
			time.Sleep(100 * time.Millisecond)
			if err := json.Unmarshal([]byte(expect("GET", "/v1/dlq", 200, "")), &list); err != nil {
				t.Fatal(err)
			}
		}
		if len(list.DeadLetters) != 1 || list.DeadLetters[0].Pipeline != "nope" || list.DeadLetters[0].Kind != "trigger" {
			t.Fatalf("dead letters %+v; want the trigger of nope", list)
		}
		seq := list.DeadLetters[0].Seq
		expect("GET", fmt.Sprintf("/v1/dlq/%d", seq), 200, `"pipeline": "nope"`)
		expect("DELETE", fmt.Sprintf("/v1/dlq/%d", seq), 200, fmt.Sprintf(`"purged": %d`, seq))
		expect("GET", fmt.Sprintf("/v1/dlq/%d", seq), 404, "not found")
		expect("GET", "/v1/dlq", 200, `"total": 0`)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The lag history keeps the newest samples of each stream, and forgets a
// stream that is gone.
func TestLagHistory(t *testing.T) {
	h := newLagHistory(3)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	stream := func(name string, lag int64) protocol.StreamInfo {
		return protocol.StreamInfo{Pipeline: name, Status: protocol.StreamStatus{LagBytes: lag, LagTime: time.Duration(lag) * time.Second}}
	}
	for i := range int64(5) {
		h.record(protocol.CDCStatusReply{Streams: []protocol.StreamInfo{stream("a", i), stream("b", 10*i)}}, t0.Add(time.Duration(i)*time.Second))
	}
	got := h.snapshot()
	if a := got.Streams["a"]; len(a) != 3 || a[0].LagBytes != 2 || a[2].LagBytes != 4 || a[2].LagSeconds != 4 || !a[2].Time.Equal(t0.Add(4*time.Second)) {
		t.Fatalf("samples of a %+v; want the newest 3 (lag 2, 3, 4)", a)
	}
	h.record(protocol.CDCStatusReply{Streams: []protocol.StreamInfo{stream("a", 9)}}, t0.Add(time.Minute))
	got = h.snapshot()
	if _, ok := got.Streams["b"]; ok || len(got.Streams["a"]) != 3 || got.Streams["a"][2].LagBytes != 9 {
		t.Fatalf("after b is gone: %+v", got.Streams)
	}
}
