package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/telemetry"
)

// httpURLFile is the file of the data directory that holds the HTTP API's
// URL while `sluice dev` serves it.
const httpURLFile = "http.url"

// devOptions are the flags of `sluice dev`.
type devOptions struct {
	dataDir  string
	port     int
	workers  int
	slots    int
	httpAddr string
	tf       tokenFlags
	drain    time.Duration
	lf       logFlags
	ef       envFlags
	headers  []string
}

func newDevCmd() *cobra.Command {
	var o devOptions
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "run a whole cluster in one process: NATS, a coordinator, workers, the HTTP API",
		Long: `Dev runs a whole cluster in one process: an embedded NATS server with
JetStream, a single-node Raft coordinator, workers and the HTTP API, with its
state in --data-dir. It locks the directory: a second dev on it exits at
once, naming the process that has it. Once the leader is up it writes the
NATS URL to <data-dir>/nats.url and the HTTP API's to <data-dir>/http.url,
which the client commands run from the same directory use; it removes them
when it stops.

SIGINT or SIGTERM stops it: workers drain their tasks (--drain-timeout),
then the coordinator and NATS stop; a second signal exits at once. Run it in
the background from a built binary (make build; bin/sluice dev &), so that
kill %1 stops sluice itself.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDev(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.dataDir, "data-dir", ".sluice", "where NATS, Raft and the run state live")
	fs.IntVar(&o.port, "nats-port", 0, "NATS client port (0 picks a free one; the URL is written to <data-dir>/nats.url)")
	fs.IntVar(&o.workers, "workers", 2, "workers to run in this process")
	fs.IntVar(&o.slots, "slots", 2, "tasks each worker runs at once")
	fs.StringVar(&o.httpAddr, "http", "127.0.0.1:8089", "HTTP API address (127.0.0.1:0: any free port; empty: off); a taken one is an error")
	o.tf.register(fs)
	fs.DurationVar(&o.drain, "drain-timeout", 30*time.Second, "how long stopping may take: workers drain in-flight tasks for this less 5s, then the coordinator and NATS stop; the process exits by then in any case")
	o.lf.register(fs)
	o.ef.register(fs)
	fs.StringSliceVar(&o.headers, "trigger-headers", splitEnvList("SLUICE_TRIGGER_HEADERS"), "trigger message headers a run records besides Nats-Msg-Id (comma-separated; default $SLUICE_TRIGGER_HEADERS)")
	return cmd
}

// stopGrace is the part of the drain timeout left to the coordinator and
// NATS to stop after the workers drained.
const stopGrace = 5 * time.Second

// workerDrain is how long the workers of a dev stopping within drain wait
// for their in-flight tasks.
func workerDrain(drain time.Duration) time.Duration {
	return max(drain-stopGrace, drain/2)
}

func runDev(ctx context.Context, o devOptions, stdout, stderr io.Writer) error {
	log, err := o.lf.logger(stderr)
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(o.dataDir)
	if err != nil {
		return err
	}
	lock, err := devcluster.LockDir(abs)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	if err := os.Remove(filepath.Join(abs, httpURLFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove the stale %s: %w", httpURLFile, err)
	}
	var ln net.Listener
	var token string
	if o.httpAddr != "" {
		if token, err = o.tf.token(); err != nil {
			return err
		}
		if ln, err = listenAPI(o.httpAddr); err != nil {
			return err
		}
		defer ln.Close()
		if err := checkAPIBind(ln, token); err != nil {
			return err
		}
	}
	tp, err := telemetry.Setup(ctx, telemetry.Config{Service: "sluice-dev"})
	if err != nil {
		return err
	}
	defer waitShutdown(ctx, 5*time.Second, tp.Shutdown)
	reg, log := o.ef.registry("sluice dev", log)
	done := make(chan error, 1)
	go func() {
		done <- runLocal(ctx, localConfig{
			Config: devcluster.Config{DataDir: abs, NATSPort: o.port, Workers: o.workers, Slots: o.slots, DrainTimeout: workerDrain(o.drain),
				Log: log, Tracer: tp, Registry: reg, Lock: lock, TriggerHeaders: o.headers},
			Listener: ln, APIToken: token,
		}, func(ctx context.Context, l *local) error {
			fmt.Fprintf(stdout, "sluice dev is running (pid %d)\n  NATS:      %s (in %s)\n", os.Getpid(), l.NATSURL, filepath.Join(abs, devcluster.URLFile))
			if l.HTTPURL != "" {
				fmt.Fprintf(stdout, "  HTTP API:  %s/v1/status (in %s)\n  console:   %s%s\n", l.HTTPURL, filepath.Join(abs, httpURLFile), l.HTTPURL, consolePrefix)
			}
			fmt.Fprintf(stdout, "  workers:   %d x %d slots\n  data dir:  %s\n\nIn another shell, from this directory:\n  sluice apply -f pipeline.yaml\n  sluice run <pipeline> --wait\n  sluice status\nCtrl-C or SIGTERM stops it (in-flight tasks drain first, at most %s).\n", o.workers, o.slots, abs, o.drain)
			<-ctx.Done()
			fmt.Fprintln(stdout, "stopping: draining workers")
			return nil
		})
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	// Stopping: whatever state the cluster is in, the process ends within
	// the drain timeout.
	select {
	case err := <-done:
		return err
	case <-time.After(o.drain):
		return fmt.Errorf("dev did not stop within --drain-timeout %s: exiting without a clean shutdown (the next start goes on from the Raft state and the streams)", o.drain)
	}
}

// localConfig configures `sluice dev` and the tests' all-in-one clusters:
// one with the HTTP API when Listener or HTTPAddr is set.
type localConfig struct {
	devcluster.Config
	// Listener is where the HTTP API listens; HTTPAddr is listened on
	// when Listener is nil.
	Listener net.Listener
	HTTPAddr string
	APIToken string
}

// local is a running all-in-one cluster.
type local struct {
	*devcluster.Cluster
	HTTPURL string
}

// runLocal runs an all-in-one cluster with the HTTP API around body; the
// API's URL is in <data dir>/http.url while body runs.
func runLocal(ctx context.Context, cfg localConfig, body func(ctx context.Context, l *local) error) error {
	ln := cfg.Listener
	if ln == nil && cfg.HTTPAddr != "" {
		var err error
		if ln, err = listenAPI(cfg.HTTPAddr); err != nil {
			return err
		}
		defer ln.Close()
	}
	return devcluster.Run(ctx, cfg.Config, func(ctx context.Context, c *devcluster.Cluster) error {
		l := &local{Cluster: c}
		if ln != nil {
			js, err := jetstream.New(c.NC)
			if err != nil {
				return err
			}
			stop := serveAPI(ctx, ln, c.Client, js, cfg.Registry, cfg.APIToken, cfg.Log)
			defer stop()
			l.HTTPURL = "http://" + ln.Addr().String()
			urlFile := filepath.Join(cfg.DataDir, httpURLFile)
			if err := os.WriteFile(urlFile, []byte(l.HTTPURL+"\n"), 0o644); err != nil {
				return fmt.Errorf("write %s: %w", urlFile, err)
			}
			defer func() {
				if err := os.Remove(urlFile); err != nil && !errors.Is(err, os.ErrNotExist) {
					cfg.Log.Warn("remove http.url", "err", err)
				}
			}()
		}
		return body(ctx, l)
	})
}
