package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/telemetry"
)

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dev", "dev [flags]", stderr)
	dataDir := fs.String("data-dir", ".sluice", "where NATS, Raft and the run state live")
	port := fs.Int("nats-port", 0, "NATS client port (0 picks a free one; the URL is written to <data-dir>/nats.url)")
	workers := fs.Int("workers", 2, "workers to run in this process")
	slots := fs.Int("slots", 2, "tasks each worker runs at once")
	httpAddr := fs.String("http", "127.0.0.1:8089", "HTTP API address (a free port is used when it is taken; empty turns it off)")
	token := fs.String("api-token", os.Getenv("SLUICE_API_TOKEN"), "bearer token the HTTP API requires (default $SLUICE_API_TOKEN; empty: none)")
	var lf logFlags
	lf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	tp, err := telemetry.Setup(ctx, telemetry.Config{Service: "sluice-dev"})
	if err != nil {
		return err
	}
	defer waitShutdown(ctx, 5*time.Second, tp.Shutdown)
	abs, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	return runLocal(ctx, localConfig{
		Config: devcluster.Config{DataDir: abs, NATSPort: *port, Workers: *workers, Slots: *slots,
			Log: log, Tracer: tp, Registry: newRegistry()},
		HTTPAddr: *httpAddr, APIToken: *token,
	}, func(ctx context.Context, l *local) error {
		fmt.Fprintf(stdout, "sluice dev is running\n  NATS:      %s (also in %s)\n", l.NATSURL, filepath.Join(abs, "nats.url"))
		if l.HTTPURL != "" {
			fmt.Fprintf(stdout, "  HTTP API:  %s/v1/status\n", l.HTTPURL)
		}
		fmt.Fprintf(stdout, "  workers:   %d x %d slots\n  data dir:  %s\n\nIn another shell, from this directory:\n  sluice apply -f pipeline.yaml\n  sluice run <pipeline> --wait\n  sluice status\nCtrl-C stops (in-flight tasks drain first).\n", *workers, *slots, abs)
		<-ctx.Done()
		fmt.Fprintln(stdout, "stopping: draining workers")
		return nil
	})
}
