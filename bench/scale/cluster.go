package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/embednats"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// cluster is the benchmark's cluster: an embedded NATS server in this
// process, a coordinator process and worker processes, all on this
// machine, as `sluice coordinator` and `sluice worker` would run.
type cluster struct {
	dir    string
	stderr io.Writer
	ns     *embednats.Server
	url    string
	nc     *nats.Conn
	js     jetstream.JetStream
	client *coordinator.Client
	coord  *proc
	// coordDir is the coordinator's data directory.
	coordDir string
	workers  []*proc
	slots    int
	coordSeq int
	// coordArgs are added to the coordinator's command line.
	coordArgs []string
}

// startCluster starts NATS with its store under dir.
func startCluster(dir string, slots int, stderr io.Writer) (*cluster, error) {
	ns, err := embednats.Start(embednats.Config{StoreDir: filepath.Join(dir, "jetstream")})
	if err != nil {
		return nil, err
	}
	c := &cluster{dir: dir, stderr: stderr, ns: ns, url: ns.ClientURL(), slots: slots}
	if c.nc, err = nats.Connect(c.url, nats.Name("scale-bench")); err != nil {
		ns.Shutdown()
		return nil, err
	}
	if c.js, err = jetstream.New(c.nc); err != nil {
		c.close()
		return nil, err
	}
	c.client = coordinator.NewClient(c.nc)
	return c, nil
}

// startCoordinator starts a new coordinator on a new data directory and
// waits until it leads.
func (c *cluster) startCoordinator(ctx context.Context, profile string) error {
	c.coordSeq++
	c.coordDir = filepath.Join(c.dir, "raft-"+strconv.Itoa(c.coordSeq))
	args := append([]string{"--role", "coordinator", "--nats", c.url, "--dir", c.coordDir}, c.coordArgs...)
	if profile != "" {
		args = append(args, "--cpuprofile", profile)
	}
	p, err := spawn("coordinator", c.stderr, args...)
	if err != nil {
		return err
	}
	c.coord = p
	deadline := time.Now().Add(60 * time.Second)
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := c.client.Pipelines(actx)
		cancel()
		if err == nil {
			return nil
		}
		if perr, ok := p.exited(); ok {
			return perr
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the coordinator did not lead within 60s: %w", errors.Join(err, ctx.Err()))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stopCoordinator stops the coordinator process.
func (c *cluster) stopCoordinator() error {
	if c.coord == nil {
		return nil
	}
	err := c.coord.stop()
	c.coord = nil
	return err
}

// startWorkers starts n worker processes and waits until the coordinator
// sees each one's heartbeat.
func (c *cluster) startWorkers(ctx context.Context, n int) error {
	base := len(c.workers)
	for i := range n {
		id := fmt.Sprintf("scale-w%d-%d", c.coordSeq, base+i+1)
		p, err := spawn(id, c.stderr, "--role", "worker", "--nats", c.url, "--id", id, "--slots", strconv.Itoa(c.slots))
		if err != nil {
			return err
		}
		c.workers = append(c.workers, p)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := c.client.Status(ctx, protocol.StatusRequest{Limit: 1})
		if err == nil {
			live := map[string]bool{}
			for _, hb := range st.Workers {
				live[hb.Worker] = true
			}
			all := true
			for _, w := range c.workers {
				all = all && live[w.name]
			}
			if all {
				return nil
			}
		}
		for _, w := range c.workers {
			if perr, ok := w.exited(); ok {
				return perr
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%d workers did not report within 60s", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopWorkers stops every worker process.
func (c *cluster) stopWorkers() error {
	errs := make(chan error, len(c.workers))
	for _, w := range c.workers {
		go func() { errs <- w.stop() }()
	}
	var err error
	for range c.workers {
		err = errors.Join(err, <-errs)
	}
	c.workers = nil
	return err
}

// checkAlive returns an error when a process of the cluster ended.
func (c *cluster) checkAlive() error {
	if c.coord != nil {
		if err, ok := c.coord.exited(); ok {
			return err
		}
	}
	for _, w := range c.workers {
		if err, ok := w.exited(); ok {
			return err
		}
	}
	return nil
}

// close stops every process, then NATS.
func (c *cluster) close() error {
	err := errors.Join(c.stopWorkers(), c.stopCoordinator())
	if c.nc != nil {
		c.nc.Close()
	}
	c.ns.Shutdown()
	return err
}

// apply stores a pipeline from its YAML.
func (c *cluster) apply(ctx context.Context, yaml string) error {
	spec, err := pipeline.Parse([]byte(yaml), "scale.yaml")
	if err != nil {
		return err
	}
	_, err = c.client.Apply(ctx, spec)
	return err
}

// lastSeq is the last sequence of a stream.
func (c *cluster) lastSeq(ctx context.Context, stream string) (uint64, error) {
	s, err := c.js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

// unsettled is what the leader's consumer of SLUICE_RESULTS has not
// acked yet: results waiting for delivery and results delivered and not
// acked (not recorded in Raft yet).
func (c *cluster) unsettled(ctx context.Context) (uint64, error) {
	cons, err := c.js.Consumer(ctx, protocol.StreamResults, protocol.ConsumerLeader)
	if err != nil {
		return 0, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}

// workDir makes a fresh work directory: dir when given (emptied of what a
// run leaves), else a temporary one, removed by the returned function.
func workDir(dir string) (string, func(), error) {
	if dir == "" {
		d, err := os.MkdirTemp("", "sluice-bench-scale-")
		if err != nil {
			return "", nil, err
		}
		return d, func() { os.RemoveAll(d) }, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	d, err := os.MkdirTemp(dir, "run-")
	if err != nil {
		return "", nil, err
	}
	return d, func() { os.RemoveAll(d) }, nil
}
