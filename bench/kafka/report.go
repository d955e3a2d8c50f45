package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/bench/measure"
)

// measurement is one timed thing, repeated.
type measurement struct {
	Key   string `json:"-"`
	Label string `json:"label"`
	// Seconds are the wall times of each repetition.
	Seconds     []float64 `json:"seconds"`
	BestSeconds float64   `json:"best_seconds"`
	// RecordsPerSec is the source's records over the best time; MBPerSec
	// the source's value bytes over it.
	RecordsPerSec float64 `json:"records_per_sec"`
	MBPerSec      float64 `json:"mb_per_sec"`
	// CPU is this process's CPU time in the best repetition: the loop or
	// the whole Sluice cluster, and kfake, which runs in it too.
	CPU   float64 `json:"cpu_seconds"`
	Tasks int     `json:"tasks,omitempty"`
	// OutputMB is the size of the Parquet written, for the Parquet loads.
	OutputMB float64 `json:"output_mb,omitempty"`
	// Baseline names the measurement this one is compared with; Ratio is
	// its best time over this one's (throughput relative to it), Target
	// the least ratio issue 15 asks for.
	Baseline string  `json:"baseline,omitempty"`
	Ratio    float64 `json:"ratio_to_baseline,omitempty"`
	Target   float64 `json:"target,omitempty"`
	Met      *bool   `json:"target_met,omitempty"`
	Verified string  `json:"verified"`
	cpu      []float64
	bytes    int64
}

func (m *measurement) add(secs, cpu float64) {
	m.Seconds = append(m.Seconds, measure.Round(secs, 3))
	m.cpu = append(m.cpu, cpu)
}

// results is what --out holds.
type results struct {
	harness.Header
	Records      int64                   `json:"records"`
	Partitions   int                     `json:"partitions"`
	ValueMB      float64                 `json:"value_mb"`
	Workers      int                     `json:"workers"`
	Slots        int                     `json:"slots"`
	Server       string                  `json:"server"`
	Measurements map[string]*measurement `json:"measurements"`
}

// writeResults computes each measurement's figures, prints them and
// writes them to cfg.out.
func writeResults(cfg config, w io.Writer, hdr harness.Header, ms map[string]*measurement, srcBytes int64) error {
	var order []string
	for _, k := range []string{"bare_consume_to_parquet", "sluice_kafka_to_parquet", "bare_consume_produce", "sluice_kafka_to_kafka", "sluice_kafka_passthrough"} {
		if len(ms[k].Seconds) == 0 {
			delete(ms, k) // not run (--only)
			continue
		}
		order = append(order, k)
	}
	for _, k := range order {
		m := ms[k]
		i := measure.Best(m.Seconds)
		m.BestSeconds = m.Seconds[i]
		m.CPU = measure.Round(m.cpu[i], 2)
		m.RecordsPerSec = measure.Round(float64(cfg.records)/m.BestSeconds, 0)
		m.MBPerSec = measure.Round(float64(srcBytes)/1e6/m.BestSeconds, 1)
		if m.bytes > 0 {
			m.OutputMB = measure.Round(float64(m.bytes)/1e6, 1)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "measurement\tbest s\trecords/s\tMB/s\tcpu s\tratio\ttarget")
	for _, k := range order {
		m := ms[k]
		ratio := ""
		target := ""
		if ms[m.Baseline] != nil {
			m.Ratio = measure.Round(ms[m.Baseline].BestSeconds/m.BestSeconds, 2)
			met := m.Ratio >= m.Target
			m.Met = &met
			ratio = fmt.Sprintf("%.2fx", m.Ratio)
			target = fmt.Sprintf(">= %.1fx (met: %v)", m.Target, met)
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%s\t%.1f\t%.1f\t%s\t%s\n", m.Label, m.BestSeconds, measure.Thousands(m.RecordsPerSec), m.MBPerSec, m.CPU, ratio, target)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	res := results{Header: hdr, Records: cfg.records, Partitions: cfg.partitions, ValueMB: measure.Round(float64(srcBytes)/1e6, 1),
		Workers: cfg.workers, Slots: cfg.slots, Server: "kfake (franz-go's in-process Kafka), one broker on loopback, in the benchmark's process",
		Measurements: ms}
	if err := harness.WriteJSON(cfg.out, res); err != nil {
		return err
	}
	fmt.Fprintf(w, "results: %s\n", cfg.out)
	return nil
}
