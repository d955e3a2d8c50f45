// Package raftls carries Raft between coordinators over mutual TLS: a
// raft.StreamLayer whose listener asks every peer for a certificate signed
// by the cluster's CA and whose dialer shows its own and checks the
// peer's, so that only holders of a certificate of that CA take part in
// the Raft cluster, and its log travels encrypted.
package raftls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/hashicorp/raft"
)

// Config returns the TLS configuration of a peer: its certificate and key,
// the CA that signed every peer's (required of those that connect, checked
// of those it connects to), TLS 1.3.
func Config(caFile, certFile, keyFile string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("raft TLS: read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("raft TLS: no certificate in %s", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("raft TLS: load the certificate: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// Layer is a raft.StreamLayer over mutual TLS.
type Layer struct {
	ln  net.Listener
	adv net.Addr
	cfg *tls.Config
}

// Listen listens on bind with cfg (Config); adv is the address peers
// reach this one at (nil: the listener's).
func Listen(bind string, adv net.Addr, cfg *tls.Config) (*Layer, error) {
	if cfg == nil || len(cfg.Certificates) == 0 || cfg.ClientCAs == nil {
		return nil, errors.New("raft TLS: a certificate and a CA are required")
	}
	srv := cfg.Clone()
	srv.ClientAuth = tls.RequireAndVerifyClientCert
	ln, err := tls.Listen("tcp", bind, srv)
	if err != nil {
		return nil, fmt.Errorf("raft TLS: listen on %s: %w", bind, err)
	}
	if adv == nil {
		adv = ln.Addr()
	}
	if ta, ok := adv.(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("raft TLS: %s is not an address peers can reach: set the advertise address", adv)
	}
	return &Layer{ln: ln, adv: adv, cfg: cfg}, nil
}

// Accept waits for the next peer. Its handshake (and so the check of its
// certificate) runs on the connection's first read: a peer without a
// valid certificate gets nothing and its connection fails.
func (l *Layer) Accept() (net.Conn, error) { return l.ln.Accept() }

// Close stops listening.
func (l *Layer) Close() error { return l.ln.Close() }

// Addr is the address peers reach this one at.
func (l *Layer) Addr() net.Addr { return l.adv }

// Dial connects to the peer at address and completes the handshake: the
// peer's certificate must be signed by the CA and name the host dialled.
func (l *Layer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(string(address))
	if err != nil {
		return nil, err
	}
	cfg := l.cfg.Clone()
	cfg.ServerName = host
	d := &net.Dialer{Timeout: timeout}
	conn, err := tls.DialWithDialer(d, "tcp", string(address), cfg)
	if err != nil {
		return nil, fmt.Errorf("raft TLS: dial %s: %w", address, err)
	}
	return conn, nil
}
