package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/protocol"
)

// runTrigger publishes a trigger on sluice.trigger.<pipeline> through
// JetStream; the coordinator leader consumes it and starts the run.
func runTrigger(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("trigger", "trigger <pipeline> [--param k=v] [--id MSGID] [--logical-time T] [--event-time T] [--source NAME]", stderr)
	var cf clientFlags
	cf.register(fs)
	var params stringList
	fs.Var(&params, "param", "run parameter k=v; repeat for several")
	id := fs.String("id", "", "Nats-Msg-Id of the trigger: the same id gives one run")
	logical := fs.String("logical-time", "", "the run's logical time, RFC 3339")
	event := fs.String("event-time", "", "when the event happened, RFC 3339 (default: unset)")
	source := fs.String("source", "sluice-cli", "who publishes the trigger, kept in the run's trigger context")
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
	}
	if name == "" {
		return errors.New("trigger: name the pipeline: sluice trigger <pipeline>")
	}
	if !protocol.ValidName(name) {
		return fmt.Errorf("trigger: %q is not a valid pipeline name", name)
	}
	tr := protocol.Trigger{Pipeline: name, Source: *source}
	if len(params) > 0 {
		tr.Params = map[string]string{}
	}
	for _, p := range params {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return fmt.Errorf("--param %q: want key=value", p)
		}
		tr.Params[k] = v
	}
	for flag, dst := range map[string]*time.Time{*logical: &tr.LogicalTime, *event: &tr.EventTime} {
		if flag == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, flag)
		if err != nil {
			return fmt.Errorf("trigger: %q is not RFC 3339: %w", flag, err)
		}
		*dst = t
	}
	nc, err := cf.connect("sluice-trigger")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	ack, err := coordinator.PublishTrigger(ctx, js, name, tr, *id)
	if err != nil {
		return err
	}
	dup := ""
	if ack.Duplicate {
		dup = " (duplicate: JetStream already had this id; no new run)"
	}
	fmt.Fprintf(stdout, "trigger published on %s: stream %s seq %d%s\n", protocol.TriggerSubject(name), ack.Stream, ack.Sequence, dup)
	fmt.Fprintf(stdout, "the leader starts the run; follow it with: sluice status %s (then sluice status --run ID --json for its trigger context)\n", name)
	return nil
}
