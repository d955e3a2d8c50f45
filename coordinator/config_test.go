package coordinator

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	good := Config{NodeID: "n1", DataDir: "/data", RaftBind: "127.0.0.1:7000"}
	if err := good.Validate(); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
	tests := []struct {
		name string
		edit func(c *Config)
		want string
	}{
		{"no node id", func(c *Config) { c.NodeID = "" }, "NodeID"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "DataDir"},
		{"no bind", func(c *Config) { c.RaftBind = "" }, "RaftBind"},
		{"lease above heartbeat", func(c *Config) { c.LeaderLeaseTimeout = 2 * time.Second }, "LeaderLeaseTimeout"},
		{"peers without self", func(c *Config) { c.Peers = []Peer{{ID: "n2", Addr: "a:1"}} }, "does not include"},
		{"duplicate peer", func(c *Config) { c.Peers = []Peer{{ID: "n1", Addr: "a:1"}, {ID: "n1", Addr: "b:1"}} }, "twice"},
		{"negative keep", func(c *Config) { c.KeepRuns = -1 }, "KeepRuns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.edit(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error about %s", err, tt.want)
			}
		})
	}
	inmem := Config{NodeID: "n1", InmemStore: true, RaftBind: "127.0.0.1:0"}
	if err := inmem.Validate(); err != nil {
		t.Errorf("in-memory config: %v", err)
	}
}
