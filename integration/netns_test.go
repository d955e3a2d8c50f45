//go:build linux

package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/protocol"
)

// A netLab is a small network of Linux network namespaces for partition
// tests: a hub namespace holds one bridge per network (say "data" and
// "raft"), and every node is a namespace with one veth per network it is
// on, plugged into that network's bridge. Every address lives inside the
// lab's namespaces, so labs of parallel tests never collide; cutting a
// node off a network sets the hub's end of its veth down (the node's
// packets on that network are dropped silently, as with a pulled cable),
// and healing sets it up again.
type netLab struct {
	t      *testing.T
	prefix string // of every namespace name of the lab
	hub    string
	nets   map[string]int // network name -> third octet of its 10.199.X.0/24
	mu     sync.Mutex
	nodes  []string
}

// labSeq numbers the labs of one test process.
var labSeq atomic.Int64

// labName matches the namespace names of labs: slnt<pid>x<seq>-<node>.
var labName = regexp.MustCompile(`^slnt(\d+)x\d+-`)

// newNetLab creates a lab with the given networks. It needs root and the
// `ip` command of iproute2: without them the test fails when $CI is set
// and is skipped otherwise.
func newNetLab(t *testing.T, networks ...string) *netLab {
	t.Helper()
	var missing string
	if _, err := exec.LookPath("ip"); err != nil {
		missing = "the ip command (iproute2) is missing: run make services"
	} else if os.Geteuid() != 0 {
		missing = "network namespaces need root"
	}
	if missing != "" {
		if os.Getenv("CI") != "" || os.Getenv("SLUICE_CI") != "" {
			t.Fatal(missing)
		}
		t.Skip(missing)
	}
	sweepLabs(t)
	l := &netLab{t: t, prefix: fmt.Sprintf("slnt%dx%d-", os.Getpid(), labSeq.Add(1)), nets: map[string]int{}}
	l.hub = l.prefix + "hub"
	t.Cleanup(l.remove)
	l.ip("netns", "add", l.hub)
	l.ip("-n", l.hub, "link", "set", "lo", "up")
	for i, n := range networks {
		l.nets[n] = i
		br := "br-" + n
		l.ip("-n", l.hub, "link", "add", br, "type", "bridge")
		// The hub's own address on each network: the test process
		// reaches the nodes from there.
		l.ip("-n", l.hub, "addr", "add", l.addr(n, 254)+"/24", "dev", br)
		l.ip("-n", l.hub, "link", "set", br, "up")
	}
	return l
}

// sweepLabs deletes the namespaces that labs of test processes no longer
// running left behind (a test binary killed before its cleanups).
func sweepLabs(t *testing.T) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		m := labName.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		_ = exec.Command("ip", "netns", "del", name).Run()
	}
}

// ip runs the ip command; a failure fails the test.
func (l *netLab) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// addr is host's address on network n.
func (l *netLab) addr(n string, host int) string {
	i, ok := l.nets[n]
	if !ok {
		l.t.Fatalf("no network %q in the lab", n)
	}
	return fmt.Sprintf("10.199.%d.%d", i, host)
}

// node creates the namespace of a node with address 10.199.X.host on each
// of the networks, and returns the namespace's name.
func (l *netLab) node(name string, host int, networks ...string) string {
	l.t.Helper()
	ns := l.prefix + name
	l.ip("netns", "add", ns)
	l.mu.Lock()
	l.nodes = append(l.nodes, ns)
	l.mu.Unlock()
	l.ip("-n", ns, "link", "set", "lo", "up")
	for _, n := range networks {
		dev := "eth-" + n
		l.ip("-n", l.hub, "link", "add", l.port(name, n), "type", "veth", "peer", "name", dev, "netns", ns)
		l.ip("-n", l.hub, "link", "set", l.port(name, n), "master", "br-"+n, "up")
		l.ip("-n", ns, "addr", "add", l.addr(n, host)+"/24", "dev", dev)
		l.ip("-n", ns, "link", "set", dev, "up")
	}
	return ns
}

// port is the hub's end of node's veth on network n (at most 15 bytes).
func (l *netLab) port(node, n string) string {
	p := node + "-" + n
	if len(p) > 15 {
		l.t.Fatalf("interface name %q is longer than 15 bytes", p)
	}
	return p
}

// cut cuts node off network n: its packets there are dropped from now on.
func (l *netLab) cut(node, n string) {
	l.t.Helper()
	l.ip("-n", l.hub, "link", "set", l.port(node, n), "down")
}

// heal reconnects node to network n.
func (l *netLab) heal(node, n string) {
	l.t.Helper()
	l.ip("-n", l.hub, "link", "set", l.port(node, n), "up")
}

// remove deletes the lab's namespaces (their veths go with them). Run it
// after the processes inside have stopped.
func (l *netLab) remove() {
	l.mu.Lock()
	nodes := append(l.nodes, l.hub)
	l.mu.Unlock()
	for _, ns := range nodes {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			l.t.Errorf("ip netns del %s: %v\n%s", ns, err, out)
		}
	}
}

// inNetns runs f on an OS thread moved into namespace ns: sockets f
// creates belong to ns for their whole life, whichever thread uses them
// later. The thread goes back to its own namespace afterwards; if it
// cannot, it stays locked and dies with the goroutine.
func inNetns(ns string, f func() error) error {
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer self.Close()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", ns, err)
	}
	ferr := f()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		return errors.Join(ferr, fmt.Errorf("leave netns %s: %w", ns, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// nsDialer dials TCP from inside a namespace (nats.CustomDialer, and
// pgx's DialFunc through DialContext).
type nsDialer struct{ ns string }

func (d nsDialer) Dial(network, addr string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, addr)
}

func (d nsDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := inNetns(d.ns, func() error {
		var err error
		conn, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// forward listens on addr inside namespace ns and forwards every
// connection to target, dialed from the test's own namespace: a process
// in ns reaches a server of the host (the shared PostgreSQL on loopback)
// through its own loopback, whatever links of ns are cut.
func (l *netLab) forward(ns, addr, target string) {
	l.t.Helper()
	var ln net.Listener
	if err := inNetns(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		l.t.Fatalf("listen on %s in %s: %v", addr, ns, err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	l.t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				in.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, in, out)
			mu.Unlock()
			// Either way ending closes both: PostgreSQL's protocol
			// needs no half-close.
			wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer wg.Done()
				_, _ = io.Copy(dst, src)
				dst.Close()
				src.Close()
			}
			go pipe(out, in)
			go pipe(in, out)
		}
	}()
}

// netCluster is the process cluster of process_test.go with every process
// in a namespace of its own: three NATS servers (n1-n3) and the workers on
// the lab's "data" network, three coordinators (a-c) on "data" for NATS
// and on "raft" for Raft, so that a test can cut a coordinator off its
// Raft peers and leave it its NATS. The test process reaches NATS from
// the hub.
type netCluster struct {
	*procCluster
	lab *netLab
	ns  map[string]string // node name (n1, ca, w1, ...) -> namespace
}

// netClusterConfig tells newNetCluster what to start.
type netClusterConfig struct {
	workers int
	// pg is the host:port of a PostgreSQL on the test's loopback that
	// every coordinator and worker reaches at the same address on its own
	// loopback (through the lab's forwarders).
	pg string
}

func newNetCluster(t *testing.T, cfg netClusterConfig) *netCluster {
	t.Helper()
	sluice, natsServer := binaries(t)
	lab := newNetLab(t, "data", "raft")
	c := &netCluster{
		procCluster: &procCluster{t: t, dir: t.TempDir(), coords: map[string]*proc{}, workers: map[string]*proc{}},
		lab:         lab,
		ns:          map[string]string{},
	}
	// Cleanups run last registered first: kill every process, dump the
	// logs of a failed test, then remove the lab.
	t.Cleanup(c.dumpLogsOnFailure)
	t.Cleanup(c.killAll)
	inNS := func(node, bin string, args ...string) []string {
		return append([]string{"netns", "exec", c.ns[node], bin}, args...)
	}

	var urls, routes []string
	for i := range 3 {
		node := fmt.Sprintf("n%d", i+1)
		c.ns[node] = lab.node(node, 11+i, "data")
		urls = append(urls, fmt.Sprintf("nats://%s:4222", lab.addr("data", 11+i)))
		routes = append(routes, fmt.Sprintf("nats://%s:6222", lab.addr("data", 11+i)))
	}
	c.natsURLs = strings.Join(urls, ",")
	for i := range 3 {
		node := fmt.Sprintf("n%d", i+1)
		conf := filepath.Join(c.dir, "nats-"+node+".conf")
		// A short ping interval, as a cluster across a real network
		// should have: a peer or client that went silent is dropped
		// within seconds rather than minutes.
		if err := os.WriteFile(conf, []byte("ping_interval: \"2s\"\nping_max: 3\njetstream {\n  max_file_store: 1TB\n}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c.start(node, "ip", inNS(node, natsServer, "-c", conf, "-n", node, "-a", lab.addr("data", 11+i), "-p", "4222",
			"-js", "-sd", filepath.Join(c.dir, "nats-"+node), "--cluster_name", "sluice",
			"--cluster", routes[i], "--routes", strings.Join(routes, ","))...)
	}
	nc := c.connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	c.js = js
	c.client = coordinator.NewClient(nc)
	waitFor(t, 30*time.Second, "JetStream of the NATS cluster", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err == nil
	})

	ids := []string{"a", "b", "c"}
	var peers []string
	for i, id := range ids {
		c.ns["c"+id] = lab.node("c"+id, 21+i, "data", "raft")
		peers = append(peers, fmt.Sprintf("%s=%s:7001", id, lab.addr("raft", 21+i)))
		if cfg.pg != "" {
			lab.forward(c.ns["c"+id], cfg.pg, cfg.pg)
		}
	}
	for i, id := range ids {
		args := []string{"coordinator", "--node-id", id, "--raft-addr", fmt.Sprintf("%s:7001", lab.addr("raft", 21+i)),
			"--raft-peers", strings.Join(peers, ","), "--data-dir", filepath.Join(c.dir, "coord-"+id),
			"--replicas", "3", "--nats", c.natsURLs, "--log-level", "debug"}
		if i == 0 {
			args = append(args, "--bootstrap")
		}
		c.coords[id] = c.start("coordinator-"+id, "ip", inNS("c"+id, sluice, args...)...)
	}
	var wids []string
	for i := range cfg.workers {
		id := fmt.Sprintf("w%d", i+1)
		wids = append(wids, id)
		c.ns[id] = lab.node(id, 31+i, "data")
		if cfg.pg != "" {
			lab.forward(c.ns[id], cfg.pg, cfg.pg)
		}
		c.workers[id] = c.start("worker-"+id, "ip", inNS(id, sluice, "worker", "--id", id, "--slots", "2",
			"--drain-timeout", drainTimeout.String(), "--nats", c.natsURLs, "--log-level", "debug")...)
	}

	// Ready: a leader answers and every worker is heard from.
	var last string
	ok := waitForOK(60*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := c.client.Status(ctx, protocol.StatusRequest{})
		var got []string
		for _, hb := range st.Workers {
			got = append(got, hb.Worker)
		}
		last = fmt.Sprintf("leader %q, workers %v, err %v", st.Leader, got, err)
		return err == nil && st.Leader != "" && slices.Equal(got, wids)
	})
	if !ok {
		t.Fatalf("cluster in namespaces not ready within 60s: %s", last)
	}
	return c
}

// connect connects the test to the NATS cluster from the lab's hub, with a
// ping interval short enough to leave a server cut off within seconds.
func (c *netCluster) connect() *nats.Conn {
	c.t.Helper()
	var nc *nats.Conn
	waitFor(c.t, 15*time.Second, "connection to NATS at "+c.natsURLs, func() bool {
		var err error
		nc, err = nats.Connect(c.natsURLs, nats.Name("netns-test-client"), nats.MaxReconnects(-1),
			nats.SetCustomDialer(nsDialer{ns: c.lab.hub}), nats.PingInterval(time.Second), nats.MaxPingsOutstanding(2))
		return err == nil
	})
	c.t.Cleanup(nc.Close)
	return nc
}

// leader returns the Raft leader's node id, as the control API answers.
func (c *netCluster) leader() string {
	c.t.Helper()
	st, err := c.client.Status(c.ctx(10*time.Second), protocol.StatusRequest{})
	if err != nil || st.Leader == "" {
		c.t.Fatalf("no leader answers: %q %v", st.Leader, err)
	}
	return st.Leader
}
