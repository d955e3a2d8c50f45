package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// maxBody bounds a request body; a larger one is answered 413.
const maxBody = 1 << 20

// API error codes the HTTP API adds to the control API's (invalid,
// not_found, conflict, not_leader, internal).
const (
	codeUnauthorized     = "unauthorized"
	codeForbidden        = "forbidden"
	codeMethodNotAllowed = "method_not_allowed"
	codeTooLarge         = "too_large"
	codeUnavailable      = "unavailable"
)

// api serves the HTTP API. Every call goes through the NATS control API,
// so any node serves it, whoever the leader is.
type api struct {
	c   *coordinator.Client
	js  jetstream.JetStream
	reg *connectors.Registry
	lag *lagHistory
	log *slog.Logger
}

// newAPIHandler serves the HTTP API. Every answer is JSON, errors too:
// {"error": "...", "code": "..."}.
//
//	GET    /healthz
//	GET    /v1/status[?pipeline=NAME&limit=N]
//	GET    /v1/cdc                       the streams, as sluice cdc status
//	GET    /v1/pipelines                 the pipelines
//	POST   /v1/pipelines[?check=true&dry_run=true]  body: one pipeline spec in YAML, absolute paths
//	GET    /v1/pipelines/{name}          its status and stored spec, ${ENV} references unexpanded
//	DELETE /v1/pipelines/{name}
//	POST   /v1/pipelines/{name}/rollback  body: {"to":N} (optional); header Idempotency-Key rolls back once
//	POST   /v1/pipelines/{name}/compact[?dry_run=true]  a compaction of its dataset; header Idempotency-Key starts one
//	POST   /v1/pipelines/{name}/vacuum[?dry_run=true]
//	POST   /v1/pipelines/{name}/runs     body: {"params":{...},"logical_time":"RFC 3339"} (optional);
//	                                     publishes a trigger; header Idempotency-Key is its message id
//	POST   /v1/pipelines/{name}/backfills  body: {"from":"RFC 3339","to":"RFC 3339","concurrency":N,"replace":false}
//	GET    /v1/backfills/{id}
//	GET    /v1/runs/{id}
//
// and the web console with its endpoints (routeConsole); lag holds the
// CDC lag samples the console charts.
func newAPIHandler(c *coordinator.Client, js jetstream.JetStream, reg *connectors.Registry, token string, lag *lagHistory, log *slog.Logger) http.Handler {
	a := &api{c: c, js: js, reg: reg, lag: lag, log: log}
	mux := http.NewServeMux()
	a.routeConsole(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		limit := 0
		if s := r.URL.Query().Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				writeError(w, http.StatusBadRequest, codeInvalid, fmt.Sprintf("limit: %q is not an integer of 1 or more", s))
				return
			}
			limit = n
		}
		st, err := c.Status(r.Context(), protocol.StatusRequest{Pipeline: r.URL.Query().Get("pipeline"), Limit: limit})
		a.reply(w, redactStatus(st), err)
	})
	mux.HandleFunc("GET /v1/cdc", func(w http.ResponseWriter, r *http.Request) {
		st, err := c.CDCStatus(r.Context())
		for i := range st.Streams {
			st.Streams[i].Status.Error = connectors.Redact(st.Streams[i].Status.Error)
		}
		a.reply(w, st, err)
	})
	mux.HandleFunc("GET /v1/pipelines", func(w http.ResponseWriter, r *http.Request) {
		ps, err := c.Pipelines(r.Context())
		a.reply(w, ps, err)
	})
	mux.HandleFunc("POST /v1/pipelines", a.apply)
	mux.HandleFunc("GET /v1/pipelines/{name}", func(w http.ResponseWriter, r *http.Request) {
		res, err := c.GetPipeline(r.Context(), r.PathValue("name"))
		if err == nil {
			var spec pipeline.Spec
			if json.Unmarshal(res.Spec, &spec) == nil {
				redactSpec(&spec)
				res.Spec, _ = json.Marshal(spec)
			}
		}
		a.reply(w, res, err)
	})
	mux.HandleFunc("POST /v1/pipelines/{name}/rollback", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			To int64 `json:"to"`
		}
		if !decodeBody(w, r, &body, `{"to": N} or nothing`) {
			return
		}
		res, err := c.Rollback(r.Context(), protocol.RollbackRequest{Pipeline: r.PathValue("name"), To: body.To, RequestID: r.Header.Get("Idempotency-Key")})
		a.reply(w, res, err)
	})
	mux.HandleFunc("POST /v1/pipelines/{name}/compact", func(w http.ResponseWriter, r *http.Request) {
		req := protocol.CompactRequest{Pipeline: r.PathValue("name"), RequestID: r.Header.Get("Idempotency-Key")}
		if !queryBools(w, r, map[string]*bool{"dry_run": &req.DryRun}) {
			return
		}
		res, err := c.Compact(r.Context(), req)
		a.reply(w, res, err)
	})
	mux.HandleFunc("POST /v1/pipelines/{name}/vacuum", func(w http.ResponseWriter, r *http.Request) {
		req := protocol.VacuumRequest{Pipeline: r.PathValue("name")}
		if !queryBools(w, r, map[string]*bool{"dry_run": &req.DryRun}) {
			return
		}
		res, err := c.Vacuum(r.Context(), req)
		a.reply(w, res, err)
	})
	mux.HandleFunc("DELETE /v1/pipelines/{name}", func(w http.ResponseWriter, r *http.Request) {
		res, err := c.Delete(r.Context(), r.PathValue("name"))
		a.reply(w, res, err)
	})
	mux.HandleFunc("POST /v1/pipelines/{name}/runs", a.runs)
	mux.HandleFunc("POST /v1/pipelines/{name}/backfills", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			From        string `json:"from"`
			To          string `json:"to"`
			Concurrency int    `json:"concurrency"`
			Replace     bool   `json:"replace"`
		}
		const want = `{"from": RFC 3339, "to": RFC 3339, "concurrency": N, "replace": true or false}`
		if !decodeBody(w, r, &body, want) {
			return
		}
		from, err1 := parseBodyTime("from", body.From, true)
		to, err2 := parseBodyTime("to", body.To, true)
		if err := errors.Join(err1, err2); err != nil {
			writeError(w, http.StatusBadRequest, codeInvalid, "request body: "+err.Error()+" (want "+want+")")
			return
		}
		res, err := c.Backfill(r.Context(), protocol.BackfillRequest{Pipeline: r.PathValue("name"), From: from, To: to,
			Concurrency: body.Concurrency, Replace: body.Replace, RequestID: r.Header.Get("Idempotency-Key")})
		if err == nil {
			writeJSON(w, http.StatusAccepted, res)
			return
		}
		a.reply(w, nil, err)
	})
	mux.HandleFunc("GET /v1/backfills/{id}", func(w http.ResponseWriter, r *http.Request) {
		st, err := c.GetBackfill(r.Context(), r.PathValue("id"))
		a.reply(w, st, err)
	})
	mux.HandleFunc("GET /v1/runs/{id}", func(w http.ResponseWriter, r *http.Request) {
		st, err := c.GetRun(r.Context(), r.PathValue("id"))
		a.reply(w, redactRun(st), err)
	})
	// A browser's cross-site request that changes something (a POST from
	// another site's page to a dev cluster on loopback, which has no
	// token) is refused: net/http's CSRF protection, by Sec-Fetch-Site or
	// Origin. Programs (curl, the CLI) send neither and are let through.
	csrf := http.NewCrossOriginProtection()
	csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, codeForbidden, "cross-origin request refused: the API takes requests that change something only from its own origin (the console) or from programs")
	}))
	h := csrf.Handler(jsonMisses(mux))
	if token == "" {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" && !consolePublic(r.URL.Path) {
			got := r.Header.Get("Authorization")
			if subtle.ConstantTimeCompare([]byte(got), []byte("Bearer "+token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
				writeError(w, http.StatusUnauthorized, codeUnauthorized, "missing or wrong bearer token: send Authorization: Bearer <token>")
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// queryBools sets each flag the request's query names to its value (true
// or false). A value that is neither is answered 400, and it returns false.
func queryBools(w http.ResponseWriter, r *http.Request, flags map[string]*bool) bool {
	q := r.URL.Query()
	for name, dst := range flags {
		if v := q.Get(name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				writeError(w, http.StatusBadRequest, codeInvalid, fmt.Sprintf("%s: %q is not true or false", name, v))
				return false
			}
			*dst = b
		}
	}
	return true
}

// apply serves POST /v1/pipelines: one spec in YAML. Its paths must be
// absolute: there is no spec file to resolve a relative one against.
func (a *api) apply(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	opts := coordinator.ApplyOptions{}
	if !queryBools(w, r, map[string]*bool{"check": &opts.Check, "dry_run": &opts.DryRun}) {
		return
	}
	specs, err := pipeline.LoadAll(body, "request body", a.reg, nil)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeInvalid, err.Error())
		return
	}
	if len(specs) != 1 {
		writeError(w, http.StatusBadRequest, codeInvalid, fmt.Sprintf("request body: %d pipeline specs: send one per request (sluice apply -f takes a file of several)", len(specs)))
		return
	}
	spec := specs[0]
	if rel := spec.RelativePaths(); len(rel) > 0 {
		writeError(w, http.StatusBadRequest, codeInvalid, fmt.Sprintf(
			"%s: a relative path: the HTTP API has no spec file to resolve it against (the server's working directory is not yours): give an absolute path, or use sluice apply -f, which resolves it against the spec file's directory",
			strings.Join(rel, ", ")))
		return
	}
	res, err := a.c.ApplyWith(r.Context(), spec, opts)
	a.reply(w, res, err)
}

// runs serves POST /v1/pipelines/{name}/runs. The request becomes a
// trigger on sluice.trigger.<name>, like any other event: the run keeps its
// context, and the same Idempotency-Key (the trigger's message id) starts
// one run.
func (a *api) runs(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var body struct {
		Params      map[string]string `json:"params"`
		LogicalTime string            `json:"logical_time"`
	}
	const want = `{"params": {"name": "value", ...}, "logical_time": RFC 3339}, or nothing`
	if !decodeBody(w, r, &body, want) {
		return
	}
	logical, err := parseBodyTime("logical_time", body.LogicalTime, false)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeInvalid, "request body: "+err.Error())
		return
	}
	pipes, err := a.c.Pipelines(r.Context())
	if err != nil {
		a.reply(w, nil, err)
		return
	}
	if !slices.ContainsFunc(pipes, func(p protocol.PipelineStatus) bool { return p.Name == name }) {
		writeError(w, http.StatusNotFound, codeNotFound, fmt.Sprintf("pipeline %q not found", name))
		return
	}
	msgID := r.Header.Get("Idempotency-Key")
	if msgID == "" {
		msgID = "http:" + rand.Text()
	}
	ack, err := coordinator.PublishTrigger(r.Context(), a.js, name, protocol.Trigger{
		Params: body.Params, LogicalTime: logical, EventTime: time.Now().UTC(), Source: "http"}, msgID)
	if err != nil {
		a.reply(w, nil, err)
		return
	}
	res := triggerReply{MsgID: msgID, StreamSeq: ack.Sequence, Duplicate: ack.Duplicate}
	res.RunID, res.Tasks, _ = waitTriggeredRun(r.Context(), a.c, name, msgID, ack.Sequence, 15*time.Second)
	writeJSON(w, http.StatusAccepted, res)
}

// Codes of the control API the HTTP API answers with, as in
// protocol.APIError.
const (
	codeInvalid  = "invalid"
	codeNotFound = "not_found"
	codeInternal = "internal"
)

// reply answers v, or err with the status and code its kind calls for, in
// the user's terms: a refusal of the leader as it said it; no leader as
// 503; secrets redacted.
func (a *api) reply(w http.ResponseWriter, v any, err error) {
	if err == nil {
		writeJSON(w, http.StatusOK, v)
		return
	}
	status, code, msg := http.StatusInternalServerError, codeInternal, err.Error()
	var apiErr *coordinator.APIError
	switch {
	case errors.As(err, &apiErr):
		code = apiErr.Code
		switch apiErr.Code {
		case codeInvalid:
			status = http.StatusBadRequest
		case codeNotFound:
			status = http.StatusNotFound
		case "conflict":
			status = http.StatusConflict
		case "not_leader":
			status = http.StatusServiceUnavailable
		}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		status, code = http.StatusServiceUnavailable, codeUnavailable
		msg = "no coordinator leader answered in time (an election takes a few seconds; is a coordinator running?): " + msg
	}
	if status >= 500 {
		a.log.Warn("http api", "status", status, "err", err)
	}
	writeError(w, status, code, msg)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, protocol.APIError{Error: connectors.Redact(msg), Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// readBody reads a request body of at most maxBody bytes; a larger one is
// answered 413.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Sprintf("request body: larger than %d bytes", tooLarge.Limit))
		return nil, false
	case err != nil:
		writeError(w, http.StatusBadRequest, codeInvalid, "request body: "+err.Error())
		return nil, false
	}
	return b, true
}

// decodeBody decodes a JSON request body into the struct v points to; an
// empty body leaves it as it is. A field v does not have, a value of the
// wrong type or a body that is not a JSON object is answered 400 naming
// the field in the user's terms, with want (what the body may hold).
func decodeBody(w http.ResponseWriter, r *http.Request, v any, want string) bool {
	b, ok := readBody(w, r)
	if !ok {
		return false
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return true
	}
	bad := func(msg string) bool {
		writeError(w, http.StatusBadRequest, codeInvalid, "request body: "+msg+" (want "+want+")")
		return false
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return bad("not a JSON object")
		}
		return bad("not JSON: " + err.Error())
	}
	known := jsonFields(reflect.TypeOf(v).Elem())
	for k := range fields {
		if !slices.Contains(known, k) {
			return bad(fmt.Sprintf("%s: unknown field (known: %s)", k, strings.Join(known, ", ")))
		}
	}
	if err := json.Unmarshal(b, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return bad(connectors.TypeError(te).Error())
		}
		return bad(err.Error())
	}
	return true
}

// jsonFields lists the JSON names of a struct's fields.
func jsonFields(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" {
			name = f.Name
		}
		if name != "-" {
			out = append(out, name)
		}
	}
	return out
}

// parseBodyTime parses an RFC 3339 field of a request body.
func parseBodyTime(field, v string, required bool) (time.Time, error) {
	if v == "" {
		if required {
			return time.Time{}, fmt.Errorf("%s: is required", field)
		}
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %q is not an RFC 3339 time (example: 2026-01-01T00:00:00Z)", field, v)
	}
	return t, nil
}

// jsonMisses answers what mux has no route for in JSON, as every other
// answer: 404 for an unknown path, 405 (with Allow) for a method the path
// does not take.
func jsonMisses(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		rec := &recorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		switch rec.status {
		case http.StatusNotFound:
			writeError(w, http.StatusNotFound, codeNotFound, fmt.Sprintf("no such endpoint: %s %s (the API is under /v1: status, cdc, pipelines, runs, backfills, dlq; the console under /console/)", r.Method, r.URL.Path))
		case http.StatusMethodNotAllowed:
			allow := rec.header.Get("Allow")
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, codeMethodNotAllowed, fmt.Sprintf("%s %s: method not allowed (allowed: %s)", r.Method, r.URL.Path, allow))
		default: // a redirect to the clean path
			for k, v := range rec.header {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.status)
			w.Write(rec.body.Bytes())
		}
	})
}

// recorder keeps what a handler answered.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

// redactRun hides the secrets a run's errors may hold.
func redactRun(r protocol.RunStatus) protocol.RunStatus {
	r.Error = connectors.Redact(r.Error)
	if r.TaskList != nil {
		r.TaskList = slices.Clone(r.TaskList)
		for i := range r.TaskList {
			r.TaskList[i].Error = connectors.Redact(r.TaskList[i].Error)
		}
	}
	return r
}

// redactStatus hides the secrets the runs' errors may hold.
func redactStatus(st protocol.StatusReply) protocol.StatusReply {
	st.Runs = slices.Clone(st.Runs)
	for i := range st.Runs {
		st.Runs[i] = redactRun(st.Runs[i])
	}
	return st
}

// listenAPI listens on addr for the HTTP API. A taken address is an error
// that says so: the API never moves to another port behind the user's
// back (":0" asks for a free one).
func listenAPI(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("HTTP API: %s is in use (another sluice dev or coordinator?): give --http with a free address, or --http 127.0.0.1:0 for any free port (written to <data-dir>/http.url), or --http '' for none", addr)
		}
		return nil, fmt.Errorf("HTTP API: listen on %s: %w", addr, err)
	}
	return ln, nil
}

// serveAPI serves the HTTP API on ln until the returned stop is called.
func serveAPI(ctx context.Context, ln net.Listener, c *coordinator.Client, js jetstream.JetStream, reg *connectors.Registry, token string, log *slog.Logger) (stop func()) {
	lag := newLagHistory(lagKeep)
	srv := &http.Server{Handler: newAPIHandler(c, js, reg, token, lag, log), ReadHeaderTimeout: 10 * time.Second}
	lctx, stopLag := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		lag.run(lctx, c, lagEvery, log)
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http api stopped", "err", err)
		}
	}()
	log.Info("http api listening", "url", "http://"+ln.Addr().String())
	return func() {
		stopLag()
		_ = waitShutdown(ctx, 5*time.Second, srv.Shutdown)
		<-done
		<-sampled
	}
}

// triggerReply answers POST /v1/pipelines/{name}/runs: the trigger that
// was published and, once the leader started it, the run.
type triggerReply struct {
	RunID     string `json:"run,omitempty"`
	Tasks     int    `json:"tasks,omitempty"`
	MsgID     string `json:"msg_id"`
	StreamSeq uint64 `json:"stream_seq"`
	// Duplicate: JetStream had this message id already; the run is the
	// one the first request started.
	Duplicate bool `json:"duplicate,omitempty"`
}
