package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/builtin"
)

// newRegistry registers every connector this build has.
func newRegistry() *connectors.Registry {
	return newRegistryIn("")
}

// newRegistryIn registers every connector this build has, for a process
// that opens connectors: an unset `${NAME}` is said to be missing from the
// environment of what (its pid added). Specs may refer to the variables
// SLUICE_ALLOW_ENV names besides SLUICE_*.
func newRegistryIn(what string) *connectors.Registry {
	reg := connectors.NewRegistry()
	if what != "" {
		reg.SetProcess(fmt.Sprintf("%s (pid %d)", what, os.Getpid()))
	}
	reg.AllowEnv(splitEnvList("SLUICE_ALLOW_ENV")...)
	allow, _ := strconv.ParseBool(os.Getenv("SLUICE_ALLOW_RAW_SQL"))
	reg.RefuseRawSQL(!allow)
	confinePaths(reg, splitEnvList("SLUICE_PATH_ROOTS"))
	builtin.Register(reg)
	return reg
}

// splitEnvList returns the comma-separated names of environment variable
// v, empty ones left out.
func splitEnvList(v string) []string {
	var out []string
	for _, n := range strings.Split(os.Getenv(v), ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// envFlags say which environment variables specs may refer to, in a
// process that opens connectors.
type envFlags struct {
	allow  []string
	rawSQL bool
	roots  []string
}

func (e *envFlags) register(fs *pflag.FlagSet) {
	fs.StringSliceVar(&e.allow, "allow-env", nil, "environment variables specs may refer to as ${NAME} besides SLUICE_* (comma-separated; added to $SLUICE_ALLOW_ENV)")
	fs.StringSliceVar(&e.roots, "path-roots", nil, "directories the local paths of specs and trigger parameters must be in, symlinks resolved (comma-separated; default $SLUICE_PATH_ROOTS; none: any path)")
	fs.BoolVar(&e.rawSQL, "allow-raw-sql", false, "accept spec fields that reach SQL unquoted (a postgres source's where, a sink's column types; default $SLUICE_ALLOW_RAW_SQL)")
}

// registry returns the registry of a process named what that opens
// connectors, and log scrubbed of the values its `${NAME}` references
// expand to.
func (e *envFlags) registry(what string, log *slog.Logger) (*connectors.Registry, *slog.Logger) {
	reg := newRegistryIn(what)
	reg.AllowEnv(e.allow...)
	if e.rawSQL {
		reg.RefuseRawSQL(false)
	}
	if len(e.roots) > 0 {
		confinePaths(reg, e.roots)
	}
	return reg, slog.New(reg.LogHandler(log.Handler()))
}

// logFlags configure the process logger.
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("--log-level: %q is not debug, info, warn or error", l.level)
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

// outputFlag is --output (-o) of a read command: a table for people or
// JSON for programs. --json is kept as another name for -o json.
type outputFlag struct {
	format string
	json   bool
}

// addOutputFlag adds --output to cmd, checked before cmd runs.
func addOutputFlag(cmd *cobra.Command) *outputFlag {
	o := &outputFlag{}
	fs := cmd.Flags()
	fs.StringVarP(&o.format, "output", "o", "table", "output format: table or json")
	fs.BoolVar(&o.json, "json", false, "the same as --output json")
	_ = fs.MarkHidden("json")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		if o.format != "table" && o.format != "json" {
			return &usageError{err: fmt.Errorf("--output %q: want table or json", o.format), path: cmd.CommandPath()}
		}
		return nil
	}
	return o
}

// isJSON reports whether JSON was asked for.
func (o *outputFlag) isJSON() bool { return o.format == "json" || o.json }

// print prints v as JSON when it was asked for, else calls table.
func (o *outputFlag) print(w io.Writer, v any, table func(w io.Writer)) error {
	if o.isJSON() {
		return printJSON(w, v)
	}
	table(w)
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
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

// isTerminal reports whether w is a terminal, where a progress line may be
// redrawn in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// confinePaths confines the local paths of reg's connectors to roots
// (relative ones taken from the working directory); none: no confinement.
func confinePaths(reg *connectors.Registry, roots []string) {
	abs := make([]string, 0, len(roots))
	for _, r := range roots {
		if a, err := filepath.Abs(r); err == nil {
			abs = append(abs, a)
		}
	}
	_ = reg.ConfinePaths(abs...) // absolute: never refused
}
