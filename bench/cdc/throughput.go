package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/jackc/pglogrepl"

	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/connectors/pgcdc"
)

// measurement is one timed decode of the workload, repeated.
type measurement struct {
	Label string `json:"label"`
	// EndCondition says when the clock stopped.
	EndCondition string `json:"end_condition"`
	// Seconds are the wall times of each repetition.
	Seconds       []float64 `json:"seconds"`
	BestSeconds   float64   `json:"best_seconds"`
	MedianSeconds float64   `json:"median_seconds"`
	ChangesPerSec float64   `json:"changes_per_sec"`
	WALMBPerSec   float64   `json:"wal_mb_per_sec"`
	// ClientCPU is this process's CPU time in the best repetition (for
	// Sluice: the Reader and the embedded NATS server); ServerCPU is
	// PostgreSQL's, when readable from /proc: every server process, so
	// other sessions on a shared server count too.
	ClientCPU          float64 `json:"client_cpu_seconds"`
	ClientCPUPerChange float64 `json:"client_cpu_us_per_change"`
	ServerCPU          float64 `json:"server_cpu_seconds,omitempty"`
	// StreamBytes is what SLUICE_CDC stored (messages with their subjects
	// and headers), for the measurements that publish; Messages how many
	// messages, EventsPerMessage the changes over them and
	// MaxEventsPerMessage the most changes one message held.
	StreamBytes         int64   `json:"stream_bytes,omitempty"`
	Messages            int64   `json:"messages_per_run,omitempty"`
	EventsPerMessage    float64 `json:"events_per_message,omitempty"`
	MaxEventsPerMessage int     `json:"max_events_per_message,omitempty"`
	// ConfirmedSeconds (Sluice only) is when, in the best repetition,
	// Reader.Status().ConfirmedLSN reached the end of the last transaction:
	// every ack seen by the Reader, the slot confirmable.
	ConfirmedSeconds float64 `json:"confirmed_seconds,omitempty"`
	Verified         string  `json:"verified"`
	cpu              []cpuUse
	confirmed        []float64
}

type cpuUse struct{ client, server float64 }

func (m *measurement) add(r decodeResult) {
	m.Seconds = append(m.Seconds, measure.Round(r.secs, 3))
	m.cpu = append(m.cpu, r.cpu)
	m.confirmed = append(m.confirmed, r.confirmed)
	if r.messages > 0 {
		m.StreamBytes, m.Messages, m.MaxEventsPerMessage = r.streamBytes, r.messages, r.maxEvents
	}
}

func (m *measurement) finish(changes, walBytes int64) {
	i := measure.Best(m.Seconds)
	m.BestSeconds = m.Seconds[i]
	sorted := slices.Sorted(slices.Values(m.Seconds))
	m.MedianSeconds = sorted[len(sorted)/2]
	if len(sorted)%2 == 0 {
		m.MedianSeconds = measure.Round((sorted[len(sorted)/2-1]+sorted[len(sorted)/2])/2, 3)
	}
	m.ChangesPerSec = measure.Round(float64(changes)/m.BestSeconds, 0)
	m.WALMBPerSec = measure.Round(float64(walBytes)/1e6/m.BestSeconds, 2)
	m.ClientCPU, m.ServerCPU = measure.Round(m.cpu[i].client, 2), measure.Round(m.cpu[i].server, 2)
	m.ClientCPUPerChange = measure.Round(m.cpu[i].client/float64(changes)*1e6, 1)
	m.ConfirmedSeconds = measure.Round(m.confirmed[i], 3)
	if m.Messages > 0 {
		m.EventsPerMessage = measure.Round(float64(changes)/float64(m.Messages), 1)
	}
}

type decodeResult struct {
	secs      float64
	confirmed float64
	cpu       cpuUse
	endLSN    pglogrepl.LSN
	// streamBytes is what SLUICE_CDC stored, when the decode published;
	// messages how many messages, maxEvents the most events of one.
	streamBytes int64
	messages    int64
	maxEvents   int
	// checkSecs is how long reading the stream back took (not timed).
	checkSecs float64
}

// throughput creates the template slot, generates the workload and times
// decoding it with the bare loops and the Reader, each on a copy of the
// template slot made just before and dropped just after.
func (b *bench) throughput(ctx context.Context, res *results) error {
	cfg := b.cfg
	template := cfg.slotPrefix() + "template"
	start, err := b.createSlot(ctx, template)
	if err != nil {
		return err
	}
	wl, err := b.generate(ctx, start)
	if err != nil {
		return err
	}
	res.Workload = wl

	bare := &measurement{Label: "(a) bare pglogrepl loop (parse + count)",
		EndCondition: "the last insert/update/delete message decoded (change count reached)"}
	bareJS := &measurement{Label: fmt.Sprintf("(c) bare loop + raw JetStream publish, packed as the Reader packs (per transaction and table run, <= %d changes, <= %d KiB)", cfg.msgEvents(), pgcdc.MaxMessageBytes>>10),
		EndCondition: "SLUICE_CDC holds every change: the Sluice-Events headers of the stored messages, followed by a headers-only ordered consumer, add up to the change count"}
	bareJSEach := &measurement{Label: "(d) bare loop + raw JetStream publish, one message per change (unpacked)",
		EndCondition: "SLUICE_CDC holds every change (stream message count reached: one message per change)"}
	sluice := &measurement{Label: "(b) Sluice pgcdc Reader -> JetStream",
		EndCondition: "SLUICE_CDC holds every event: the Sluice-Events headers of the stored messages, followed by a headers-only ordered consumer, add up to the change count (so JetStream stored and acknowledged every publish)"}
	var endLSN pglogrepl.LSN // of the last transaction, from the bare loop
	decode := func(which string, slot string, profile io.Writer) (decodeResult, error) {
		if err := b.copySlot(ctx, template, slot); err != nil {
			return decodeResult{}, err
		}
		defer b.dropSlot(slot)
		switch which {
		case "bare":
			return b.bareDecode(ctx, slot, wl, publishNone)
		case "bare+js":
			return b.bareDecode(ctx, slot, wl, publishPacked)
		case "bare+js1":
			return b.bareDecode(ctx, slot, wl, publishEach)
		default:
			return b.sluiceDecode(ctx, slot, wl, endLSN, profile)
		}
	}
	// Rep 1 starts with the bare loop (which learns the end LSN of the last
	// transaction); then the order rotates.
	order := []string{"bare", "bare+js", "bare+js1", "sluice"}
	if cfg.skipUnpacked {
		order = slices.DeleteFunc(order, func(s string) bool { return s == "bare+js1" })
	}
	verifiedRaw := "counts as (a); after the loop stopped, SLUICE_CDC held every change of every transaction exactly once " +
		"(read back: each message's length-prefixed pgoutput messages are inserts, updates or deletes of one relation, as many as its Sluice-Events; " +
		"per commit LSN the index spans of the Nats-Msg-Ids tile the transaction), at most %d per message, and as many inserts, updates and deletes as the workload"
	for rep := 1; rep <= cfg.reps; rep++ {
		fmt.Fprintf(b.stdout, "rep %d/%d:", rep, cfg.reps)
		for k := range order {
			which := order[(k+len(order)-(rep-1)%len(order))%len(order)]
			// Each measurement starts without dirty buffers: a checkpoint
			// writing the workload's pages would slow whichever ran then.
			if _, err := b.conn.Exec(ctx, "CHECKPOINT"); err != nil {
				return fmt.Errorf("checkpoint before %s: %w", which, err)
			}
			r, err := decode(which, fmt.Sprintf("%s%s_%d", cfg.slotPrefix(), strings.ReplaceAll(which, "+", "_"), rep), nil)
			if err != nil {
				return err
			}
			switch which {
			case "bare":
				if endLSN != 0 && r.endLSN != endLSN {
					return fmt.Errorf("bare loop: last commit ends at %s, %s before", r.endLSN, endLSN)
				}
				endLSN = r.endLSN
				bare.add(r)
				bare.Verified = fmt.Sprintf("counts of inserts, updates and deletes equal the workload's; last transaction ends at %s", endLSN)
			case "bare+js":
				bareJS.add(r)
				bareJS.Verified = fmt.Sprintf(verifiedRaw, cfg.msgEvents())
			case "bare+js1":
				bareJSEach.add(r)
				bareJSEach.Verified = fmt.Sprintf(verifiedRaw, 1)
			case "sluice":
				sluice.add(r)
				sluice.Verified = "after the Reader stopped, SLUICE_CDC held every change of every transaction exactly once: every message read back and " +
					"every event decoded; a message's events are of one table and one transaction with consecutive indexes, its Nats-Msg-Id is that of its first event, " +
					fmt.Sprintf("its Sluice-Events their count (<= %d, <= %d KiB unless one event); per commit LSN the events' indexes tile the transaction; ", cfg.msgEvents(), pgcdc.MaxMessageBytes>>10) +
					"inserts, updates and deletes as the workload; the last event is the delete of the last deleted id"
			}
			fmt.Fprintf(b.stdout, " %s %.2fs", which, r.secs)
			if r.checkSecs > 0 {
				fmt.Fprintf(b.stdout, " (read back in %.1fs)", r.checkSecs)
			}
		}
		fmt.Fprintln(b.stdout)
	}
	bare.finish(wl.Changes, wl.WALBytes)
	bareJS.finish(wl.Changes, wl.WALBytes)
	sluice.finish(wl.Changes, wl.WALBytes)
	res.Measurements = map[string]*measurement{"bare_pglogrepl": bare, "bare_pglogrepl_jetstream": bareJS, "sluice_reader": sluice}
	res.Ratio = measure.Round(sluice.ChangesPerSec/bare.ChangesPerSec, 3)
	res.RatioToBareJetStream = measure.Round(sluice.ChangesPerSec/bareJS.ChangesPerSec, 3)
	res.RatioOfMedians = measure.Round(bare.MedianSeconds/sluice.MedianSeconds, 3)
	if !cfg.skipUnpacked {
		bareJSEach.finish(wl.Changes, wl.WALBytes)
		res.Measurements["bare_pglogrepl_jetstream_unpacked"] = bareJSEach
		res.RatioToBareJetStreamUnpacked = measure.Round(sluice.ChangesPerSec/bareJSEach.ChangesPerSec, 3)
	}
	res.Targets = append(res.Targets, target{Name: "throughput: Sluice Reader / bare pglogrepl loop", Want: fmt.Sprintf(">= %.1fx", targetRatio),
		Value: res.Ratio, Met: res.Ratio >= targetRatio})

	if cfg.cpuProfile != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.cpuProfile), 0o755); err != nil {
			return err
		}
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		r, err := decode("sluice", cfg.slotPrefix()+"sluice_profile", f)
		f.Close()
		if err != nil {
			return err
		}
		fmt.Fprintf(b.stdout, "profile of one more Reader decode (%.2fs, not counted): %s\n", r.secs, cfg.cpuProfile)
	}
	b.dropSlot(template)
	// The throughput events are no longer needed.
	return b.stream.Purge(ctx)
}
