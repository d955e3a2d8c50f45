package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 18 item 3: the HTTP API's token comes from a file or the
// environment and never shows in -h; an API reachable beyond the host
// without one is refused at start.
func TestAPITokenNeverShownAndOpenBindRefused(t *testing.T) {
	const planted = "planted-api-token-3e9b"
	t.Setenv("SLUICE_API_TOKEN", planted)
	t.Setenv("SLUICE_API_TOKEN_FILE", "")
	ctx := context.Background()
	for _, cmd := range []string{"coordinator", "dev"} {
		out, errOut, err := sluice(ctx, cmd, "-h")
		if err != nil || !strings.Contains(out, "--api-token-file") || strings.Contains(out+errOut, planted) {
			t.Errorf("%s -h: %v; want --api-token-file listed and the token never shown:\n%s%s", cmd, err, out, errOut)
		}
	}

	var tf tokenFlags
	if tok, err := tf.token(); err != nil || tok != planted {
		t.Errorf("token from the environment: %q %v", tok, err)
	}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SLUICE_API_TOKEN_FILE", file)
	if tok, err := tf.token(); err != nil || tok != "from-file" {
		t.Errorf("token from SLUICE_API_TOKEN_FILE: %q %v", tok, err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tf.file = empty
	if _, err := tf.token(); err == nil || !strings.Contains(err.Error(), "--api-token-file") {
		t.Errorf("empty token file: %v, want an error naming --api-token-file", err)
	}

	listen := func(addr string) net.Listener {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln
	}
	loop, all := listen("127.0.0.1:0"), listen("0.0.0.0:0")
	if err := checkAPIBind(loop, ""); err != nil {
		t.Errorf("loopback without a token: %v", err)
	}
	if err := checkAPIBind(all, ""); !errors.Is(err, errOpenAPI) {
		t.Errorf("0.0.0.0 without a token: %v, want it refused", err)
	}
	if err := checkAPIBind(all, "t"); err != nil {
		t.Errorf("0.0.0.0 with a token: %v", err)
	}
	// sluice dev refuses at start, before anything runs.
	t.Setenv("SLUICE_API_TOKEN_FILE", "")
	t.Setenv("SLUICE_API_TOKEN", "")
	_, _, err := sluice(ctx, "dev", "--http", "0.0.0.0:0", "--data-dir", filepath.Join(t.TempDir(), "d"))
	if !errors.Is(err, errOpenAPI) {
		t.Errorf("sluice dev --http 0.0.0.0:0 without a token: %v, want it refused", err)
	}
}
