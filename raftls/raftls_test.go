package raftls

import (
	"crypto/tls"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/sluicehq/sluice/devcerts"
)

type countFSM struct {
	mu sync.Mutex
	n  int
}

func (f *countFSM) Apply(*raft.Log) any { f.mu.Lock(); f.n++; f.mu.Unlock(); return nil }
func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) {
	return nil, fmt.Errorf("no snapshots in this test")
}
func (f *countFSM) Restore(io.ReadCloser) error { return nil }
func (f *countFSM) count() int                  { f.mu.Lock(); defer f.mu.Unlock(); return f.n }

func peerConfig(t *testing.T, caDir, name string) *tls.Config {
	t.Helper()
	ca, err := devcerts.EnsureCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue(caDir, name, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Config(filepath.Join(caDir, devcerts.CACert), cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestRaftOverMutualTLS runs three Raft nodes over the layer, each with a
// certificate of one CA: they elect a leader and replicate an entry. A
// node with a certificate of another CA, and a client without one, get
// nothing from them.
func TestRaftOverMutualTLS(t *testing.T) {
	caDir := t.TempDir()
	var servers []raft.Server
	var layers []*Layer
	for i := range 3 {
		l, err := Listen("127.0.0.1:0", nil, peerConfig(t, caDir, fmt.Sprintf("node-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
		servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprint(i)), Address: raft.ServerAddress(l.Addr().String())})
	}
	var rafts []*raft.Raft
	var fsms []*countFSM
	for i, l := range layers {
		cfg := raft.DefaultConfig()
		cfg.LocalID = servers[i].ID
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 250*time.Millisecond
		cfg.LogOutput = io.Discard
		trans := raft.NewNetworkTransport(l, 3, 5*time.Second, io.Discard)
		store := raft.NewInmemStore()
		fsm := &countFSM{}
		r, err := raft.NewRaft(cfg, fsm, store, store, raft.NewInmemSnapshotStore(), trans)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
				t.Fatal(err)
			}
		}
		rafts, fsms = append(rafts, r), append(fsms, fsm)
		defer r.Shutdown()
	}
	// Elections may repeat on a loaded machine: apply on whichever node
	// leads until one commits.
	deadline := time.Now().Add(30 * time.Second)
	for applied := false; !applied; {
		for _, r := range rafts {
			if r.State() == raft.Leader && r.Apply([]byte("x"), 5*time.Second).Error() == nil {
				applied = true
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no entry committed over TLS within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, f := range fsms {
		for f.count() < 1 {
			if time.Now().After(deadline) {
				t.Fatal("the entry did not reach every node")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// An intruder with another CA's certificate: its dial fails (the peer
	// does not trust it, nor it the peer).
	intruder, err := Listen("127.0.0.1:0", nil, peerConfig(t, t.TempDir(), "intruder"))
	if err != nil {
		t.Fatal(err)
	}
	defer intruder.Close()
	if c, err := intruder.Dial(servers[0].Address, 2*time.Second); err == nil {
		c.Close()
		t.Error("a peer with another CA's certificate connected")
	}
	// A client without a certificate that trusts the CA: the handshake
	// fails, nothing is read.
	cfg := peerConfig(t, caDir, "anon").Clone()
	cfg.Certificates = nil
	cfg.ServerName = "127.0.0.1"
	c, err := tls.Dial("tcp", string(servers[1].Address), cfg)
	if err == nil {
		// TLS 1.3: the server's refusal arrives on the first read.
		c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if err == nil {
		t.Error("a client without a certificate was answered")
	}
}
