package coordinator

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/sluicehq/sluice/protocol"
)

// Peer is one coordinator node of the Raft cluster.
type Peer struct {
	// ID is the node's Raft server id (its Config.NodeID).
	ID string
	// Addr is the node's Raft transport address.
	Addr string
}

// Config configures one coordinator node. Zero values take the defaults
// documented on each field.
type Config struct {
	// NodeID is this node's Raft server id; required.
	NodeID string
	// DataDir holds raft.db (BoltDB) and the file snapshots; required unless
	// InmemStore is set.
	DataDir string
	// RaftBind is the host:port of the TCP transport; ignored when
	// Transport is set.
	RaftBind string
	// RaftAdvertise is the address other nodes reach this one at; default
	// RaftBind.
	RaftAdvertise string
	// Peers is the whole cluster including this node; empty means a single
	// node cluster of this node.
	Peers []Peer
	// Bootstrap bootstraps the cluster configuration when there is no
	// existing Raft state. Only one node of a new cluster sets it.
	Bootstrap bool
	// Transport replaces the TCP transport (tests pass a raft.InmemTransport).
	Transport raft.Transport
	// InmemStore keeps the log, the stable store and the snapshots in memory
	// (tests).
	InmemStore bool
	// HeartbeatTimeout, ElectionTimeout and LeaderLeaseTimeout are the Raft
	// timeouts; defaults 1s, 1s, 500ms (hashicorp/raft's own: shorter ones
	// made a loaded 2-core machine elect a new leader every few seconds).
	// LeaderLeaseTimeout must not exceed HeartbeatTimeout.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// StreamReplicas is the JetStream replica count of the Sluice streams;
	// default 1.
	StreamReplicas int
	// AckWait is the ack wait of the workers' consumer; default 30s.
	AckWait time.Duration
	// MaxDeliver caps deliveries of one task message (a safety net for
	// crashing workers); default 10.
	MaxDeliver int
	// DefaultMaxAttempts is the task attempts when a spec sets none;
	// default 3.
	DefaultMaxAttempts int
	// DefaultBackoff is the first retry delay when a spec sets none;
	// default 1s.
	DefaultBackoff time.Duration
	// KeepRuns is how many finished runs per pipeline the FSM keeps;
	// default 50.
	KeepRuns int
	// StreamMaxBytes caps each Sluice stream but SLUICE_CDC (default
	// DefaultStreamMaxBytes), CDCMaxBytes SLUICE_CDC (default
	// protocol.CDCMaxBytes); DLQMaxAge is how long SLUICE_DLQ keeps a dead
	// letter (default DefaultDLQMaxAge).
	StreamMaxBytes int64
	CDCMaxBytes    int64
	DLQMaxAge      time.Duration
	// CleanupExpiry is how long the leader tries the cleanup of a deleted
	// pipeline before it gives up (and says what is left to remove by
	// hand); default 7 days.
	CleanupExpiry time.Duration
	// TriggerHeaders names the headers of a trigger message (case
	// insensitive) its run's trigger context records besides Nats-Msg-Id;
	// the others are not kept: a header may carry a producer's credentials.
	TriggerHeaders []string
}

// recordsHeader reports whether a trigger's header named k is recorded in
// its run's trigger context (TriggerHeaders).
func (c Config) recordsHeader(k string) bool {
	if strings.EqualFold(k, protocol.HeaderMsgID) {
		return true
	}
	return slices.ContainsFunc(c.TriggerHeaders, func(h string) bool { return strings.EqualFold(h, k) })
}

// recordedHeaders returns the headers of h a run's trigger context records
// (recordsHeader).
func (c Config) recordedHeaders(h map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range h {
		if c.recordsHeader(k) {
			out[k] = v
		}
	}
	return out
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defInt := func(n *int, v int) {
		if *n == 0 {
			*n = v
		}
	}
	def(&c.HeartbeatTimeout, time.Second)
	def(&c.ElectionTimeout, time.Second)
	def(&c.LeaderLeaseTimeout, 500*time.Millisecond)
	def(&c.AckWait, 30*time.Second)
	def(&c.DefaultBackoff, time.Second)
	defInt(&c.StreamReplicas, 1)
	defInt(&c.MaxDeliver, 10)
	defInt(&c.DefaultMaxAttempts, 3)
	defInt(&c.KeepRuns, 50)
	def(&c.DLQMaxAge, DefaultDLQMaxAge)
	def(&c.CleanupExpiry, 7*24*time.Hour)
	if c.StreamMaxBytes == 0 {
		c.StreamMaxBytes = DefaultStreamMaxBytes
	}
	if c.CDCMaxBytes == 0 {
		c.CDCMaxBytes = protocol.CDCMaxBytes
	}
	return c
}

// peers returns the cluster members, this node alone when Peers is empty.
func (c Config) peers(localAddr string) []Peer {
	if len(c.Peers) == 0 {
		return []Peer{{ID: c.NodeID, Addr: localAddr}}
	}
	return c.Peers
}

// Validate checks c, with its defaults applied, without I/O.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.NodeID == "" {
		bad("NodeID is required")
	}
	if c.DataDir == "" && !c.InmemStore {
		bad("DataDir is required (or InmemStore)")
	}
	if c.Transport == nil && c.RaftBind == "" {
		bad("RaftBind is required (or Transport)")
	}
	for name, d := range map[string]time.Duration{
		"HeartbeatTimeout": c.HeartbeatTimeout, "ElectionTimeout": c.ElectionTimeout,
		"LeaderLeaseTimeout": c.LeaderLeaseTimeout, "AckWait": c.AckWait, "DefaultBackoff": c.DefaultBackoff,
		"DLQMaxAge": c.DLQMaxAge, "CleanupExpiry": c.CleanupExpiry,
	} {
		if d < 0 {
			bad("%s %v is negative", name, d)
		}
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		bad("LeaderLeaseTimeout %v exceeds HeartbeatTimeout %v", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > 5 {
		bad("StreamReplicas %d is not from 1 to 5", c.StreamReplicas)
	}
	if c.MaxDeliver < 1 {
		bad("MaxDeliver %d is not positive", c.MaxDeliver)
	}
	if c.DefaultMaxAttempts < 1 {
		bad("DefaultMaxAttempts %d is not positive", c.DefaultMaxAttempts)
	}
	if c.StreamMaxBytes < 0 || c.CDCMaxBytes < 0 {
		bad("StreamMaxBytes %d or CDCMaxBytes %d is negative", c.StreamMaxBytes, c.CDCMaxBytes)
	}
	if c.KeepRuns < 1 {
		bad("KeepRuns %d is not positive", c.KeepRuns)
	}
	if len(c.Peers) > 0 {
		seen := map[string]bool{}
		self := false
		for i, p := range c.Peers {
			switch {
			case p.ID == "" || p.Addr == "":
				bad("Peers[%d] needs an ID and an Addr", i)
			case seen[p.ID]:
				bad("Peers[%d]: id %q appears twice", i, p.ID)
			}
			seen[p.ID] = true
			self = self || p.ID == c.NodeID
		}
		if !self && c.NodeID != "" {
			bad("Peers does not include this node %q", c.NodeID)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("coordinator config: %w", errors.Join(errs...))
	}
	return nil
}
