package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/spf13/pflag"

	"github.com/sluicehq/sluice/telemetry"
)

// metricsFlags is the --metrics flag of the process commands.
type metricsFlags struct{ addr string }

func (f *metricsFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.addr, "metrics", "", "serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 (empty: off; no authentication: bind to a private address)")
}

// serve listens on the flag's address (a taken one is an error before the
// process joins the cluster) and serves new metrics there until the
// returned stop is called. With no address it returns nil metrics, which
// record nothing.
func (f metricsFlags) serve(ctx context.Context, log *slog.Logger) (*telemetry.Metrics, func(), error) {
	if f.addr == "" {
		return nil, func() {}, nil
	}
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return nil, nil, fmt.Errorf("--metrics: %w", err)
	}
	m := telemetry.NewMetrics()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := telemetry.ServeMetrics(ctx, ln, m, log); err != nil {
			log.Error("metrics server", "err", err)
		}
	}()
	log.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return m, func() { cancel(); <-done }, nil
}
