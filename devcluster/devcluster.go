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
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/embednats"
	"github.com/sluicehq/sluice/natsauth"
	"github.com/sluicehq/sluice/signing"
	"github.com/sluicehq/sluice/telemetry"
	"github.com/sluicehq/sluice/worker"
)

// Config configures an all-in-one cluster.
type Config struct {
	DataDir  string
	NATSPort int
	Workers  int
	Slots    int
	// DrainTimeout is how long the workers wait for their in-flight tasks
	// when the cluster stops (0: the worker default).
	DrainTimeout time.Duration
	Log          *slog.Logger
	Tracer       trace.TracerProvider
	Registry     *connectors.Registry
	// TriggerHeaders are the trigger headers runs record
	// (coordinator.Config.TriggerHeaders).
	TriggerHeaders []string
	// Roles makes the embedded server require a user of Sluice's roles
	// (natsauth): the coordinator, the workers and the cluster's own client
	// (the admin role) each connect with the nkey of their role, kept in
	// <DataDir>/nats-keys (made once, mode 0600). A client command run
	// from the same directory uses the admin key. False: no
	// authentication.
	Roles bool
	// Sign makes the coordinator sign tasks, stream assignments and lease
	// grants with a cluster key kept in <DataDir>/cluster-key (made once)
	// and the workers refuse what it did not sign.
	Sign bool
	// Metrics, when set, receives the metrics of the coordinator and of
	// every worker.
	Metrics *telemetry.Metrics
	// Lock is DataDir's lock when the caller took it (LockDir) before
	// Run, and releases it after; nil: Run takes it and releases it.
	Lock *DirLock
}

// URLFile is the file of the data directory that holds the NATS URL of a
// running cluster, for the client commands: written once the cluster's
// leader answers, removed when it stops.
const URLFile = "nats.url"

// KeyDir is the directory of the data directory that holds the nkey seeds
// of a cluster run with Roles, one per role (natsauth.SeedFile).
const KeyDir = "nats-keys"

// KeyDirCluster is the directory of the data directory that holds the
// cluster key of a cluster run with Sign.
const KeyDirCluster = "cluster-key"

// clusterKey reads the cluster's signing key from dataDir, making it
// the first time.
func clusterKey(dataDir string) (*signing.Signer, error) {
	dir := filepath.Join(dataDir, KeyDirCluster)
	s, err := signing.LoadSigner(filepath.Join(dir, signing.PrivateFile))
	if err == nil {
		return s, nil
	}
	if _, serr := os.Stat(filepath.Join(dir, signing.PrivateFile)); serr == nil {
		return nil, err
	}
	if s, err = signing.Generate(); err != nil {
		return nil, err
	}
	if err := s.WriteFiles(dir); err != nil {
		return nil, fmt.Errorf("write the cluster key: %w", err)
	}
	return s, nil
}

// roleConfig writes the embedded server's configuration for Sluice's
// roles, each a user with an nkey kept in dataDir/KeyDir, and returns its
// path and the key directory.
func roleConfig(dataDir string) (conf, keys string, err error) {
	keys = filepath.Join(dataDir, KeyDir)
	users, err := natsauth.EnsureKeys(keys, natsauth.Roles)
	if err != nil {
		return "", "", err
	}
	conf = filepath.Join(dataDir, "nats.conf")
	if err := os.WriteFile(conf, []byte(natsauth.ServerConfig{Users: users}.Text()), 0o600); err != nil {
		return "", "", fmt.Errorf("write %s: %w", conf, err)
	}
	return conf, keys, nil
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
	// Coordinator is the cluster's coordinator, for tests.
	Coordinator *coordinator.Coordinator
}

// Run locks the data directory (a second cluster on it gets a
// *LockedError naming the process that has it), starts an embedded NATS
// server, a single-node coordinator and the workers, waits for the
// coordinator to lead, writes the server's URL to <DataDir>/nats.url for
// the client commands, and calls body. When body returns it shuts
// everything down in order: workers drain first, then the coordinator
// stops, then NATS; nats.url is removed. When ctx ends before the leader
// answers, Run stops without calling body and returns nil.
func Run(ctx context.Context, cfg Config, body func(ctx context.Context, c *Cluster) error) error {
	if cfg.Lock == nil {
		lock, err := LockDir(cfg.DataDir)
		if err != nil {
			return err
		}
		defer lock.Unlock()
	}
	// A file left by a process killed before it could remove it names a
	// server that is gone.
	urlFile := filepath.Join(cfg.DataDir, URLFile)
	if err := os.Remove(urlFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove the stale %s: %w", urlFile, err)
	}
	ncfg := embednats.Config{StoreDir: filepath.Join(cfg.DataDir, "jetstream"), Port: cfg.NATSPort}
	var keys string
	if cfg.Roles {
		var err error
		if ncfg.ConfigFile, keys, err = roleConfig(cfg.DataDir); err != nil {
			return err
		}
	}
	ns, err := embednats.Start(ncfg)
	if err != nil {
		return err
	}
	defer ns.Shutdown()
	url := ns.ClientURL()

	connect := func(name string, role natsauth.Role) (*nats.Conn, error) {
		opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1)}
		if keys != "" {
			opt, err := natsauth.NKeyOption(natsauth.SeedFile(keys, role))
			if err != nil {
				return nil, err
			}
			opts = append(opts, opt)
		}
		nc, err := nats.Connect(url, opts...)
		if err != nil {
			return nil, fmt.Errorf("connect %s to embedded NATS: %w", name, err)
		}
		return nc, nil
	}
	coordNC, err := connect("sluice-coordinator", natsauth.RoleCoordinator)
	if err != nil {
		return err
	}
	defer coordNC.Close()
	var signer *signing.Signer
	var verifier *signing.Verifier
	if cfg.Sign {
		if signer, err = clusterKey(cfg.DataDir); err != nil {
			return err
		}
		verifier = signer.Verifier()
	}
	coord, err := coordinator.New(coordinator.Config{
		Signer:    signer,
		NodeID:    "dev",
		DataDir:   filepath.Join(cfg.DataDir, "raft"),
		RaftBind:  "127.0.0.1:0",
		Bootstrap: true, TriggerHeaders: cfg.TriggerHeaders, Metrics: cfg.Metrics,
	}, coordNC, cfg.Registry, cfg.Log.With("component", "coordinator"), cfg.Tracer)
	if err != nil {
		return err
	}
	clientNC, err := connect("sluice-client", natsauth.RoleAdmin)
	if err != nil {
		return err
	}
	defer clientNC.Close()
	l := &Cluster{NATSURL: url, NC: clientNC, Client: coordinator.NewClient(clientNC), Coordinator: coord}

	var workerNCs []*nats.Conn
	defer func() {
		for _, nc := range workerNCs {
			nc.Close()
		}
	}()
	for i := range cfg.Workers {
		nc, err := connect(fmt.Sprintf("sluice-worker-%d", i+1), natsauth.RoleWorker)
		if err != nil {
			return err
		}
		workerNCs = append(workerNCs, nc)
		wcfg := worker.Config{ID: fmt.Sprintf("dev-worker-%d", i+1), Slots: cfg.Slots, DrainTimeout: cfg.DrainTimeout, Verifier: verifier, Metrics: cfg.Metrics}
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

	coordDone := make(chan error, 1)
	go func() { coordDone <- coord.Run(coordCtx) }()
	var workers errgroup.Group
	for _, w := range l.Workers {
		workers.Go(func() error { return w.Run(workCtx) })
	}

	var bodyErr error
	var coordErr error
	coordEnded := false
	switch err := waitLeader(ctx, l.Client, coordDone); {
	case errors.Is(err, errCoordinatorEnded):
		coordErr, coordEnded = <-coordDone, true
		if coordErr == nil {
			coordErr = err
		}
	case err != nil: // ctx ended first
	default:
		if err := os.WriteFile(urlFile, []byte(url+"\n"), 0o644); err != nil {
			bodyErr = fmt.Errorf("write %s: %w", urlFile, err)
			break
		}
		bodyErr = body(ctx, l)
		os.Remove(urlFile)
	}

	// Shutdown: stop taking work, drain the workers, then the
	// coordinator; NATS stops last (deferred).
	stopWorkers()
	werr := workers.Wait()
	stopCoord()
	if !coordEnded {
		coordErr = <-coordDone
	}
	return errors.Join(bodyErr, werr, coordErr)
}

// errCoordinatorEnded: the coordinator stopped before it led.
var errCoordinatorEnded = errors.New("the coordinator stopped before it became the leader")

// waitLeader waits until the coordinator's leader answers the control API,
// the coordinator ends (errCoordinatorEnded; its error stays in done for
// the caller) or ctx ends.
func waitLeader(ctx context.Context, c *coordinator.Client, done chan error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := c.Pipelines(actx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case err := <-done:
			done <- err
			return errCoordinatorEnded
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
