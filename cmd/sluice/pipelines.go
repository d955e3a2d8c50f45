package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/pipeline"
)

// runPipelines shows what the cluster stores of a pipeline: sluice
// pipelines get <name> prints its spec as applied, `${ENV}` references as
// written (they are expanded only where the connectors run).
func runPipelines(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "get" {
		return errors.New("pipelines: want a subcommand: sluice pipelines get <pipeline> [--json]")
	}
	args = args[1:]
	flags := newFlagSet("pipelines get", "pipelines get <pipeline> [--json]", stderr)
	var cf clientFlags
	cf.register(flags)
	asJSON := flags.Bool("json", false, "print the pipeline's status and its stored spec as JSON (connector configurations with relative paths resolved)")
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := parse(flags, args); err != nil {
		return err
	}
	if name == "" && flags.NArg() > 0 {
		name = flags.Arg(0)
	}
	if name == "" {
		return errors.New("pipelines get: name the pipeline: sluice pipelines get <pipeline>")
	}
	nc, err := cf.connect("sluice-pipelines")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	res, err := coordinator.NewClient(nc).GetPipeline(ctx, name)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, res)
	}
	var spec pipeline.Spec
	if err := json.Unmarshal(res.Spec, &spec); err != nil {
		return fmt.Errorf("pipelines get %s: decode the spec: %w", name, err)
	}
	fmt.Fprintf(stdout, "# pipeline %s, revision %d, as applied (--json shows the stored configuration, relative paths resolved)\n", name, res.Status.Revision)
	if spec.Text == "" {
		// Applied without its YAML (through the Go client): its JSON is
		// YAML too.
		return printJSON(stdout, spec)
	}
	fmt.Fprint(stdout, spec.Text)
	if !strings.HasSuffix(spec.Text, "\n") {
		fmt.Fprintln(stdout)
	}
	return nil
}
