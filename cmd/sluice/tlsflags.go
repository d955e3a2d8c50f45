package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"

	"github.com/spf13/pflag"

	"github.com/sluicehq/sluice/raftls"
)

// apiTLSFlags put the HTTP API behind TLS.
type apiTLSFlags struct{ cert, key string }

func (f *apiTLSFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.cert, "http-cert", os.Getenv("SLUICE_HTTP_CERT"), "certificate `file` of the HTTP API: it serves HTTPS (default $SLUICE_HTTP_CERT)")
	fs.StringVar(&f.key, "http-key", os.Getenv("SLUICE_HTTP_KEY"), "key `file` of --http-cert (default $SLUICE_HTTP_KEY)")
}

// tlsAPIListener is the HTTP API's listener when it serves HTTPS.
type tlsAPIListener struct{ net.Listener }

// wrap returns ln serving TLS when the flags give a certificate.
func (f *apiTLSFlags) wrap(ln net.Listener) (net.Listener, error) {
	if f.cert == "" && f.key == "" {
		return ln, nil
	}
	if f.cert == "" || f.key == "" {
		return nil, fmt.Errorf("--http-cert and --http-key go together")
	}
	cert, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		return nil, fmt.Errorf("HTTP API certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	return tlsAPIListener{tls.NewListener(ln, cfg)}, nil
}

// apiURL is the HTTP API's base URL on ln.
func apiURL(ln net.Listener) string {
	if _, ok := ln.(tlsAPIListener); ok {
		return "https://" + ln.Addr().String()
	}
	return "http://" + ln.Addr().String()
}

// raftTLSFlags carry a coordinator's Raft over mutual TLS.
type raftTLSFlags struct{ ca, cert, key string }

func (f *raftTLSFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.ca, "raft-ca", os.Getenv("SLUICE_RAFT_CA"), "CA `file` that signed every coordinator's Raft certificate: Raft runs over mutual TLS (default $SLUICE_RAFT_CA)")
	fs.StringVar(&f.cert, "raft-cert", os.Getenv("SLUICE_RAFT_CERT"), "this coordinator's Raft certificate `file`, naming the host of its --raft-addr (default $SLUICE_RAFT_CERT)")
	fs.StringVar(&f.key, "raft-key", os.Getenv("SLUICE_RAFT_KEY"), "key `file` of --raft-cert (default $SLUICE_RAFT_KEY)")
}

// config returns the Raft TLS configuration, nil when none is set.
func (f *raftTLSFlags) config() (*tls.Config, error) {
	if f.ca == "" && f.cert == "" && f.key == "" {
		return nil, nil
	}
	if f.ca == "" || f.cert == "" || f.key == "" {
		return nil, fmt.Errorf("--raft-ca, --raft-cert and --raft-key go together")
	}
	return raftls.Config(f.ca, f.cert, f.key)
}
