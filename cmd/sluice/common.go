package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/builtin"
)

// newRegistry registers every connector this build has.
func newRegistry() *connectors.Registry { return builtin.Registry() }

// clientFlags are the flags of every command that talks to a cluster.
type clientFlags struct {
	natsURL string
	dataDir string
	timeout time.Duration
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.natsURL, "nats", "", "NATS server `URL`(s), comma-separated (default $SLUICE_NATS, then the URL a local sluice dev wrote in --data-dir, then nats://127.0.0.1:4222)")
	fs.StringVar(&c.dataDir, "data-dir", ".sluice", "data `directory` of a local sluice dev, where it writes nats.url")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "how long to wait for the cluster to answer")
}

// url finds the NATS URL: the flag, $SLUICE_NATS, the file a local dev
// process wrote, or the NATS default.
func (c *clientFlags) url() string {
	if c.natsURL != "" {
		return c.natsURL
	}
	if u := os.Getenv("SLUICE_NATS"); u != "" {
		return u
	}
	if b, err := os.ReadFile(filepath.Join(c.dataDir, "nats.url")); err == nil {
		return strings.TrimSpace(string(b))
	}
	return nats.DefaultURL
}

func (c *clientFlags) connect(name string) (*nats.Conn, error) {
	url := c.url()
	nc, err := nats.Connect(url, nats.Name(name), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s (is a cluster running? start one with `sluice dev`): %w", url, err)
	}
	return nc, nil
}

// logFlags configure the process logger.
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	switch l.format {
	case "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("--log-format: %q is not text or json", l.format)
	}
	return slog.New(h), nil
}

// parse parses flags, reporting -h as flag.ErrHelp after printing usage.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	return nil
}

// newFlagSet makes a flag set that prints to stderr and returns errors.
func newFlagSet(name, usageLine string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: sluice %s\n\nFlags:\n", usageLine)
		fs.PrintDefaults()
	}
	return fs
}

// waitShutdown waits for fn with a deadline, for orderly shutdown steps.
func waitShutdown(ctx context.Context, d time.Duration, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d)
	defer cancel()
	if err := fn(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
