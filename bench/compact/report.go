package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/bench/measure"
)

// measurement is one timed thing, repeated.
type measurement struct {
	Label string `json:"label"`
	// Seconds are the wall times of each repetition.
	Seconds     []float64 `json:"seconds"`
	BestSeconds float64   `json:"best_seconds"`
	RowsPerSec  float64   `json:"rows_per_sec"`
	// CPU is this process's CPU time in the best repetition (the whole
	// cluster, for (a)).
	CPU      float64 `json:"cpu_seconds,omitempty"`
	Tasks    int     `json:"tasks,omitempty"`
	Verified string  `json:"verified,omitempty"`
	cpu      []float64
}

func (m *measurement) add(secs, cpu float64, tasks int) {
	m.Seconds = append(m.Seconds, measure.Round(secs, 3))
	m.cpu = append(m.cpu, cpu)
	if tasks > 0 {
		m.Tasks = tasks
	}
}

func (m *measurement) finish(rows int64) {
	i := measure.Best(m.Seconds)
	m.BestSeconds = m.Seconds[i]
	m.RowsPerSec = measure.Round(float64(rows)/m.BestSeconds, 0)
	m.CPU = measure.Round(m.cpu[i], 2)
}

// results are what a run writes to --out.
type results struct {
	harness.Header
	Rows         int64                   `json:"rows"`
	Columns      int                     `json:"columns"`
	FilesBefore  int                     `json:"files_before"`
	FilesAfter   int                     `json:"files_after"`
	BytesBefore  int64                   `json:"bytes_before"`
	BytesAfter   int64                   `json:"bytes_after"`
	Reps         int                     `json:"reps"`
	Cluster      map[string]any          `json:"cluster"`
	Measurements map[string]*measurement `json:"measurements"`
	// Ratio is the limit's best time over Sluice's: 1 would be as fast as
	// reading and writing the rows once.
	Ratio        float64 `json:"ratio_of_limit"`
	Target       float64 `json:"target_ratio"`
	Met          bool    `json:"met"`
	ReaderGain   float64 `json:"reader_speedup"`
	TotalSeconds float64 `json:"total_seconds"`
}

var order = []string{"sluice_compact", "read_write_once", "read_small_files", "read_compacted"}

// writeResults computes the best figures, prints them and writes them to
// --out.
func (b *bench) writeResults(hdr harness.Header, began time.Time) error {
	cfg := b.cfg
	for _, k := range order {
		b.ms[k].finish(cfg.rows)
	}
	res := results{
		Header: hdr, Rows: cfg.rows, Columns: len(schema.Fields()), FilesBefore: cfg.files, FilesAfter: b.filesAfter,
		BytesBefore: b.smallBytes, BytesAfter: b.compactedBytes, Reps: cfg.reps,
		Cluster:      map[string]any{"nats": "embedded", "coordinators": 1, "workers": cfg.workers, "slots": cfg.slots},
		Measurements: b.ms, Target: target,
		Ratio:      measure.Round(b.ms["read_write_once"].BestSeconds/b.ms["sluice_compact"].BestSeconds, 3),
		ReaderGain: measure.Round(b.ms["read_small_files"].BestSeconds/b.ms["read_compacted"].BestSeconds, 2),
	}
	res.Met = res.Ratio >= target
	res.Finish()
	res.TotalSeconds = measure.Round(time.Since(began).Seconds(), 1)
	report(b.stdout, res)
	if err := harness.WriteJSON(cfg.out, res); err != nil {
		return err
	}
	fmt.Fprintf(b.stdout, "results: %s\n", cfg.out)
	return nil
}

func report(w io.Writer, r results) {
	fmt.Fprintf(w, "\ncompact: %d rows x %d columns in %d Parquet files (%s) compacted into %d (%s); %d CPUs, %s, %s\n",
		r.Rows, r.Columns, r.FilesBefore, human(r.BytesBefore), r.FilesAfter, human(r.BytesAfter), r.NumCPU, r.GoVersion, r.Date.Format(time.RFC3339))
	fmt.Fprintf(w, "%s; load average before and after: %s, %s\n\n", r.Note, r.LoadAverage[0], r.LoadAverage[1])
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "measurement\tbest s\trows/s\tCPU s\tall reps (s)\t")
	for _, k := range order {
		m := r.Measurements[k]
		reps := make([]string, len(m.Seconds))
		for i, s := range m.Seconds {
			reps[i] = fmt.Sprintf("%.2f", s)
		}
		cpu := "-"
		if m.CPU > 0 {
			cpu = fmt.Sprintf("%.1f", m.CPU)
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%s\t%s\t%s\t\n", m.Label, m.BestSeconds, measure.Thousands(m.RowsPerSec), cpu, strings.Join(reps, " "))
	}
	tw.Flush()
	verdict := "met"
	if !r.Met {
		verdict = "NOT met"
	}
	fmt.Fprintf(w, "\ncompaction vs its limit: %.2fx (target >= %.1fx): %s\n", r.Ratio, r.Target, verdict)
	fmt.Fprintf(w, "a reader of every row: %.2fx faster after compaction\n", r.ReaderGain)
}

// human formats bytes in MB.
func human(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }
