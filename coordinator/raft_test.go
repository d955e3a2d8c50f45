package coordinator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// cluster starts three coordinators on InmemTransport with in-memory
// stores; node 0 bootstraps the configuration.
func cluster(t *testing.T, url string, mem *memConnectors) ([]*node, []*raft.InmemTransport) {
	t.Helper()
	return clusterWith(t, url, mem.registry())
}

// clusterWith starts three coordinators as cluster does, with registry reg.
func clusterWith(t *testing.T, url string, reg *connectors.Registry) ([]*node, []*raft.InmemTransport) {
	t.Helper()
	var trans []*raft.InmemTransport
	var peers []Peer
	for i := range 3 {
		addr, tr := raft.NewInmemTransport("")
		trans = append(trans, tr)
		peers = append(peers, Peer{ID: fmt.Sprintf("n%d", i), Addr: string(addr)})
	}
	for _, a := range trans {
		for _, b := range trans {
			if a != b {
				a.Connect(b.LocalAddr(), b)
			}
		}
	}
	var nodes []*node
	for i := range 3 {
		nodes = append(nodes, startNode(t, Config{NodeID: peers[i].ID, Peers: peers, Bootstrap: i == 0,
			Transport: trans[i], InmemStore: true}, url, reg, nil))
	}
	return nodes, trans
}

// leaderOf waits until exactly one of the live nodes leads and all of them
// agree on it.
func leaderOf(t *testing.T, nodes []*node) int {
	t.Helper()
	idx := -1
	eventually(t, 30*time.Second, "one leader known to all live nodes", func() bool {
		idx = -1
		for i, n := range nodes {
			if n == nil {
				continue
			}
			if n.IsLeader() {
				if idx >= 0 {
					return false
				}
				idx = i
			}
		}
		if idx < 0 {
			return false
		}
		for _, n := range nodes {
			if n != nil && n.LeaderID() != nodes[idx].cfg.NodeID {
				return false
			}
		}
		return true
	})
	return idx
}

// killLeader kills node first, the leader, cuts it off the others, and
// returns the new leader.
func killLeader(t *testing.T, nodes []*node, trans []*raft.InmemTransport, first int) int {
	t.Helper()
	nodes[first].Kill()
	for i, tr := range trans {
		if i != first {
			tr.Disconnect(trans[first].LocalAddr())
		}
	}
	nodes[first] = nil
	return leaderOf(t, nodes)
}

func TestRaftFailover(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	nodes, trans := cluster(t, url, mem)
	first := leaderOf(t, nodes)

	cl := NewClient(connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := cl.Apply(ctx, memSpec("orders", 3)); err != nil {
		t.Fatal(err)
	}
	// A run planned and published by the first leader; no worker yet.
	reply, err := cl.Run(ctx, protocol.RunRequest{Pipeline: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "run published", func() bool {
		r, ok := nodes[first].fsm.run(reply.RunID)
		return ok && r.Published
	})
	// Every node holds the state before the leader dies.
	for i, n := range nodes {
		eventually(t, 10*time.Second, fmt.Sprintf("node %d has the run", i), func() bool {
			_, ok := n.fsm.run(reply.RunID)
			return ok
		})
	}

	killed := nodes[first].cfg.NodeID
	second := killLeader(t, nodes, trans, first)
	if nodes[second].cfg.NodeID == killed {
		t.Fatalf("killed node %s still leads", killed)
	}
	p, ok := nodes[second].fsm.pipeline("orders")
	if !ok || p.Revision != 1 || p.Spec.Source.Kind != "memsrc" {
		t.Fatalf("new leader's pipeline: %+v, %v", p, ok)
	}

	// The control API follows the leader.
	st, err := cl.Status(ctx, protocol.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Leader != nodes[second].cfg.NodeID || len(st.Pipelines) != 1 || len(st.Nodes) != 3 {
		t.Errorf("status after failover: leader %q pipelines %+v nodes %+v", st.Leader, st.Pipelines, st.Nodes)
	}

	// The new leader carries the run to its commit once a worker answers.
	fakeWorker(t, url, succeed)
	run, err := cl.WaitRun(ctx, reply.RunID, 50*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	if run.State != protocol.RunCommitted || run.Version != 1 || run.TasksDone != 3 {
		t.Errorf("run after failover %+v", run)
	}
	if n := len(mem.committed()); n != 1 {
		t.Errorf("%d sink commits, want 1", n)
	}
}
