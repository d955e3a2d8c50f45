// Package devcluster runs a whole Sluice cluster inside one process: an
// embedded NATS server with JetStream, a single-node Raft coordinator and
// workers. It is what `sluice dev` and `sluice demo` run, and what the
// benchmarks measure.
package devcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/embednats"
	"github.com/sluicehq/sluice/worker"
)

// Config configures an all-in-one cluster.
type Config struct {
	DataDir  string
	NATSPort int
	Workers  int
	Slots    int
	Log      *slog.Logger
	Tracer   trace.TracerProvider
	Registry *connectors.Registry
}

// Cluster is a running all-in-one cluster.
type Cluster struct {
	// NATSURL is the embedded server's client URL.
	NATSURL string
	// NC is a connection clients in this process may share.
	NC *nats.Conn
	// Client talks to the coordinator.
	Client  *coordinator.Client
	Workers []*worker.Worker
}

// Run starts an embedded NATS server, a single-node coordinator and the
// workers, calls body, and shuts everything down in order when body returns:
// workers drain first, then the coordinator stops, then NATS. The server's
// URL is written to <DataDir>/nats.url while it runs, for the client
// commands.
func Run(ctx context.Context, cfg Config, body func(ctx context.Context, c *Cluster) error) error {
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
	l := &Cluster{NATSURL: url, NC: clientNC, Client: coordinator.NewClient(clientNC)}

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
		wcfg := worker.Config{ID: fmt.Sprintf("dev-worker-%d", i+1), Slots: cfg.Slots}
		w, err := worker.New(wcfg, nc, cfg.Registry,
			cfg.Log.With("component", "worker"), cfg.Tracer)
		if err != nil {
			return err
		}
		l.Workers = append(l.Workers, w)
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

	bodyErr := body(ctx, l)

	// Shutdown: stop taking work, drain the workers, then the
	// coordinator; NATS stops last (deferred).
	stopWorkers()
	werr := workers.Wait()
	stopCoord()
	perr := parts.Wait()
	return errors.Join(bodyErr, werr, perr)
}
