package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/telemetry"
	"github.com/sluicehq/sluice/worker"
)

func runCoordinator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("coordinator", "coordinator --node-id a --raft-addr 127.0.0.1:7001 [--raft-peers a=host:7001,b=host:7002,c=host:7003 --bootstrap] --nats nats://...", stderr)
	var cf clientFlags
	cf.register(fs)
	var lf logFlags
	lf.register(fs)
	nodeID := fs.String("node-id", "", "this node's id in the Raft cluster (required)")
	raftDir := fs.String("raft-dir", "", "where Raft keeps its log and snapshots (default <data-dir>/raft-<node-id>)")
	raftAddr := fs.String("raft-addr", "127.0.0.1:7001", "Raft transport address (host:port) other coordinators reach")
	peers := fs.String("raft-peers", "", "the whole Raft cluster as id=host:port,... (empty: a single node)")
	bootstrap := fs.Bool("bootstrap", false, "bootstrap a new cluster from --raft-peers (on exactly one node, once)")
	replicas := fs.Int("replicas", 1, "JetStream replicas of the Sluice streams (3 on a 3-node NATS cluster)")
	httpAddr := fs.String("http", "", "HTTP API address, e.g. 127.0.0.1:8089 (empty: off)")
	token := fs.String("api-token", os.Getenv("SLUICE_API_TOKEN"), "bearer token the HTTP API requires")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *nodeID == "" {
		return fmt.Errorf("--node-id is required")
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	ps, err := parsePeers(*peers)
	if err != nil {
		return err
	}
	dir := *raftDir
	if dir == "" {
		dir = cf.dataDir + "/raft-" + *nodeID
	}
	tp, err := telemetry.Setup(ctx, telemetry.Config{Service: "sluice-coordinator"})
	if err != nil {
		return err
	}
	defer waitShutdown(ctx, 5*time.Second, tp.Shutdown)
	nc, err := nats.Connect(cf.url(), nats.Name("sluice-coordinator-"+*nodeID), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", cf.url(), err)
	}
	defer nc.Close()
	reg := newRegistry()
	c, err := coordinator.New(coordinator.Config{
		NodeID: *nodeID, DataDir: dir, RaftBind: *raftAddr, Peers: ps, Bootstrap: *bootstrap || len(ps) == 0,
		StreamReplicas: *replicas,
	}, nc, reg, log, tp)
	if err != nil {
		return err
	}
	if *httpAddr != "" {
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		_, stop, err := serveAPI(ctx, *httpAddr, coordinator.NewClient(nc), js, reg, *token, log)
		if err != nil {
			return err
		}
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

func runWorker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("worker", "worker --nats nats://... [--slots N]", stderr)
	var cf clientFlags
	cf.register(fs)
	var lf logFlags
	lf.register(fs)
	id := fs.String("id", "", "worker id (default host-pid-random)")
	slots := fs.Int("slots", 2, "tasks run at once")
	drain := fs.Duration("drain-timeout", 60*time.Second, "how long SIGTERM waits for in-flight tasks")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	tp, err := telemetry.Setup(ctx, telemetry.Config{Service: "sluice-worker"})
	if err != nil {
		return err
	}
	defer waitShutdown(ctx, 5*time.Second, tp.Shutdown)
	nc, err := nats.Connect(cf.url(), nats.Name("sluice-worker"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", cf.url(), err)
	}
	defer nc.Close()
	w, err := worker.New(worker.Config{ID: *id, Slots: *slots, DrainTimeout: *drain}, nc, newRegistry(), log, tp)
	if err != nil {
		return err
	}
	log.Info("worker started", "id", w.ID(), "slots", *slots, "nats", cf.url())
	return w.Run(ctx)
}
