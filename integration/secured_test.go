package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestProcessSecuredCluster starts a cluster as the README's "Running a
// secured cluster" says, from real processes: a nats-server configured by
// `sluice security nats-config` (nkeys per role, TLS, client certificates
// required), three coordinators with Raft over mutual TLS and the
// cluster's signing key, a worker checking signatures, the HTTP API over
// HTTPS with a token. A full load applied and run by the admin's
// credentials commits every source row once; the API answers only with
// the token; a client without a certificate, or without a key, is refused
// by the server.
func TestProcessSecuredCluster(t *testing.T) {
	t.Parallel()
	sluice, natsServer := binaries(t)
	c := &procCluster{t: t, dir: t.TempDir(), coords: map[string]*proc{}, workers: map[string]*proc{}}
	t.Cleanup(c.dumpLogsOnFailure)
	t.Cleanup(c.killAll)
	dir := c.dir
	run := func(args ...string) string {
		t.Helper()
		// Bounded: `run --wait` follows a run as long as the cluster
		// answers; a run that never ends fails the test, with the
		// processes' logs, instead of the package's timeout.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, sluice, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("sluice %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	ports := freePorts(t, 5)
	run("security", "certs", "--dir", "certs", "nats=127.0.0.1", "a=127.0.0.1", "b=127.0.0.1", "c=127.0.0.1", "worker", "admin")
	run("security", "cluster-key", "--dir", "key")
	conf := run("security", "nats-config", "--keys", "keys", "--host", "127.0.0.1", "--port", fmt.Sprint(ports[0]),
		"--store-dir", filepath.Join(dir, "js"), "--tls-cert", "certs/nats.crt", "--tls-key", "certs/nats.key",
		"--tls-ca", "certs/ca.crt", "--tls-verify")
	conf = conf[:strings.LastIndex(conf, "nkey seeds in")] // stderr's note
	if err := os.WriteFile(filepath.Join(dir, "nats.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	c.start("nats", natsServer, "-c", filepath.Join(dir, "nats.conf"))
	url := fmt.Sprintf("tls://127.0.0.1:%d", ports[0])
	natsAs := func(role, cert string) []string {
		return []string{"--nats", url, "--nats-nkey", "keys/" + role + ".nk", "--nats-ca", "certs/ca.crt",
			"--nats-cert", "certs/" + cert + ".crt", "--nats-key", "certs/" + cert + ".key"}
	}
	var peers []string
	for i, id := range []string{"a", "b", "c"} {
		peers = append(peers, fmt.Sprintf("%s=127.0.0.1:%d", id, ports[1+i]))
	}
	token := "secured-test-token"
	if err := os.WriteFile(filepath.Join(dir, "api-token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"a", "b", "c"} {
		args := append([]string{"coordinator", "--node-id", id, "--raft-addr", fmt.Sprintf("127.0.0.1:%d", ports[1+i]),
			"--raft-peers", strings.Join(peers, ","), "--data-dir", "coord-" + id,
			"--raft-ca", "certs/ca.crt", "--raft-cert", "certs/" + id + ".crt", "--raft-key", "certs/" + id + ".key",
			"--cluster-key", "key/cluster.key"}, natsAs("coordinator", id)...)
		if i == 0 {
			args = append(args, "--bootstrap", "--http", fmt.Sprintf("127.0.0.1:%d", ports[4]),
				"--http-cert", "certs/a.crt", "--http-key", "certs/a.key", "--api-token-file", "api-token")
		}
		c.coords[id] = c.start("coordinator-"+id, sluice, args...)
	}
	c.workers["w1"] = c.start("worker-w1", sluice, append([]string{"worker", "--id", "w1", "--cluster-pub", "key/cluster.pub"},
		natsAs("worker", "worker")...)...)

	in := processDataset(t)
	out := filepath.Join(dir, "out")
	spec := fmt.Sprintf("name: secured\npattern: full_load\nsource: {kind: files, path: %s, format: jsonl}\nsink: {kind: files, path: %s, format: jsonl}\npartitioning: {max_files: 2}\n", in, out)
	if err := os.WriteFile(filepath.Join(dir, "secured.yaml"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	admin := natsAs("admin", "admin")
	deadline := time.Now().Add(60 * time.Second)
	for {
		cmd := exec.Command(sluice, append([]string{"apply", "-f", "secured.yaml", "--timeout", "5s"}, admin...)...)
		cmd.Dir = dir
		b, err := cmd.CombinedOutput()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("apply on the secured cluster: %v\n%s", err, b)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if o := run(append([]string{"run", "secured", "--wait", "--timeout", "90s"}, admin...)...); !strings.Contains(o, "committed") {
		t.Fatalf("run: %s", o)
	}
	assertSameRows(t, in, out)

	// The HTTP API: HTTPS, and only with the token.
	pem, err := os.ReadFile(filepath.Join(dir, "certs", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	api := fmt.Sprintf("https://127.0.0.1:%d/v1/status", ports[4])
	for _, tc := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {token, http.StatusOK}} {
		req, _ := http.NewRequest(http.MethodGet, api, nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", api, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET %s with token %q: %d, want %d", api, tc.token, resp.StatusCode, tc.want)
		}
	}

	// Refused by the server: no client certificate; no key.
	for name, args := range map[string][]string{
		"no certificate": {"--nats", url, "--nats-nkey", "keys/admin.nk", "--nats-ca", "certs/ca.crt"},
		"no key":         {"--nats", url, "--nats-ca", "certs/ca.crt", "--nats-cert", "certs/admin.crt", "--nats-key", "certs/admin.key"},
	} {
		cmd := exec.Command(sluice, append([]string{"status", "--timeout", "5s"}, args...)...)
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err == nil {
			t.Errorf("status with %s was answered:\n%s", name, b)
		}
	}
	// No log line holds a key's seed.
	seed, _ := os.ReadFile(filepath.Join(dir, "keys", "coordinator.nk"))
	for _, p := range c.procs {
		b, _ := os.ReadFile(p.log)
		if strings.Contains(string(b), strings.TrimSpace(string(seed))) {
			t.Errorf("%s logged the coordinator's seed", p.name)
		}
	}
}
