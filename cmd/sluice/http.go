package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/nats-io/nats.go/jetstream"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// newAPIHandler serves the HTTP API. Every call goes through the NATS
// control API, so any node serves it, whoever the leader is.
//
//	GET  /healthz
//	GET  /v1/status[?pipeline=NAME&limit=N]
//	POST /v1/pipelines                 body: a pipeline spec in YAML
//	GET  /v1/pipelines/{name}          the stored spec, ${ENV} references unexpanded
//	POST /v1/pipelines/{name}/rollback  body: {"to":N} (optional); header Idempotency-Key rolls back once
//	POST /v1/pipelines/{name}/compact[?dry_run=true]  a compaction of its dataset; header Idempotency-Key starts one
//	POST /v1/pipelines/{name}/vacuum[?dry_run=true]
//	POST /v1/pipelines/{name}/runs     body: {"params":{...},"logical_time":"RFC 3339"} (optional);
//	                                   publishes a trigger; header Idempotency-Key is its message id
//	POST /v1/pipelines/{name}/backfills  body: {"from":"RFC 3339","to":"RFC 3339","concurrency":N,"replace":false}
//	GET  /v1/backfills/{id}
//	GET  /v1/runs/{id}
func newAPIHandler(c *coordinator.Client, js jetstream.JetStream, reg *connectors.Registry, token string, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		st, err := c.Status(r.Context(), protocol.StatusRequest{Pipeline: r.URL.Query().Get("pipeline"), Limit: limit})
		reply(w, log, st, err)
	})
	mux.HandleFunc("GET /v1/cdc", func(w http.ResponseWriter, r *http.Request) {
		st, err := c.CDCStatus(r.Context())
		reply(w, log, st, err)
	})
	mux.HandleFunc("POST /v1/pipelines", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			reply(w, log, nil, err)
			return
		}
		spec, err := pipeline.Load(body, "request body", reg, nil)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, protocol.APIError{Error: err.Error(), Code: "invalid"})
			return
		}
		if wd, err := os.Getwd(); err == nil {
			_ = spec.ResolvePaths(wd)
		}
		res, err := c.Apply(r.Context(), spec)
		reply(w, log, res, err)
	})
	mux.HandleFunc("GET /v1/pipelines/{name}", func(w http.ResponseWriter, r *http.Request) {
		res, err := c.GetPipeline(r.Context(), r.PathValue("name"))
		reply(w, log, res, err)
	})
	mux.HandleFunc("POST /v1/pipelines/{name}/rollback", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			To int64 `json:"to"`
		}
		if r.ContentLength != 0 {
			dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&body); err != nil && !errors.Is(err, io.EOF) {
				writeJSON(w, http.StatusBadRequest, protocol.APIError{Error: "request body: " + err.Error() + ` (want {"to": N} or nothing)`, Code: "invalid"})
				return
			}
		}
		res, err := c.Rollback(r.Context(), protocol.RollbackRequest{Pipeline: r.PathValue("name"), To: body.To, RequestID: r.Header.Get("Idempotency-Key")})
		reply(w, log, res, err)
	})
	mux.HandleFunc("POST /v1/pipelines/{name}/compact", func(w http.ResponseWriter, r *http.Request) {
		res, err := c.Compact(r.Context(), protocol.CompactRequest{Pipeline: r.PathValue("name"),
			DryRun: r.URL.Query().Get("dry_run") == "true", RequestID: r.Header.Get("Idempotency-Key")})
		reply(w, log, res, err)
	})
	mux.HandleFunc("POST /v1/pipelines/{name}/vacuum", func(w http.ResponseWriter, r *http.Request) {
		res, err := c.Vacuum(r.Context(), protocol.VacuumRequest{Pipeline: r.PathValue("name"), DryRun: r.URL.Query().Get("dry_run") == "true"})
		reply(w, log, res, err)
	})
	mux.HandleFunc("DELETE /v1/pipelines/{name}", func(w http.ResponseWriter, r *http.Request) {
		res, err := c.Delete(r.Context(), r.PathValue("name"))
		reply(w, log, res, err)
	})
	mux.HandleFunc("POST /v1/pipelines/{name}/runs", func(w http.ResponseWriter, r *http.Request) {
		// The request becomes a trigger on sluice.trigger.<name>, like any
		// other event: the run keeps its context, and the same
		// Idempotency-Key (the trigger's message id) starts one run.
		name := r.PathValue("name")
		var body struct {
			Params      map[string]string `json:"params"`
			LogicalTime time.Time         `json:"logical_time"`
		}
		if r.ContentLength != 0 {
			dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&body); err != nil && !errors.Is(err, io.EOF) {
				writeJSON(w, http.StatusBadRequest, protocol.APIError{Error: "request body: " + err.Error(), Code: "invalid"})
				return
			}
		}
		pipes, err := c.Pipelines(r.Context())
		if err != nil {
			reply(w, log, nil, err)
			return
		}
		if !slices.ContainsFunc(pipes, func(p protocol.PipelineStatus) bool { return p.Name == name }) {
			writeJSON(w, http.StatusNotFound, protocol.APIError{Error: fmt.Sprintf("pipeline %q not found", name), Code: "not_found"})
			return
		}
		msgID := r.Header.Get("Idempotency-Key")
		if msgID == "" {
			msgID = "http:" + rand.Text()
		}
		ack, err := coordinator.PublishTrigger(r.Context(), js, name, protocol.Trigger{
			Params: body.Params, LogicalTime: body.LogicalTime, EventTime: time.Now().UTC(), Source: "http"}, msgID)
		if err != nil {
			reply(w, log, nil, err)
			return
		}
		res := triggerReply{MsgID: msgID, StreamSeq: ack.Sequence, Duplicate: ack.Duplicate}
		res.RunID, res.Tasks = waitTriggeredRun(r.Context(), c, name, msgID, 15*time.Second)
		writeJSON(w, http.StatusAccepted, res)
	})
	mux.HandleFunc("POST /v1/pipelines/{name}/backfills", func(w http.ResponseWriter, r *http.Request) {
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.DisallowUnknownFields()
		var body struct {
			From        time.Time `json:"from"`
			To          time.Time `json:"to"`
			Concurrency int       `json:"concurrency"`
			Replace     bool      `json:"replace"`
		}
		if err := dec.Decode(&body); err != nil {
			writeJSON(w, http.StatusBadRequest, protocol.APIError{Error: "request body: " + err.Error() + ` (want {"from": RFC 3339, "to": RFC 3339, "concurrency": N, "replace": bool})`, Code: "invalid"})
			return
		}
		res, err := c.Backfill(r.Context(), protocol.BackfillRequest{Pipeline: r.PathValue("name"), From: body.From, To: body.To,
			Concurrency: body.Concurrency, Replace: body.Replace, RequestID: r.Header.Get("Idempotency-Key")})
		if err == nil {
			writeJSON(w, http.StatusAccepted, res)
			return
		}
		reply(w, log, nil, err)
	})
	mux.HandleFunc("GET /v1/backfills/{id}", func(w http.ResponseWriter, r *http.Request) {
		st, err := c.GetBackfill(r.Context(), r.PathValue("id"))
		reply(w, log, st, err)
	})
	mux.HandleFunc("GET /v1/runs/{id}", func(w http.ResponseWriter, r *http.Request) {
		st, err := c.GetRun(r.Context(), r.PathValue("id"))
		reply(w, log, st, err)
	})
	if token == "" {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			got := r.Header.Get("Authorization")
			if subtle.ConstantTimeCompare([]byte(got), []byte("Bearer "+token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
				writeJSON(w, http.StatusUnauthorized, protocol.APIError{Error: "missing or wrong bearer token", Code: "unauthorized"})
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

func reply(w http.ResponseWriter, log *slog.Logger, v any, err error) {
	if err == nil {
		writeJSON(w, http.StatusOK, v)
		return
	}
	status, code := http.StatusInternalServerError, "internal"
	var apiErr *coordinator.APIError
	if errors.As(err, &apiErr) {
		code = apiErr.Code
		switch apiErr.Code {
		case "invalid":
			status = http.StatusBadRequest
		case "not_found":
			status = http.StatusNotFound
		case "conflict":
			status = http.StatusConflict
		}
	} else if errors.Is(err, context.DeadlineExceeded) {
		status, code = http.StatusServiceUnavailable, "unavailable"
	}
	if status >= 500 {
		log.Warn("http api", "err", err)
	}
	writeJSON(w, status, protocol.APIError{Error: err.Error(), Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// serveAPI serves the HTTP API on addr (or a free port of its host when
// addr is taken) until the returned stop is called; url is where it listens.
func serveAPI(ctx context.Context, addr string, c *coordinator.Client, js jetstream.JetStream, reg *connectors.Registry, token string, log *slog.Logger) (url string, stop func(), err error) {
	ln, err := listenOrFree(addr)
	if err != nil {
		return "", nil, err
	}
	url = "http://" + ln.Addr().String()
	srv := &http.Server{Handler: newAPIHandler(c, js, reg, token, log), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http api stopped", "err", err)
		}
	}()
	log.Info("http api listening", "url", url)
	return url, func() {
		_ = waitShutdown(ctx, 5*time.Second, srv.Shutdown)
		<-done
	}, nil
}

// listenOrFree listens on addr, or on a free port of the same host when
// addr's port is taken.
func listenOrFree(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		return ln, nil
	}
	host, _, splitErr := net.SplitHostPort(addr)
	if splitErr != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	ln, err2 := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err2 != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}

// localConfig configures `sluice dev` and `sluice demo`: an all-in-one
// cluster, with the HTTP API when HTTPAddr is set.
type localConfig struct {
	devcluster.Config
	HTTPAddr string
	APIToken string
}

// local is a running all-in-one cluster.
type local struct {
	*devcluster.Cluster
	HTTPURL string
}

// runLocal runs an all-in-one cluster with the HTTP API around body.
func runLocal(ctx context.Context, cfg localConfig, body func(ctx context.Context, l *local) error) error {
	return devcluster.Run(ctx, cfg.Config, func(ctx context.Context, c *devcluster.Cluster) error {
		l := &local{Cluster: c}
		if cfg.HTTPAddr != "" {
			js, err := jetstream.New(c.NC)
			if err != nil {
				return err
			}
			url, stop, err := serveAPI(ctx, cfg.HTTPAddr, c.Client, js, cfg.Registry, cfg.APIToken, cfg.Log)
			if err != nil {
				return err
			}
			defer stop()
			l.HTTPURL = url
		}
		return body(ctx, l)
	})
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

// waitTriggeredRun waits up to d for the run the trigger with msgID
// started, and returns it; "" when none showed (a pipeline up to date, or
// a leader still electing: the trigger stays queued and will start it).
func waitTriggeredRun(ctx context.Context, c *coordinator.Client, pipeline, msgID string, d time.Duration) (string, int) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		st, err := c.Status(ctx, protocol.StatusRequest{Pipeline: pipeline, Limit: 50})
		if err == nil {
			for _, r := range st.Runs {
				if r.Trigger != nil && r.Trigger.MsgID == msgID && r.State != protocol.RunPlanning {
					return r.RunID, r.Tasks
				}
			}
		}
		select {
		case <-ctx.Done():
			return "", 0
		case <-time.After(100 * time.Millisecond):
		}
	}
}
