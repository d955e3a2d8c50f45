package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/protocol"
)

// runCDC is `sluice cdc status [pipeline] [--json]` and `sluice cdc
// resnapshot <pipeline> <table>`.
func runCDC(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "resnapshot" {
		return runResnapshot(ctx, args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "status" {
		return errors.New("usage: sluice cdc status [pipeline] [--json] | sluice cdc resnapshot <pipeline> <table>")
	}
	args = args[1:]
	fs := newFlagSet("cdc status", "cdc status [pipeline] [--json]", stderr)
	var cf clientFlags
	cf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	nc, err := cf.connect("sluice-cdc-status")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	st, err := coordinator.NewClient(nc).CDCStatus(ctx)
	if err != nil {
		return err
	}
	if name != "" {
		kept := st.Streams[:0]
		for _, s := range st.Streams {
			if s.Pipeline == name {
				kept = append(kept, s)
			}
		}
		if len(kept) == 0 {
			return fmt.Errorf("no cdc or cdc_apply pipeline %q", name)
		}
		st.Streams = kept
	}
	if *asJSON {
		return printJSON(stdout, st)
	}
	printCDCStatus(stdout, st, time.Now())
	return nil
}

// runResnapshot is `sluice cdc resnapshot <pipeline> <table>`.
func runResnapshot(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("cdc resnapshot", "cdc resnapshot <pipeline> <schema.table>", stderr)
	var cf clientFlags
	cf.register(fs)
	var pos []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		pos, args = append(pos, args[0]), args[1:]
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if len(pos) != 2 {
		return errors.New("usage: sluice cdc resnapshot <pipeline> <schema.table>")
	}
	nc, err := cf.connect("sluice-cdc-resnapshot")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	reply, err := coordinator.NewClient(nc).Resnapshot(ctx, pos[0], pos[1])
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "snapshot %s of %s queued for %s (sluice cdc status shows its progress)\n", reply.Snapshot.ID, reply.Table, reply.Pipeline)
	return nil
}

func printCDCStatus(w io.Writer, st protocol.CDCStatusReply, now time.Time) {
	defer func() {
		for _, cl := range st.Cleanups {
			fmt.Fprintf(w, "deleted %s (%s ago): removing %s\n", cl.Pipeline, now.Sub(cl.Deleted).Round(time.Second), cl.What)
		}
	}()
	if len(st.Streams) == 0 {
		fmt.Fprintln(w, "no cdc or cdc_apply pipelines")
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PIPELINE\tPATTERN\tPHASE\tWORKER (EPOCH)\tRENEWED\tSTATE\tCONFIRMED LSN\tLAG BYTES\tLAG TIME\tEVENTS\tLAST COMMIT")
	for _, s := range st.Streams {
		holder, renewed := "-", "-"
		if s.Worker != "" {
			holder = fmt.Sprintf("%s (%d)", s.Worker, s.Epoch)
		}
		if !s.Renewed.IsZero() {
			renewed = now.Sub(s.Renewed).Round(100*time.Millisecond).String() + " ago"
		}
		phase := s.Phase
		if s.SnapshotRun != "" && s.Phase == "snapshot" {
			phase += " (" + s.SnapshotRun + ")"
		}
		state, confirmed, lagBytes, lagTime, last := dash(s.Status.State), "-", "-", "-", "-"
		if s.Pattern == protocol.PatternCDC {
			confirmed = dash(s.Status.ConfirmedLSN)
			lagBytes = fmt.Sprint(s.Status.LagBytes)
		} else if s.Status.Applied > 0 {
			confirmed = fmt.Sprintf("seq %d (%d pending)", s.Status.Applied, s.Status.Pending)
		}
		if s.Status.State != "" {
			lagTime = s.Status.LagTime.Round(time.Millisecond).String()
		}
		if !s.Status.LastCommit.IsZero() {
			last = s.Status.LastCommit.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", s.Pipeline, s.Pattern, phase, holder, renewed,
			state, confirmed, lagBytes, lagTime, s.Status.Events, last)
		if s.Status.Error != "" {
			fmt.Fprintf(tw, "  last error: %s\n", s.Status.Error)
		}
		reported := map[string]bool{}
		for _, tb := range s.Status.Tables {
			reported[tb.Snapshot] = tb.Snapshot != ""
			line := "  table " + tb.Table + " " + tb.State
			if tb.Snapshot != "" {
				line += fmt.Sprintf(" (%s, %d rows)", tb.Snapshot, tb.Rows)
			}
			if tb.Seq > 0 {
				line += fmt.Sprintf(" at seq %d", tb.Seq)
			}
			if !tb.Since.IsZero() {
				line += " since " + tb.Since.UTC().Format(time.RFC3339)
			}
			if tb.Throttled > 0 {
				line += fmt.Sprintf("; throttled %d times by cdc.max_lag, last at %s", tb.Throttled, tb.LastThrottled.UTC().Format(time.RFC3339))
			}
			if tb.Error != "" {
				line += ": " + tb.Error
			}
			fmt.Fprintln(tw, line)
		}
		for _, ts := range s.Snapshots {
			if !reported[ts.ID] {
				fmt.Fprintf(tw, "  table %s %s (%s, %s)\n", ts.Table, protocol.TableSnapshotPending, ts.ID, ts.Reason)
			}
		}
	}
	tw.Flush()
}

// runDelete is `sluice delete <pipeline>`.
func runDelete(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("delete", "delete <pipeline>", stderr)
	var cf clientFlags
	cf.register(fs)
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if name == "" {
		return errors.New("usage: sluice delete <pipeline>")
	}
	nc, err := cf.connect("sluice-delete")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	reply, err := coordinator.NewClient(nc).Delete(ctx, name)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "pipeline %s deleted\n", reply.Pipeline)
	if reply.Cleanup != "" {
		fmt.Fprintf(stdout, "the leader removes the %s once the stream stopped (sluice cdc status shows it until then)\n", reply.Cleanup)
	}
	return nil
}
