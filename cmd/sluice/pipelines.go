package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// newPipelinesCmd shows what the cluster stores of its pipelines: `sluice
// pipelines get <name>` prints a spec as applied, `${ENV}` references as
// written (they are expanded only where the connectors run).
func newPipelinesCmd() *cobra.Command {
	var cf clientFlags
	cmd := group(&cobra.Command{
		Use:   "pipelines",
		Short: "list the pipelines, or show one's stored spec",
	}, newPipelinesListCmd(&cf), newPipelinesGetCmd(&cf))
	cf.register(cmd.PersistentFlags())
	return cmd
}

func newPipelinesListCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "list the pipelines: pattern, revision, exposed version, what starts them",
		Args:    cobra.NoArgs,
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return cf.session(cmd, func(ctx context.Context, cl *cluster) error {
			ps, err := cl.client.Pipelines(ctx)
			if err != nil {
				return err
			}
			return out.print(cmd.OutOrStdout(), ps, func(w io.Writer) { printPipelines(w, ps) })
		})
	}
	return cmd
}

func printPipelines(w io.Writer, ps []protocol.PipelineStatus) {
	if len(ps) == 0 {
		fmt.Fprintln(w, "no pipelines: store one with sluice apply -f spec.yaml")
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PIPELINE\tPATTERN\tREVISION\tVERSION\tLAST RUN\tSTARTS ON")
	for _, p := range ps {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", p.Name, p.Pattern, p.Revision, p.Version, dash(p.LastRun), dash(startsOn(p)))
	}
	tw.Flush()
}

func newPipelinesGetCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:               "get <pipeline>",
		Short:             "show a pipeline's spec as applied (-o json: its status and stored configuration)",
		Args:              pipelineArg("pipeline"),
		ValidArgsFunction: completePipelines(cf),
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return cf.session(cmd, func(ctx context.Context, cl *cluster) error {
			res, err := cl.client.GetPipeline(ctx, args[0])
			if err != nil {
				return err
			}
			var spec pipeline.Spec
			if err := json.Unmarshal(res.Spec, &spec); err != nil {
				return fmt.Errorf("pipelines get %s: decode the spec: %w", args[0], err)
			}
			redactSpec(&spec)
			if res.Spec, err = json.Marshal(spec); err != nil {
				return err
			}
			return out.print(cmd.OutOrStdout(), res, func(w io.Writer) { printSpec(w, res.Status, spec) })
		})
	}
	return cmd
}

// printSpec prints a spec as it was applied.
func printSpec(w io.Writer, st protocol.PipelineStatus, spec pipeline.Spec) {
	fmt.Fprintf(w, "# pipeline %s, revision %d, as applied (-o json shows the stored configuration, relative paths resolved)\n", st.Name, st.Revision)
	if spec.Text == "" {
		// Applied without its YAML (through the Go client): its JSON is
		// YAML too.
		_ = printJSON(w, spec)
		return
	}
	fmt.Fprint(w, spec.Text)
	if !strings.HasSuffix(spec.Text, "\n") {
		fmt.Fprintln(w)
	}
}

// redactSpec hides the secrets a spec holds as literals (a DSN's
// password) wherever it is shown.
func redactSpec(s *pipeline.Spec) {
	s.Text = connectors.Redact(s.Text)
	for _, e := range []*protocol.Endpoint{&s.Source, &s.Sink} {
		e.Config = json.RawMessage(connectors.Redact(string(e.Config)))
	}
}
