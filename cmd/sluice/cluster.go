package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/telemetry"
	"github.com/sluicehq/sluice/worker"
)

// coordinatorOptions are the flags of `sluice coordinator`.
type coordinatorOptions struct {
	cf        clientFlags
	lf        logFlags
	ef        envFlags
	nodeID    string
	raftDir   string
	raftAddr  string
	peers     string
	bootstrap bool
	replicas  int
	httpAddr  string
	tf        tokenFlags
	headers   []string
	limits    streamLimits
	mf        metricsFlags
}

// streamLimits are the coordinator's flags that bound the Sluice streams
// and the deleted pipelines' cleanups.
type streamLimits struct {
	maxBytes, cdcMaxBytes string
	dlqMaxAge, cleanupTTL time.Duration
}

func (l *streamLimits) register(fs *pflag.FlagSet) {
	fs.StringVar(&l.maxBytes, "stream-max-bytes", "256MiB", "cap of each Sluice stream but SLUICE_CDC (tasks and results refuse new messages when full; see the README's Bounded state)")
	fs.StringVar(&l.cdcMaxBytes, "cdc-max-bytes", "4GiB", "cap of SLUICE_CDC (full, it refuses new events: the readers stop and the sources keep the changes)")
	fs.DurationVar(&l.dlqMaxAge, "dlq-max-age", coordinator.DefaultDLQMaxAge, "how long SLUICE_DLQ keeps a dead letter")
	fs.DurationVar(&l.cleanupTTL, "cleanup-expiry", 7*24*time.Hour, "how long the leader tries to clean up after a deleted cdc pipeline before it gives up and logs what is left")
}

// apply sets the limits on cfg.
func (l streamLimits) apply(cfg *coordinator.Config) error {
	var err error
	if cfg.StreamMaxBytes, err = pipeline.ParseBytes(l.maxBytes); err != nil {
		return fmt.Errorf("--stream-max-bytes: %w", err)
	}
	if cfg.CDCMaxBytes, err = pipeline.ParseBytes(l.cdcMaxBytes); err != nil {
		return fmt.Errorf("--cdc-max-bytes: %w", err)
	}
	cfg.DLQMaxAge, cfg.CleanupExpiry = l.dlqMaxAge, l.cleanupTTL
	return nil
}

func newCoordinatorCmd() *cobra.Command {
	var o coordinatorOptions
	cmd := &cobra.Command{
		Use:   "coordinator --node-id a --raft-addr 127.0.0.1:7001 [--raft-peers a=host:7001,b=host:7002,c=host:7003 --bootstrap]",
		Short: "run one coordinator node (a Raft member; the leader plans and commits)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCoordinator(cmd.Context(), o, cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	o.cf.registerServer(fs)
	o.lf.register(fs)
	o.ef.register(fs)
	fs.StringVar(&o.nodeID, "node-id", "", "this node's id in the Raft cluster (required)")
	fs.StringVar(&o.raftDir, "raft-dir", "", "where Raft keeps its log and snapshots (default <data-dir>/raft-<node-id>)")
	fs.StringVar(&o.raftAddr, "raft-addr", "127.0.0.1:7001", "Raft transport address (host:port) other coordinators reach")
	fs.StringVar(&o.peers, "raft-peers", "", "the whole Raft cluster as id=host:port,... (empty: a single node)")
	fs.BoolVar(&o.bootstrap, "bootstrap", false, "bootstrap a new cluster from --raft-peers (on exactly one node, once)")
	fs.IntVar(&o.replicas, "replicas", 1, "JetStream replicas of the Sluice streams (3 on a 3-node NATS cluster)")
	fs.StringVar(&o.httpAddr, "http", "", "HTTP API address, e.g. 127.0.0.1:8089 (empty: off)")
	o.tf.register(fs)
	fs.StringSliceVar(&o.headers, "trigger-headers", splitEnvList("SLUICE_TRIGGER_HEADERS"), "trigger message headers a run records besides Nats-Msg-Id (comma-separated; default $SLUICE_TRIGGER_HEADERS)")
	o.limits.register(fs)
	o.mf.register(fs)
	_ = cmd.MarkFlagRequired("node-id")
	return cmd
}

func runCoordinator(ctx context.Context, o coordinatorOptions, stderr io.Writer) error {
	log, err := o.lf.logger(stderr)
	if err != nil {
		return err
	}
	ps, err := parsePeers(o.peers)
	if err != nil {
		return err
	}
	dir := o.raftDir
	if dir == "" {
		dir = o.cf.dataDir + "/raft-" + o.nodeID
	}
	var ln net.Listener
	var token string
	if o.httpAddr != "" {
		if token, err = o.tf.token(); err != nil {
			return err
		}
		// Refuse a taken address, or an open one, before joining the
		// cluster.
		if ln, err = listenAPI(o.httpAddr); err != nil {
			return err
		}
		defer ln.Close()
		if err := checkAPIBind(ln, token); err != nil {
			return err
		}
	}
	m, stopMetrics, err := o.mf.serve(ctx, log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	tp, err := telemetry.Setup(ctx, telemetry.Config{Service: "sluice-coordinator"})
	if err != nil {
		return err
	}
	defer waitShutdown(ctx, 5*time.Second, tp.Shutdown)
	url, from := o.cf.serverURL()
	nc, err := nats.Connect(url, nats.Name("sluice-coordinator-"+o.nodeID), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect to NATS at %s (from %s): %w", url, from, err)
	}
	defer nc.Close()
	log.Info("coordinator starting", "node", o.nodeID, "nats", url, "nats_from", from)
	reg, log := o.ef.registry("the coordinator "+o.nodeID, log)
	cfg := coordinator.Config{
		NodeID: o.nodeID, DataDir: dir, RaftBind: o.raftAddr, Peers: ps, Bootstrap: o.bootstrap || len(ps) == 0,
		StreamReplicas: o.replicas, TriggerHeaders: o.headers, Metrics: m,
	}
	if err := o.limits.apply(&cfg); err != nil {
		return err
	}
	c, err := coordinator.New(cfg, nc, reg, log, tp)
	if err != nil {
		return err
	}
	if ln != nil {
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		stop := serveAPI(ctx, ln, coordinator.NewClient(nc), js, reg, token, log)
		defer stop()
	}
	return c.Run(ctx)
}

func parsePeers(s string) ([]coordinator.Peer, error) {
	if s == "" {
		return nil, nil
	}
	var ps []coordinator.Peer
	for _, p := range strings.Split(s, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("--raft-peers: %q is not id=host:port", p)
		}
		ps = append(ps, coordinator.Peer{ID: id, Addr: addr})
	}
	return ps, nil
}

// workerOptions are the flags of `sluice worker`.
type workerOptions struct {
	cf    clientFlags
	lf    logFlags
	ef    envFlags
	id    string
	slots int
	drain time.Duration
	mf    metricsFlags
}

func newWorkerCmd() *cobra.Command {
	var o workerOptions
	cmd := &cobra.Command{
		Use:   "worker [--slots N]",
		Short: "run a worker that pulls tasks from JetStream and holds streams",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runWorker(cmd.Context(), o, cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	o.cf.registerServer(fs)
	o.lf.register(fs)
	o.ef.register(fs)
	fs.StringVar(&o.id, "id", "", "worker id (default host-pid-random)")
	fs.IntVar(&o.slots, "slots", 2, "tasks run at once")
	fs.DurationVar(&o.drain, "drain-timeout", 60*time.Second, "how long SIGTERM waits for in-flight tasks")
	o.mf.register(fs)
	return cmd
}

func runWorker(ctx context.Context, o workerOptions, stderr io.Writer) error {
	log, err := o.lf.logger(stderr)
	if err != nil {
		return err
	}
	m, stopMetrics, err := o.mf.serve(ctx, log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	tp, err := telemetry.Setup(ctx, telemetry.Config{Service: "sluice-worker"})
	if err != nil {
		return err
	}
	defer waitShutdown(ctx, 5*time.Second, tp.Shutdown)
	url, from := o.cf.serverURL()
	nc, err := nats.Connect(url, nats.Name("sluice-worker"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect to NATS at %s (from %s): %w", url, from, err)
	}
	defer nc.Close()
	reg, log := o.ef.registry("a worker", log)
	w, err := worker.New(worker.Config{ID: o.id, Slots: o.slots, DrainTimeout: o.drain, Metrics: m}, nc, reg, log, tp)
	if err != nil {
		return err
	}
	reg.SetProcess(fmt.Sprintf("the worker %s (pid %d)", w.ID(), os.Getpid()))
	log.Info("worker started", "id", w.ID(), "slots", o.slots, "nats", url, "nats_from", from)
	return w.Run(ctx)
}
