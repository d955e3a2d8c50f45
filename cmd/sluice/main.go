// Command sluice is the one Sluice binary: an embedded all-in-one cluster
// (dev, demo), the cluster's processes (coordinator, worker) and the client
// commands (apply, run, status, rollback, pipelines).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "sluice:", err)
		os.Exit(1)
	}
}

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"demo", "load a generated 240k-row dataset on an embedded cluster and verify it", runDemo},
		{"dev", "run everything in one process: NATS, a coordinator, workers, HTTP API", runDev},
		{"coordinator", "run one coordinator node (Raft member; the leader plans and commits)", runCoordinator},
		{"worker", "run a worker that pulls tasks from JetStream", runWorker},
		{"apply", "store pipeline specs: sluice apply -f spec.yaml", runApply},
		{"run", "start a run of a pipeline: sluice run <pipeline> [--wait]", runRun},
		{"trigger", "publish a trigger that starts a run: sluice trigger <pipeline> [--param k=v] [--id MSGID]", runTrigger},
		{"status", "show pipelines, runs, tasks and workers", runStatus},
		{"backfill", "load a time range of an incremental pipeline in windows: sluice backfill <pipeline> --from T1 --to T2 [--concurrency N] [--replace]", runBackfill},
		{"check", "compare an incremental pipeline's source and target window by window: sluice check <pipeline> --from T1 --to T2 [--repair]", runCheck},
		{"rollback", "expose an earlier kept dataset version: sluice rollback <pipeline> [--to N]", runRollback},
		{"pipelines", "show a pipeline's stored spec: sluice pipelines get <pipeline> [--json]", runPipelines},
		{"delete", "delete a pipeline (a cdc pipeline's slot, publication and events go with it): sluice delete <pipeline>", runDelete},
		{"cdc", "change data capture: sluice cdc status [pipeline] [--json]", runCDC},
		{"dlq", "dead letters: sluice dlq list | show <seq> | replay <seq> | purge (--all | <seq>)", runDLQ},
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return errors.New("no command given")
		}
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	usage(stderr)
	return fmt.Errorf("unknown command %q", args[0])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Sluice moves data into your platform: full and incremental loads, CDC, replication, triggers.")
	fmt.Fprintln(w, "\nUsage: sluice <command> [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'sluice <command> -h' for the flags of a command.")
}
