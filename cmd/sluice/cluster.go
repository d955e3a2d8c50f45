package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/natsauth"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/signing"
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
	ackWait   time.Duration
	keyFile   string
	htls      apiTLSFlags
	rtls      raftTLSFlags
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
	o.htls.register(fs)
	o.rtls.register(fs)
	fs.StringSliceVar(&o.headers, "trigger-headers", splitEnvList("SLUICE_TRIGGER_HEADERS"), "trigger message headers a run records besides Nats-Msg-Id (comma-separated; default $SLUICE_TRIGGER_HEADERS)")
	o.limits.register(fs)
	// For fault tests: a crashed worker's task comes back after the
	// workers' ack wait (30s); a test sets it short, with the workers'
	// --progress-every below it.
	fs.DurationVar(&o.ackWait, "ack-wait", 0, "ack wait of the workers' task consumer (default 30s; for tests)")
	_ = fs.MarkHidden("ack-wait")
	fs.StringVar(&o.keyFile, "cluster-key", os.Getenv("SLUICE_CLUSTER_KEY"), "`file` of the cluster's private signing key (sluice security cluster-key): tasks, stream assignments and lease grants are signed with it and results must carry their task's token (default $SLUICE_CLUSTER_KEY; empty: nothing signed)")
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
		if ln, err = o.htls.wrap(ln); err != nil {
			return err
		}
	}
	raftTLS, err := o.rtls.config()
	if err != nil {
		return err
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
	nc, url, from, err := o.cf.connectServer("sluice-coordinator-"+o.nodeID, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	log.Info("coordinator starting", "node", o.nodeID, "nats", url, "nats_from", from)
	reg, log := o.ef.registry("the coordinator "+o.nodeID, log)
	cfg := coordinator.Config{
		NodeID: o.nodeID, DataDir: dir, RaftBind: o.raftAddr, Peers: ps, Bootstrap: o.bootstrap || len(ps) == 0,
		StreamReplicas: o.replicas, TriggerHeaders: o.headers, AckWait: o.ackWait, RaftTLS: raftTLS, Metrics: m,
	}
	if err := o.limits.apply(&cfg); err != nil {
		return err
	}
	if o.keyFile != "" {
		if cfg.Signer, err = signing.LoadSigner(o.keyFile); err != nil {
			return err
		}
	} else {
		log.Warn("no --cluster-key: tasks, stream assignments and lease grants are not signed (see the README's Security section)")
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

// connectServer connects a cluster process to NATS with the credentials
// and TLS its flags and environment say; url is the server's URL with any
// password in it redacted, for logs.
func (c *clientFlags) connectServer(name string, log *slog.Logger) (nc *nats.Conn, url, from string, err error) {
	raw, from := c.serverURL()
	url = natsauth.RedactURL(raw)
	opts, err := c.natsOptions(from)
	if err != nil {
		return nil, url, from, err
	}
	nc, err = nats.Connect(raw, append(opts, serverConnOptions(name, log)...)...)
	if err != nil {
		return nil, url, from, fmt.Errorf("connect to NATS at %s (from %s): %w", url, from, err)
	}
	return nc, url, from, nil
}

// Coordinators and workers ping their NATS server every natsPingInterval
// and leave it for another server of the cluster after natsMaxPingsOut
// unanswered pings, or when a write to it has not gone through within
// natsWriteTimeout. The client's defaults (pings every 2 minutes, writes
// bounded by a minute) would keep a process on a server cut off by the
// network for minutes: a leader would consume no results, a worker would
// publish none, and a worker streaming a CDC slot, its writes stuck on a
// full socket with the connection's lock held, could neither renew nor
// give up its lease, and kept the slot from the worker the lease passed to.
const (
	natsPingInterval = 2 * time.Second
	natsMaxPingsOut  = 3
	natsWriteTimeout = 5 * time.Second
)

// serverConnOptions are the NATS options of the long-running processes:
// reconnect forever, detect a silent server within seconds, and log
// losing and regaining the connection.
func serverConnOptions(name string, log *slog.Logger) []nats.Option {
	return []nats.Option{
		nats.Name(name), nats.MaxReconnects(-1),
		nats.PingInterval(natsPingInterval), nats.MaxPingsOutstanding(natsMaxPingsOut),
		nats.FlusherTimeout(natsWriteTimeout),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			log.Warn("NATS connection lost", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", "server", nc.ConnectedUrlRedacted())
		}),
	}
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
	// progress is the interval of in-progress acks (hidden, for tests
	// that set the coordinator's --ack-wait short).
	progress time.Duration
	pub      string
	mf       metricsFlags
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
	fs.DurationVar(&o.progress, "progress-every", 0, "interval of in-progress acks of a running task (default 5s; below the coordinator's --ack-wait; for tests)")
	_ = fs.MarkHidden("progress-every")
	fs.StringVar(&o.pub, "cluster-pub", os.Getenv("SLUICE_CLUSTER_PUB"), "`file` of the cluster's public signing key: tasks, stream assignments and lease grants it did not sign are refused unread (default $SLUICE_CLUSTER_PUB; empty: nothing checked)")
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
	nc, url, from, err := o.cf.connectServer("sluice-worker", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	reg, log := o.ef.registry("a worker", log)
	wcfg := worker.Config{ID: o.id, Slots: o.slots, DrainTimeout: o.drain, ProgressEvery: o.progress, Metrics: m}
	if o.pub != "" {
		if wcfg.Verifier, err = signing.LoadVerifier(o.pub); err != nil {
			return err
		}
	} else {
		log.Warn("no --cluster-pub: tasks, stream assignments and lease grants are taken unchecked (see the README's Security section)")
	}
	w, err := worker.New(wcfg, nc, reg, log, tp)
	if err != nil {
		return err
	}
	reg.SetProcess(fmt.Sprintf("the worker %s (pid %d)", w.ID(), os.Getpid()))
	log.Info("worker started", "id", w.ID(), "slots", o.slots, "nats", url, "nats_from", from)
	return w.Run(ctx)
}
