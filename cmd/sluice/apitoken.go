package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// tokenFlags say where the HTTP API's bearer token comes from: a file
// (--api-token-file, SLUICE_API_TOKEN_FILE) or the environment
// (SLUICE_API_TOKEN). The token itself is never a flag's default, which -h
// would print.
type tokenFlags struct {
	file string
	flag string // --api-token, deprecated: its value shows in ps
}

func (t *tokenFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&t.file, "api-token-file", "", "file holding the bearer token the HTTP API requires (default $SLUICE_API_TOKEN_FILE; without either, $SLUICE_API_TOKEN)")
	fs.StringVar(&t.flag, "api-token", "", "bearer token the HTTP API requires")
	_ = fs.MarkDeprecated("api-token", "a flag's value shows in ps: set SLUICE_API_TOKEN or use --api-token-file")
}

// token returns the HTTP API's token, "" for none.
func (t *tokenFlags) token() (string, error) {
	file, from := t.file, "--api-token-file"
	if file == "" {
		file, from = os.Getenv("SLUICE_API_TOKEN_FILE"), "SLUICE_API_TOKEN_FILE"
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read the HTTP API token (%s): %w", from, err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("read the HTTP API token (%s): %s is empty", from, file)
		}
		return tok, nil
	}
	if t.flag != "" {
		return t.flag, nil
	}
	return os.Getenv("SLUICE_API_TOKEN"), nil
}

// errOpenAPI refuses an HTTP API others can reach without a token.
var errOpenAPI = errors.New("no token is set: set SLUICE_API_TOKEN or --api-token-file, or listen on a loopback address such as 127.0.0.1:8089")

// checkAPIBind refuses an HTTP API listening on ln beyond the loopback
// interface without a token: anyone who reaches it could run the cluster.
func checkAPIBind(ln net.Listener, token string) error {
	if token != "" {
		return nil
	}
	if a, ok := ln.Addr().(*net.TCPAddr); ok && a.IP.IsLoopback() {
		return nil
	}
	return fmt.Errorf("HTTP API on %s is reachable beyond this host and %w", ln.Addr(), errOpenAPI)
}
