// Command sluice is the one Sluice binary: an embedded all-in-one cluster
// (dev, demo), the cluster's processes (coordinator, worker) and the client
// commands (apply, run, status, rollback, compact, vacuum, pipelines, ...).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sluicehq/sluice/connectors"
)

func main() {
	if err := setUmask(); err != nil {
		fmt.Fprintln(os.Stderr, "sluice:", err)
		os.Exit(2)
	}
	ctx, stop := signalContext()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		// Errors may quote a server's: never show a password they hold.
		fmt.Fprintln(os.Stderr, "sluice:", connectors.Redact(err.Error()))
		var ue *usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// signalContext is cancelled by the first SIGINT or SIGTERM, so that a
// command stops in order; a second one exits at once.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-done:
			return
		}
		select {
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "sluice: second %s: exiting without waiting\n", s)
			os.Exit(130)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel()
	}
}

// run runs the command args name, writing to stdout and stderr. Tests
// call it in-process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRootCmd()
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(normalizeArgs(root, args))
	return root.ExecuteContext(ctx)
}

// usageError is a command line that does not say what to do: an unknown
// flag, a missing or extra argument. main exits 2 for it.
type usageError struct {
	err  error
	path string // the command's path, for the help hint
}

func (e *usageError) Error() string {
	return fmt.Sprintf("%v (see '%s --help')", e.err, e.path)
}

func (e *usageError) Unwrap() error { return e.err }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "sluice",
		Short: "Sluice moves data into your platform: full and incremental loads, CDC, triggers, rollback.",
		Long: `Sluice moves data into your platform: full and incremental loads, CDC, triggers, rollback.

Start with 'sluice demo', or run a cluster in one process with 'sluice dev'
and talk to it from the same directory with 'sluice apply', 'sluice run',
'sluice status'.`,
		Version:       versionString(),
		SilenceErrors: true,
		SilenceUsage:  true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			msg := fmt.Sprintf("unknown command %q", args[0])
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, " or "))
			}
			return errors.New(msg)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	root.SetVersionTemplate("sluice {{.Version}}\n")
	root.SuggestionsMinimumDistance = 2
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{err: err, path: cmd.CommandPath()}
	})
	root.AddGroup(
		&cobra.Group{ID: "start", Title: "Try it and run a cluster:"},
		&cobra.Group{ID: "pipelines", Title: "Pipelines and runs:"},
		&cobra.Group{ID: "streams", Title: "Change data capture and dead letters:"},
		&cobra.Group{ID: "security", Title: "Security:"},
	)
	add := func(group string, cmds ...*cobra.Command) {
		for _, c := range cmds {
			c.GroupID = group
			root.AddCommand(c)
		}
	}
	add("start", newDemoCmd(), newDevCmd(), newCoordinatorCmd(), newWorkerCmd())
	add("pipelines", newApplyCmd(), newRunCmd(), newTriggerCmd(), newStatusCmd(), newBackfillCmd(), newCheckCmd(),
		newRollbackCmd(), newCompactCmd(), newVacuumCmd(), newPipelinesCmd(), newDeleteCmd())
	add("streams", newCDCCmd(), newDLQCmd())
	add("security", newSecurityCmd())
	root.AddCommand(newVersionCmd())
	wrapArgs(root)
	return root
}

// wrapArgs makes every command's argument errors usage errors that point at
// its help.
func wrapArgs(c *cobra.Command) {
	if c.Args != nil {
		check := c.Args
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return &usageError{err: err, path: cmd.CommandPath()}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		wrapArgs(sub)
	}
}

// group makes cmd a group of subcommands: run without one, it says which
// it has.
func group(cmd *cobra.Command, subs ...*cobra.Command) *cobra.Command {
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var names []string
		for _, s := range cmd.Commands() {
			if s.IsAvailableCommand() {
				names = append(names, s.Name())
			}
		}
		return &usageError{err: fmt.Errorf("%s: give a subcommand: %s", cmd.CommandPath(), strings.Join(names, ", ")), path: cmd.CommandPath()}
	}
	cmd.AddCommand(subs...)
	return cmd
}

// pipelineArg accepts exactly one argument, a pipeline name.
func pipelineArg(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) == 0:
			return fmt.Errorf("name the %s: %s", what, cmd.UseLine())
		case len(args) > 1:
			return fmt.Errorf("one %s only, got %d arguments: %q", what, len(args), args)
		}
		return nil
	}
}

// normalizeArgs keeps the flag spellings of the standard flag package
// working under pflag: -name for --name (-wait, -json) and --f for -f.
func normalizeArgs(root *cobra.Command, args []string) []string {
	long, short := map[string]bool{}, map[string]bool{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.LocalFlags(), c.PersistentFlags()} {
			fs.VisitAll(func(f *pflag.Flag) {
				long[f.Name] = true
				if f.Shorthand != "" {
					short[f.Shorthand] = true
				}
			})
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch {
		case strings.HasPrefix(a, "--") && len(name) == 1 && short[name] && !long[name]:
			a = a[1:]
		case strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && len(name) > 1 && long[name]:
			a = "-" + a
		}
		out = append(out, a)
	}
	return out
}
