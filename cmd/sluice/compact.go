package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/iceberg"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// newCompactCmd compacts a dataset through the cluster: a run of a compact
// pipeline, or a compaction of the dataset another pipeline writes, or of
// a dataset no pipeline names (--dataset, or a path as the argument),
// through a compact pipeline applied for it. With --dry-run the leader
// only plans it and the groups are listed.
func newCompactCmd() *cobra.Command {
	var (
		cf      clientFlags
		dry     bool
		noWait  bool
		dataset string
	)
	cmd := &cobra.Command{
		Use:   "compact <pipeline | path> [--dataset MAPPING] [--dry-run] [--no-wait]",
		Short: "rewrite a dataset's small files into fewer, larger ones",
		Long: `compact rewrites a dataset's small files into fewer, larger ones, as a run
through the cluster: the run of a compact pipeline, or a compaction of the
dataset another pipeline loads (with the default settings).

A dataset that no pipeline names is given by --dataset, a YAML mapping as
a compact pipeline's dataset field ('{kind: ` + iceberg.Kind + `, table: sales.orders,
warehouse: s3://lake/wh, catalog: ${SLUICE_ICEBERG_CATALOG}}'), or by a
path or s3:// URL as the argument, which means {kind: ` + files.Kind + `, path: ARG}.
sluice then applies a compact pipeline for it, named compact-<hash of
the dataset> (printed; the same dataset gives the same pipeline, whose
runs, status and vacuum work as any pipeline's, and sluice delete removes
it), and runs it.`,
		Example: `  sluice compact events-compact --dry-run
  sluice compact events-full
  sluice compact /data/.sluice/datasets/events
  sluice compact --dataset '{kind: ` + iceberg.Kind + `, table: sales.orders, warehouse: /data/lake}'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if dataset != "" {
				if len(args) > 0 {
					return fmt.Errorf("name the pipeline or path, or give --dataset, not both: %s", cmd.UseLine())
				}
				return nil
			}
			return pipelineArg("pipeline or path")(cmd, args)
		},
		ValidArgsFunction: completePipelines(&cf),
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		name := ""
		if len(args) == 1 {
			name = args[0]
		}
		if ds, ok := datasetArg(name, dataset); ok {
			var err error
			if name, err = applyDatasetPipeline(cmd.Context(), &cf, ds, cmd.OutOrStdout(), cmd.ErrOrStderr(), out.isJSON()); err != nil {
				return err
			}
		}
		return runCompact(cmd.Context(), &cf, out, name, dry, noWait, cmd.OutOrStdout(), cmd.ErrOrStderr())
	}
	fs := cmd.Flags()
	cf.register(fs)
	fs.BoolVar(&dry, "dry-run", false, "list the rewrite groups the compaction would have, change nothing")
	fs.BoolVar(&noWait, "no-wait", false, "return once the compaction is planned")
	fs.StringVar(&dataset, "dataset", "", "compact a dataset no pipeline names: a YAML `mapping` as a compact pipeline's dataset field")
	return cmd
}

// datasetArg returns the dataset mapping the compact command names: the
// --dataset flag, or a path (or URL) given as the argument, which a
// pipeline name never is.
func datasetArg(arg, flag string) (string, bool) {
	if flag != "" {
		return flag, true
	}
	if arg == "" || protocol.ValidName(arg) {
		return "", false
	}
	if !strings.Contains(arg, "://") {
		if abs, err := filepath.Abs(arg); err == nil {
			arg = abs
		}
	}
	b, _ := json.Marshal(arg) // a JSON string is a YAML scalar
	return "{kind: " + files.Kind + ", path: " + string(b) + "}", true
}

// applyDatasetPipeline applies the compact pipeline of a dataset given by
// its mapping, named after a hash of the mapping as parsed, and returns
// its name.
func applyDatasetPipeline(ctx context.Context, cf *clientFlags, mapping string, stdout, stderr io.Writer, quiet bool) (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	reg := newRegistry()
	doc := func(name string) []byte {
		return []byte("name: " + name + "\npattern: compact\ndataset: " + mapping + "\n")
	}
	specs, err := pipeline.LoadAllFrom(doc("compact-dataset"), "--dataset", wd, reg, os.LookupEnv)
	if err != nil {
		return "", fmt.Errorf("compact --dataset: %w", err)
	}
	spec := specs[0]
	if err := spec.ResolvePaths(wd); err != nil {
		return "", fmt.Errorf("compact --dataset: %w", err)
	}
	key, err := json.Marshal(spec.Sink)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(key)
	spec.Name = "compact-" + hex.EncodeToString(sum[:4])
	cl, err := cf.connect("sluice-compact", stderr)
	if err != nil {
		return "", err
	}
	defer cl.Close()
	actx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	res, err := cl.client.Apply(actx, spec)
	if err != nil {
		return "", fmt.Errorf("compact: apply the compact pipeline of %s: %w", mapping, err)
	}
	w := stdout
	if quiet {
		w = stderr
	}
	verb := "applied"
	if res.Created {
		verb = "created"
	}
	fmt.Fprintf(w, "dataset %s: compact pipeline %s %s (sluice delete %s removes it)\n", spec.Sink.Kind, spec.Name, verb, spec.Name)
	return spec.Name, nil
}

// runCompact asks for the compaction and, unless noWait, follows it to its
// end. With -o json it prints the dry run's reply, or the run's last
// status, as JSON (progress on stderr).
func runCompact(ctx context.Context, cf *clientFlags, out *outputFlag, name string, dry, noWait bool, stdout, stderr io.Writer) error {
	cl, err := cf.connect("sluice-compact", stderr)
	if err != nil {
		return err
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, cf.timeout)
	res, err := cl.client.Compact(rctx, protocol.CompactRequest{Pipeline: name, DryRun: dry})
	cancel()
	if err != nil {
		return fmt.Errorf("compact %s: %w", name, err)
	}
	if dry || noWait || len(res.Groups) == 0 && res.RunID == "" {
		return out.print(stdout, res, func(w io.Writer) {
			if dry {
				printGroups(w, res)
			} else {
				fmt.Fprintf(w, "compaction %s started: %d rewrite groups\n", res.RunID, len(res.Groups))
			}
		})
	}
	progress := stdout
	if out.isJSON() {
		progress = stderr
	}
	fmt.Fprintf(progress, "compaction %s started: %d rewrite groups\n", res.RunID, len(res.Groups))
	st, err := followRun(ctx, cf, cl, res.RunID, progress)
	if err != nil {
		return err
	}
	if out.isJSON() {
		if err := printJSON(stdout, redactRun(st)); err != nil {
			return err
		}
	}
	if st.State != protocol.RunCommitted {
		return fmt.Errorf("compaction %s %s: %s", st.RunID, st.State, st.Error)
	}
	if out.isJSON() {
		return nil
	}
	fmt.Fprintf(stdout, "compaction %s committed: %d groups, %d rows rewritten into %s\n  data: %s\n", st.RunID, st.Tasks, st.Rows, humanBytes(st.Bytes), st.Location)
	return nil
}

// printGroups lists a dry run's rewrite groups.
func printGroups(w io.Writer, res protocol.CompactReply) {
	var files int
	var bytes int64
	for _, g := range res.Groups {
		files += g.Files
		bytes += g.Bytes
	}
	if len(res.Groups) == 0 {
		fmt.Fprintf(w, "%s: nothing to compact in %s\n", res.Pipeline, dash(res.Dataset))
		return
	}
	fmt.Fprintf(w, "%s: %d rewrite groups in %s, %d files, %s (dry run: nothing changed)\n", res.Pipeline, len(res.Groups), res.Dataset, files, humanBytes(bytes))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  GROUP\tFILES\tSIZE")
	for _, g := range res.Groups {
		fmt.Fprintf(tw, "  %s\t%d\t%s\n", g.Key, g.Files, humanBytes(g.Bytes))
	}
	tw.Flush()
}

// newVacuumCmd asks the leader to vacuum a pipeline's dataset: what
// compactions replaced and what failed runs left, beyond the retention and
// outside the rollback window. --dry-run lists what would go, with sizes.
func newVacuumCmd() *cobra.Command {
	var (
		cf  clientFlags
		dry bool
	)
	cmd := &cobra.Command{
		Use:               "vacuum <pipeline> [--dry-run]",
		Short:             "remove what compactions replaced and failed runs left, outside the rollback window",
		Args:              pipelineArg("pipeline"),
		ValidArgsFunction: completePipelines(&cf),
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return cf.session(cmd, func(ctx context.Context, cl *cluster) error {
			res, err := cl.client.Vacuum(ctx, protocol.VacuumRequest{Pipeline: args[0], DryRun: dry})
			if err != nil {
				return fmt.Errorf("vacuum %s: %w", args[0], err)
			}
			return out.print(cmd.OutOrStdout(), res, func(w io.Writer) { printVacuum(w, res) })
		})
	}
	fs := cmd.Flags()
	cf.register(fs)
	fs.BoolVar(&dry, "dry-run", false, "list what would be removed, with sizes; remove nothing")
	// A vacuum of a large dataset lists and deletes for a while.
	_ = fs.Set("timeout", "10m")
	fs.Lookup("timeout").DefValue = "10m0s"
	return cmd
}

// printVacuum lists what a vacuum removed, or would remove.
func printVacuum(w io.Writer, r protocol.VacuumReply) {
	verb := "removed"
	if r.DryRun {
		verb = "would remove"
	}
	fmt.Fprintf(w, "%s: %s %d items, %d files, %s\n", r.Pipeline, verb, len(r.Removed), r.Files, humanBytes(r.Bytes))
	if len(r.Removed) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  PATH\tFILES\tSIZE\tWHY")
		for _, it := range r.Removed {
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\n", it.Path, it.Files, humanBytes(it.Bytes), it.Why)
		}
		tw.Flush()
	}
	if len(r.Kept) > 0 {
		fmt.Fprintf(w, "  rollback window (never removed): %s\n", connectors.DescribeKept(r.Kept))
	}
}
