// Package embednats runs a NATS server with JetStream inside the process: the
// message bus of `sluice dev` and `sluice demo`, and of the in-process tests.
package embednats

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config configures an embedded server.
type Config struct {
	// Host to listen on; default 127.0.0.1.
	Host string
	// Port to listen on; 0 picks a free port (4222 may be taken).
	Port int
	// StoreDir holds JetStream's files; required.
	StoreDir string
	// Name is the server name; default "sluice-dev".
	Name string
	// Log turns the server's own logging on (to stderr).
	Log bool
	// MaxPayload is the largest message the server accepts; 0 means 8 MiB.
	MaxPayload int32
	// ConfigFile is a nats-server configuration file whose accounts,
	// users, permissions and TLS the server takes (natsauth writes one
	// with Sluice's roles); the fields above override its listen address,
	// store and limits. Empty: no authentication.
	ConfigFile string
}

// Server is a running embedded NATS server.
type Server struct {
	srv *server.Server
}

// Start starts a server and waits until it accepts connections.
func Start(cfg Config) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded nats: StoreDir is required")
	}
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	port := cfg.Port
	if port == 0 {
		port = -1
	}
	name := cfg.Name
	if name == "" {
		name = "sluice-dev"
	}
	opts := &server.Options{}
	if cfg.ConfigFile != "" {
		var err error
		if opts, err = server.ProcessConfigFile(cfg.ConfigFile); err != nil {
			return nil, fmt.Errorf("embedded nats: %w", err)
		}
	}
	opts.ServerName = name
	opts.Host = host
	opts.Port = port
	opts.JetStream = true
	opts.StoreDir = cfg.StoreDir
	opts.NoLog = !cfg.Log
	opts.NoSigs = true
	// Large enough for a task or result with a long file list.
	opts.MaxPayload = 8 << 20
	// JetStream reserves each capped stream's MaxBytes out of this when
	// the stream is created; the default (75% of the disk's free space at
	// start) refuses Sluice's streams on a disk with a few GiB free,
	// though they hold little. The disk bounds what is written.
	opts.JetStreamMaxStore = 1 << 40
	if cfg.MaxPayload > 0 {
		opts.MaxPayload = cfg.MaxPayload
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	if cfg.Log {
		srv.ConfigureLogger()
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded nats: not ready after 10s")
	}
	return &Server{srv: srv}, nil
}

// ClientURL is the URL clients connect to.
func (s *Server) ClientURL() string { return s.srv.ClientURL() }

// Shutdown stops the server and waits for it to finish.
func (s *Server) Shutdown() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}
