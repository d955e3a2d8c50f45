package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/embednats"
)

// natsServers are the NATS servers of a run: one embedded server, or n
// JetStream servers in this process routed into one cluster on loopback
// (--replicas above 1), SLUICE_CDC replicated on all of them.
type natsServers struct {
	urls     []string
	shutdown []func()
}

// URL is what clients connect to: every server's URL.
func (s *natsServers) URL() string { return strings.Join(s.urls, ",") }

// Shutdown stops every server.
func (s *natsServers) Shutdown() {
	for _, f := range s.shutdown {
		f()
	}
}

// startNATS starts the servers of a run under dir.
func startNATS(dir string, replicas int) (*natsServers, error) {
	s := &natsServers{}
	if replicas <= 1 {
		srv, err := embednats.Start(embednats.Config{StoreDir: dir, Name: "sluice-bench-cdc"})
		if err != nil {
			return nil, err
		}
		s.urls, s.shutdown = []string{srv.ClientURL()}, []func(){srv.Shutdown}
		return s, nil
	}
	ports := make([]int, replicas)
	var urls []string
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
		l.Close()
	}
	routes := server.RoutesFromStr(strings.Join(urls, ","))
	for i := range replicas {
		opts := &server.Options{
			ServerName: fmt.Sprintf("sluice-bench-cdc-%d", i+1), Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
			JetStream: true, StoreDir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)), JetStreamMaxStore: 1 << 40, MaxPayload: 8 << 20,
			Cluster: server.ClusterOpts{Name: "sluice-bench-cdc", Host: "127.0.0.1", Port: ports[i]},
			Routes:  routes,
		}
		srv, err := server.NewServer(opts)
		if err != nil {
			s.Shutdown()
			return nil, fmt.Errorf("nats server %d: %w", i+1, err)
		}
		srv.Start()
		s.shutdown = append(s.shutdown, func() { srv.Shutdown(); srv.WaitForShutdown() })
		if !srv.ReadyForConnections(10 * time.Second) {
			s.Shutdown()
			return nil, fmt.Errorf("nats server %d: not ready after 10s", i+1)
		}
		s.urls = append(s.urls, srv.ClientURL())
	}
	return s, nil
}

// ensureStream creates SLUICE_CDC with replicas, retrying while the
// cluster elects its meta leader.
func ensureStream(ctx context.Context, js jetstream.JetStream, replicas int) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		err := pgcdc.EnsureStream(actx, js, pgcdc.StreamConfig{Replicas: replicas})
		acancel()
		if err == nil || ctx.Err() != nil || replicas <= 1 {
			return err
		}
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
			time.Sleep(200 * time.Millisecond)
		}
	}
}
