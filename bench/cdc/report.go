package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/connectors/pgcdc"
)

// target is one of the benchmark's targets and whether this run met it.
type target struct {
	Name  string  `json:"name"`
	Want  string  `json:"want"`
	Value float64 `json:"value"`
	Met   bool    `json:"met"`
}

// results are what a run writes to --out.
type results struct {
	harness.Header
	Workload *workload      `json:"workload,omitempty"`
	Reps     int            `json:"reps"`
	NATS     map[string]any `json:"nats"`
	// MaxInFlight is the Readers' MaxInFlight when --max-in-flight set it.
	MaxInFlight int `json:"reader_max_in_flight,omitempty"`
	// Packing is how the events (and, in (c), the raw changes) are packed
	// into SLUICE_CDC messages.
	Packing      map[string]any          `json:"packing"`
	Measurements map[string]*measurement `json:"measurements,omitempty"`
	// Ratio is Sluice's changes/s over the bare loop's (the target);
	// RatioToBareJetStream over the bare loop that also publishes the raw
	// pgoutput messages to JetStream, packed the same way: the share of
	// the gap that is the Reader's own; RatioToBareJetStreamUnpacked over
	// the bare loop publishing one message per change.
	Ratio float64 `json:"ratio,omitempty"`
	// RatioOfMedians is the bare loop's median time over Sluice's: the
	// ratio less the luck of one repetition on a noisy machine.
	RatioOfMedians               float64  `json:"ratio_of_medians,omitempty"`
	RatioToBareJetStream         float64  `json:"ratio_to_bare_jetstream,omitempty"`
	RatioToBareJetStreamUnpacked float64  `json:"ratio_to_bare_jetstream_unpacked,omitempty"`
	Latency                      *latency `json:"latency,omitempty"`
	Targets                      []target `json:"targets"`
	TotalSeconds                 float64  `json:"total_seconds"`
}

// writeResults prints the results and writes them to cfg.out.
func writeResults(cfg config, stdout io.Writer, res results) error {
	report(stdout, res)
	if err := harness.WriteJSON(cfg.out, res); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "results: %s\n", cfg.out)
	return nil
}

// report prints the results.
func report(w io.Writer, r results) {
	fmt.Fprintf(w, "\ncdc: %d CPUs, %s, PostgreSQL %s, %s\n", r.NumCPU, r.GoVersion, r.PostgreSQL, r.Date.Format(time.RFC3339))
	fmt.Fprintf(w, "%s; load average before and after: %s, %s\n", r.Note, r.LoadAverage[0], r.LoadAverage[1])
	if wl := r.Workload; wl != nil {
		fmt.Fprintf(w, "workload: %s changes on %s (%d columns): %s inserts, %s updates, %s deletes in %s transactions of %d rows; %.1f MB of WAL\n\n",
			measure.Thousands(float64(wl.Changes)), wl.Table, wl.Columns, measure.Thousands(float64(wl.Inserts)), measure.Thousands(float64(wl.Updates)),
			measure.Thousands(float64(wl.Deletes)), measure.Thousands(float64(wl.Transactions)), wl.TxRows, float64(wl.WALBytes)/1e6)
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "measurement\tbest s\tchanges/s\tWAL MB/s\tclient CPU s\tclient CPU µs/change\tserver CPU s\tstream MB\tmessages\tevents/message\tall reps (s)\t")
		for _, k := range []string{"bare_pglogrepl", "bare_pglogrepl_jetstream", "bare_pglogrepl_jetstream_unpacked", "sluice_reader"} {
			m := r.Measurements[k]
			if m == nil {
				continue
			}
			reps := make([]string, len(m.Seconds))
			for i, s := range m.Seconds {
				reps[i] = fmt.Sprintf("%.2f", s)
			}
			server := "-"
			if m.ServerCPU > 0 {
				server = fmt.Sprintf("%.1f", m.ServerCPU)
			}
			stream, msgs, perMsg := "-", "-", "-"
			if m.Messages > 0 {
				stream = fmt.Sprintf("%.1f", float64(m.StreamBytes)/1e6)
				msgs = measure.Thousands(float64(m.Messages))
				perMsg = fmt.Sprintf("%.1f (max %d)", m.EventsPerMessage, m.MaxEventsPerMessage)
			}
			label, _, _ := strings.Cut(m.Label, " as the Reader packs")
			fmt.Fprintf(tw, "%s\t%.2f\t%s\t%.1f\t%.1f\t%.1f\t%s\t%s\t%s\t%s\t%s\t\n", label, m.BestSeconds, measure.Thousands(m.ChangesPerSec), m.WALMBPerSec,
				m.ClientCPU, m.ClientCPUPerChange, server, stream, msgs, perMsg, strings.Join(reps, " "))
		}
		tw.Flush()
		fmt.Fprintf(w, "(a) stops at: %s\n(b) and (c) stop at: %s;\n    in (b)'s best rep, Reader.Status().ConfirmedLSN reached the end of the last transaction at %.2fs\n",
			r.Measurements["bare_pglogrepl"].EndCondition, r.Measurements["sluice_reader"].EndCondition, r.Measurements["sluice_reader"].ConfirmedSeconds)
		fmt.Fprintf(w, "(c) publishes the raw pgoutput messages of the changes, packed as the Reader packs its events (a transaction's consecutive changes of one table, <= %v and <= %d KiB a message), with the Reader's headers: the floor of this design of a pgoutput -> JetStream path here\n",
			r.Packing["max_events"], pgcdc.MaxMessageBytes>>10)
		if m := r.Measurements["bare_pglogrepl_jetstream_unpacked"]; m != nil {
			fmt.Fprintf(w, "(d) publishes them one message per change (as the Reader did before packing); it stops at: %s\n", m.EndCondition)
		}
		fmt.Fprintln(w, "client CPU: this process (for (b) to (d) with the embedded NATS server); server CPU: every postgres process on the machine")
		fmt.Fprintf(w, "Sluice / (a) by median times: %.2fx; Sluice / (c): %.2fx", r.RatioOfMedians, r.RatioToBareJetStream)
		if r.RatioToBareJetStreamUnpacked > 0 {
			fmt.Fprintf(w, "; Sluice / (d): %.2fx", r.RatioToBareJetStreamUnpacked)
		}
		fmt.Fprintln(w)
	}
	if l := r.Latency; l != nil {
		fmt.Fprintf(w, "\nlatency: %s single-row INSERT transactions at %d/s (achieved %.0f/s) over %.1fs from %d connections; Reader defaults (heartbeat and status interval 10s)\n",
			measure.Thousands(float64(l.Sent)), l.Rate, l.AchievedTPS, l.Seconds, l.Conns)
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "from COMMIT returned to\tp50 ms\tp90 ms\tp99 ms\tmax ms\tmean ms\treceived\tmissing\t")
		row := func(label string, p percentiles, missing string) {
			fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%s\t\n", label, p.P50, p.P90, p.P99, p.Max, p.Mean, p.Count, missing)
		}
		row("event stored, at an ordered consumer (upper bound of commit-to-ack)", l.Stored, strconv.Itoa(l.StoredMissing))
		row("event published, at a core NATS subscriber (lower bound)", l.Published, strconv.Itoa(l.PublishedMissing))
		if l.BareDecode.Count > 0 {
			row("baseline: change decoded by a bare pglogrepl loop (no JetStream)", l.BareDecode, strconv.Itoa(l.BareDecodeMissing))
		}
		row("(INSERT + COMMIT round trip at the client)", l.Commit, "-")
		tw.Flush()
		fmt.Fprintf(w, "the Reader's lag while the inserts ran (time since the commit of its oldest transaction not acknowledged, sampled every 50 ms): at most %.1f ms\n", l.ReaderLagMaxMs)
		if l.Stored.Negative > 0 || l.Published.Negative > 0 || l.BareDecode.Negative > 0 {
			fmt.Fprintf(w, "changes that arrived before their COMMIT returned to the client (counted with their negative latency): %d stored, %d published, %d bare\n",
				l.Stored.Negative, l.Published.Negative, l.BareDecode.Negative)
		}
	}
	fmt.Fprintln(w)
	for _, t := range r.Targets {
		verdict := "met"
		if !t.Met {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "%-50s %.3g (target %s): %s\n", t.Name, t.Value, t.Want, verdict)
	}
}
