package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

func newApplyCmd() *cobra.Command {
	var (
		cf     clientFlags
		paths  []string
		check  bool
		dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f spec.yaml [-f more.yaml | -f dir/ | -f -]",
		Short: "store pipeline specs (files, directories of them, several documents per file)",
		Long: `Apply stores pipeline specs in the cluster. Every document of every file is
checked before any is sent, so a bad one changes nothing. A file may hold
several specs separated by '---'; -f dir/ applies every *.yaml and *.yml
file in the directory; -f - reads standard input.

Relative paths in a spec resolve against its file's directory (the current
directory for standard input). ${NAME} references stay as written: the
coordinator and the workers expand them from their own environment.

--check asks the coordinator to connect to every source and sink first
and check that the tables, columns, keys (and for cdc, replica identity)
or paths the specs name are there; nothing is stored unless all pass.`,
		Example: `  sluice apply -f examples/files-full-load.yaml
  sluice apply -f examples/ --check
  sluice apply -f pipelines.yaml --dry-run`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(paths) == 0 {
				return &usageError{err: errors.New("give at least one spec with -f"), path: cmd.CommandPath()}
			}
			stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
			specs, err := loadSpecs(paths, newRegistry(), cmd.InOrStdin(), stderr)
			if err != nil {
				return err
			}
			cl, err := cf.connect("sluice-apply", stderr)
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), cf.timeout)
			defer cancel()
			return applySpecs(ctx, cl.client, specs, coordinator.ApplyOptions{Check: check || dryRun, DryRun: dryRun}, stdout)
		},
	}
	fs := cmd.Flags()
	cf.register(fs)
	fs.StringArrayVarP(&paths, "file", "f", nil, "pipeline spec `file` (YAML, '---' between specs), a directory of them, or - for standard input; repeat for several")
	fs.BoolVar(&check, "check", false, "have the coordinator connect to each source and sink and check what the specs name before storing anything")
	fs.BoolVar(&dryRun, "dry-run", false, "check as --check does, and store nothing")
	_ = cmd.MarkFlagFilename("file", "yaml", "yml")
	return cmd
}

// applySpecs sends the specs, all checked first when opts ask for it: a
// check that fails stores none of them.
func applySpecs(ctx context.Context, c *coordinator.Client, specs []pipeline.Spec, opts coordinator.ApplyOptions, stdout io.Writer) error {
	// A cdc_apply pipeline needs its cdc pipeline stored first.
	slices.SortStableFunc(specs, func(a, b pipeline.Spec) int {
		return cmp.Compare(btoi(a.Pattern == protocol.PatternCDCApply), btoi(b.Pattern == protocol.PatternCDCApply))
	})
	if opts.Check {
		along := map[string]protocol.Pattern{}
		for _, s := range specs {
			along[s.Name] = s.Pattern
		}
		var errs []error
		for _, s := range specs {
			res, err := c.ApplyWith(ctx, s, coordinator.ApplyOptions{Check: true, DryRun: true, Along: along})
			if err != nil {
				errs = append(errs, err) // the leader's refusal names the pipeline
				continue
			}
			for _, line := range res.Checked {
				fmt.Fprintf(stdout, "%s: checked %s\n", s.Name, line)
			}
		}
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("%w\nnothing was stored", err)
		}
		if opts.DryRun {
			fmt.Fprintf(stdout, "%d pipeline(s) checked; nothing stored (--dry-run)\n", len(specs))
			return nil
		}
	}
	for i, s := range specs {
		res, err := c.Apply(ctx, s)
		if err != nil {
			err = fmt.Errorf("apply %s: %w", s.Name, err)
			if i > 0 {
				var stored []string
				for _, p := range specs[:i] {
					stored = append(stored, p.Name)
				}
				err = fmt.Errorf("%w (stored before it: %s)", err, strings.Join(stored, ", "))
			}
			return err
		}
		verb := "updated"
		if res.Created {
			verb = "created"
		}
		fmt.Fprintf(stdout, "pipeline %s %s (revision %d)\n", res.Pipeline, verb, res.Revision)
	}
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// specSource is one place specs come from: a file, or standard input.
type specSource struct {
	name string // for messages
	dir  string // relative paths in its specs resolve against it
	data []byte
}

// readSpecSources reads the -f arguments: files, every *.yaml and *.yml of
// a directory (sorted), or standard input for "-".
func readSpecSources(paths []string, stdin io.Reader) ([]specSource, error) {
	var out []specSource
	var errs []error
	for _, p := range paths {
		if p == "-" {
			data, err := io.ReadAll(stdin)
			if err != nil {
				errs = append(errs, fmt.Errorf("read standard input: %w", err))
				continue
			}
			wd, err := os.Getwd()
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out = append(out, specSource{name: "(standard input)", dir: wd, data: data})
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		files := []string{p}
		if st.IsDir() {
			files = nil
			ents, err := os.ReadDir(p)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, e := range ents {
				if ext := filepath.Ext(e.Name()); !e.IsDir() && (ext == ".yaml" || ext == ".yml") {
					files = append(files, filepath.Join(p, e.Name()))
				}
			}
			if len(files) == 0 {
				errs = append(errs, fmt.Errorf("%s: no *.yaml or *.yml file in the directory", p))
				continue
			}
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			abs, err := filepath.Abs(filepath.Dir(f))
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out = append(out, specSource{name: f, dir: abs, data: data})
		}
	}
	return out, errors.Join(errs...)
}

// loadSpecs parses and validates every document of every source before
// anything is sent, so a bad one changes nothing. Relative paths resolve
// against the spec file's directory.
func loadSpecs(paths []string, reg *connectors.Registry, stdin io.Reader, stderr io.Writer) ([]pipeline.Spec, error) {
	srcs, err := readSpecSources(paths, stdin)
	if err != nil {
		return nil, err
	}
	var specs []pipeline.Spec
	var errs []error
	from := map[string]string{} // pipeline name -> the source that defines it
	for _, src := range srcs {
		unset := map[string]bool{}
		lookup := func(k string) (string, bool) {
			v, ok := os.LookupEnv(k)
			if !ok {
				unset[k] = true
			}
			return v, ok
		}
		loaded, err := pipeline.LoadAllFrom(src.data, src.name, src.dir, reg, lookup)
		if err != nil {
			errs = append(errs, err)
		}
		for _, k := range sortedKeys(unset) {
			fmt.Fprintf(stderr, "note: %s: %s is not set here, so the fields using it were not checked; it must be set where the coordinator and workers run\n", src.name, k)
		}
		for _, s := range loaded {
			warnLiteralSecrets(stderr, src.name, s)
			if prev, dup := from[s.Name]; dup && prev != src.name {
				errs = append(errs, fmt.Errorf("%s: pipeline %q is also defined in %s", src.name, s.Name, prev))
				continue
			}
			from[s.Name] = src.name
			if err := s.ResolvePaths(src.dir); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", src.name, err))
				continue
			}
			specs = append(specs, s)
		}
	}
	return specs, errors.Join(errs...)
}

// warnLiteralSecrets warns of a password written in a spec: it would be
// stored in the cluster's state and travel in every task.
func warnLiteralSecrets(w io.Writer, file string, s pipeline.Spec) {
	for _, side := range []struct {
		name string
		e    protocol.Endpoint
	}{{"source", s.Source}, {"sink", s.Sink}} {
		for _, f := range connectors.LiteralSecrets(side.e.Config) {
			fmt.Fprintf(w, "warning: %s: pipeline %s: %s.%s holds a password as written: it would be stored in the cluster and sent with every task (shown as %s); write a reference such as ${SLUICE_PG_DSN} instead and set that variable where the coordinator and workers run\n",
				file, s.Name, side.name, f, connectors.Redacted)
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, "${"+k+"}")
	}
	sort.Strings(ks)
	return slices.Compact(ks)
}
