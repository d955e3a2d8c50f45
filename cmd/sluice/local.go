package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/embednats"
	"github.com/sluicehq/sluice/worker"
)

// localConfig configures an all-in-one cluster in this process.
type localConfig struct {
	DataDir  string
	NATSPort int
	Workers  int
	Slots    int
	// HTTPAddr serves the HTTP API; empty turns it off.
	HTTPAddr string
	APIToken string
	Log      *slog.Logger
	Tracer   trace.TracerProvider
	Registry *connectors.Registry
}

// local is a running all-in-one cluster.
type local struct {
	NATSURL string
	HTTPURL string
	Client  *coordinator.Client
	Workers []*worker.Worker
}

// runLocal starts an embedded NATS server, a single-node coordinator, the
// workers and the HTTP API, calls body, and shuts everything down in order
// when body returns or ctx ends: workers drain first, then the coordinator
// hands over, then NATS stops.
func runLocal(ctx context.Context, cfg localConfig, body func(ctx context.Context, l *local) error) error {
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	ns, err := embednats.Start(embednats.Config{StoreDir: filepath.Join(cfg.DataDir, "jetstream"), Port: cfg.NATSPort})
	if err != nil {
		return err
	}
	defer ns.Shutdown()
	url := ns.ClientURL()
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "nats.url"), []byte(url+"\n"), 0o644); err != nil {
		return fmt.Errorf("write nats.url: %w", err)
	}
	defer os.Remove(filepath.Join(cfg.DataDir, "nats.url"))

	connect := func(name string) (*nats.Conn, error) {
		nc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1))
		if err != nil {
			return nil, fmt.Errorf("connect %s to embedded NATS: %w", name, err)
		}
		return nc, nil
	}
	coordNC, err := connect("sluice-coordinator")
	if err != nil {
		return err
	}
	defer coordNC.Close()
	coord, err := coordinator.New(coordinator.Config{
		NodeID:    "dev",
		DataDir:   filepath.Join(cfg.DataDir, "raft"),
		RaftBind:  "127.0.0.1:0",
		Bootstrap: true,
	}, coordNC, cfg.Registry, cfg.Log.With("component", "coordinator"), cfg.Tracer)
	if err != nil {
		return err
	}
	clientNC, err := connect("sluice-client")
	if err != nil {
		return err
	}
	defer clientNC.Close()
	l := &local{NATSURL: url, Client: coordinator.NewClient(clientNC)}

	var workerNCs []*nats.Conn
	defer func() {
		for _, nc := range workerNCs {
			nc.Close()
		}
	}()
	for i := range cfg.Workers {
		nc, err := connect(fmt.Sprintf("sluice-worker-%d", i+1))
		if err != nil {
			return err
		}
		workerNCs = append(workerNCs, nc)
		w, err := worker.New(worker.Config{ID: fmt.Sprintf("dev-worker-%d", i+1), Slots: cfg.Slots}, nc, cfg.Registry,
			cfg.Log.With("component", "worker"), cfg.Tracer)
		if err != nil {
			return err
		}
		l.Workers = append(l.Workers, w)
	}

	var srv *http.Server
	var ln net.Listener
	if cfg.HTTPAddr != "" {
		ln, err = listenOrFree(cfg.HTTPAddr)
		if err != nil {
			return err
		}
		l.HTTPURL = "http://" + ln.Addr().String()
		srv = &http.Server{Handler: newAPIHandler(l.Client, cfg.Registry, cfg.APIToken, cfg.Log), ReadHeaderTimeout: 10 * time.Second}
	}

	// Each part gets its own context so that shutdown goes in order.
	coordCtx, stopCoord := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCoord()
	workCtx, stopWorkers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorkers()

	var parts errgroup.Group
	parts.Go(func() error { return coord.Run(coordCtx) })
	var workers errgroup.Group
	for _, w := range l.Workers {
		workers.Go(func() error { return w.Run(workCtx) })
	}
	if srv != nil {
		parts.Go(func() error {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http api: %w", err)
			}
			return nil
		})
	}

	bodyErr := body(ctx, l)

	// Shutdown: stop taking work, drain the workers, stop the API, then the
	// coordinator; NATS stops last (deferred).
	stopWorkers()
	werr := workers.Wait()
	if srv != nil {
		_ = waitShutdown(ctx, 5*time.Second, srv.Shutdown)
	}
	stopCoord()
	perr := parts.Wait()
	return errors.Join(bodyErr, werr, perr)
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
