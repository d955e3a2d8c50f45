package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/natsauth"
)

// disconnectGrace is how long a waiting command lets a lost NATS
// connection come back (another server of a NATS cluster) before it says
// the cluster is gone.
const disconnectGrace = 3 * time.Second

// clientFlags are the flags of every command that talks to a cluster.
type clientFlags struct {
	natsURL   string
	dataDir   string
	timeout   time.Duration
	lostAfter time.Duration
	auth      natsAuthFlags
}

func (c *clientFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&c.natsURL, "nats", "", "NATS server `URL`(s), comma-separated (default $SLUICE_NATS, then the URL a sluice dev running here wrote to <data-dir>/nats.url)")
	fs.StringVar(&c.dataDir, "data-dir", ".sluice", "data `directory` of a sluice dev running here, where it writes nats.url")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "how long to wait for the cluster to answer a request")
	fs.DurationVar(&c.lostAfter, "lost-after", 10*time.Second, "waiting commands: give up when no leader answered for this long (a lost NATS connection: after 3s); what was started goes on")
	c.auth.register(fs)
}

// registerServer registers the flags a cluster process (coordinator,
// worker) needs to find NATS.
func (c *clientFlags) registerServer(fs *pflag.FlagSet) {
	fs.StringVar(&c.natsURL, "nats", "", "NATS server `URL`(s), comma-separated (default $SLUICE_NATS, then <data-dir>/nats.url, then nats://127.0.0.1:4222)")
	fs.StringVar(&c.dataDir, "data-dir", ".sluice", "data `directory`")
	c.auth.register(fs)
}

// natsOptions are the options that authenticate a connection to the NATS
// server at a URL that came from from (a local dev's nats.url lends its
// admin key to a client without credentials).
func (c *clientFlags) natsOptions(from string) ([]nats.Option, error) {
	devDir := ""
	if from == filepath.Join(c.dataDir, devcluster.URLFile) {
		devDir = c.dataDir
	}
	return c.auth.options(devDir)
}

// serverURL is the NATS URL of a cluster process and where it came from:
// as for a client, then the NATS default, which the process logs.
func (c *clientFlags) serverURL() (url, from string) {
	if url, from, err := c.resolve(); err == nil {
		return url, from
	}
	return nats.DefaultURL, "the default"
}

// noClusterError says that no cluster was named and none runs here.
type noClusterError struct{ dataDir string }

func (e *noClusterError) Error() string {
	file := filepath.Join(e.dataDir, "nats.url")
	if pid, held := devcluster.LockHolder(e.dataDir); held {
		return fmt.Sprintf("no cluster to talk to yet: the sluice dev in %s (pid %d) has not written %s: it is starting, or stuck (see its output)", e.dataDir, pid, file)
	}
	return fmt.Sprintf("no cluster to talk to: no --nats, no $SLUICE_NATS and no %s here; start one with `sluice dev` in this directory, or name one with --nats nats://host:4222", file)
}

// named reports whether the user named the cluster: --nats or $SLUICE_NATS.
func (c *clientFlags) named() bool { return c.natsURL != "" || os.Getenv("SLUICE_NATS") != "" }

// resolve finds the cluster's NATS URL and says where it came from: the
// flag, $SLUICE_NATS or the nats.url a local dev wrote. It never falls
// back to a default.
func (c *clientFlags) resolve() (url, from string, err error) {
	if c.natsURL != "" {
		return c.natsURL, "--nats", nil
	}
	if u := os.Getenv("SLUICE_NATS"); u != "" {
		return u, "$SLUICE_NATS", nil
	}
	path := filepath.Join(c.dataDir, "nats.url")
	b, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b)), path, nil
	}
	return "", "", &noClusterError{dataDir: c.dataDir}
}

// cluster is a client's connection to a cluster.
type cluster struct {
	nc     *nats.Conn
	client *coordinator.Client
	url    string
	// gone is cancelled, with the reason as its cause, once the connection
	// closed or stayed down for disconnectGrace.
	gone     context.Context
	markGone context.CancelCauseFunc
}

// connect connects to the cluster the flags name. When the URL came from a
// local dev's nats.url it says so on stderr (quiet: not at all).
func (c *clientFlags) connect(name string, stderr io.Writer) (*cluster, error) {
	url, from, err := c.resolve()
	if err != nil {
		return nil, err
	}
	if stderr != nil && !c.named() {
		fmt.Fprintf(stderr, "using %s from %s\n", natsauth.RedactURL(url), from)
	}
	auth, err := c.natsOptions(from)
	if err != nil {
		return nil, err
	}
	cl := &cluster{url: natsauth.RedactURL(url)}
	cl.gone, cl.markGone = context.WithCancelCause(context.Background())
	var timer *time.Timer
	nc, err := nats.Connect(url, append(auth, nats.Name(name), nats.Timeout(5*time.Second),
		nats.MaxReconnects(-1), nats.ReconnectWait(500*time.Millisecond),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			cause := "connection lost"
			if err != nil {
				cause += ": " + err.Error()
			}
			timer = time.AfterFunc(disconnectGrace, func() {
				if !nc.IsConnected() {
					cl.markGone(fmt.Errorf("%s, and no server answered for %s", cause, disconnectGrace))
				}
			})
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			if timer != nil {
				timer.Stop()
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { cl.markGone(errors.New("connection closed")) }))...)
	if err != nil {
		hint := "is a cluster running there?"
		if !c.named() {
			if _, held := devcluster.LockHolder(c.dataDir); !held {
				hint = fmt.Sprintf("the sluice dev that wrote %s is no longer running: start it again with `sluice dev`", from)
			}
		}
		return nil, fmt.Errorf("connect to NATS at %s (%s): %w", natsauth.RedactURL(url), hint, err)
	}
	cl.nc = nc
	cl.client = coordinator.NewClient(nc)
	return cl, nil
}

func (cl *cluster) Close() { cl.nc.Close() }

// session connects to the cluster the flags name and calls fn with a
// context bounded by --timeout: one command's requests.
func (c *clientFlags) session(cmd *cobra.Command, fn func(ctx context.Context, cl *cluster) error) error {
	cl, err := c.connect(strings.ReplaceAll(cmd.CommandPath(), " ", "-"), cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), c.timeout)
	defer cancel()
	return fn(ctx, cl)
}

// lostError says that a waiting command lost its cluster: what it waited
// for goes on without it, and follow says how to follow it later.
type lostError struct {
	url, what, follow string
	cause             error
}

func (e *lostError) Error() string {
	return fmt.Sprintf("lost the cluster at %s while waiting for %s: %v\n%s goes on if the cluster does; follow it later with: %s",
		e.url, e.what, e.cause, e.what, e.follow)
}

func (e *lostError) Unwrap() error { return e.cause }

// follow calls poll every interval until it reports done. It gives up with
// a *lostError when the connection is gone or a poll got no answer within
// lostAfter; what names what it waits for, follow the command that follows
// it later. An interrupt (ctx) says the same without calling it lost.
func (cl *cluster) follow(ctx context.Context, lostAfter, every time.Duration, what, follow string, poll func(ctx context.Context) (bool, error)) error {
	if lostAfter <= 0 {
		lostAfter = 10 * time.Second
	}
	for {
		pctx, cancel := context.WithTimeoutCause(ctx, lostAfter, fmt.Errorf("no answer from a leader for %s", lostAfter))
		stop := context.AfterFunc(cl.gone, cancel)
		done, err := poll(pctx)
		stop()
		cause := context.Cause(pctx)
		cancel()
		switch {
		case err == nil && done:
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("stopped waiting for %s, which goes on; follow it with: %s", what, follow)
		case cl.gone.Err() != nil:
			return &lostError{url: cl.url, what: what, follow: follow, cause: context.Cause(cl.gone)}
		case err != nil && errors.Is(err, context.DeadlineExceeded):
			return &lostError{url: cl.url, what: what, follow: follow, cause: cause}
		case err != nil && (errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrNoServers)):
			return &lostError{url: cl.url, what: what, follow: follow, cause: err}
		case err != nil:
			return err
		}
		select {
		case <-ctx.Done():
		case <-cl.gone.Done():
		case <-time.After(every):
		}
	}
}
