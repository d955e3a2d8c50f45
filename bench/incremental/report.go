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

// results are what a run writes to --out.
type results struct {
	harness.Header
	Rows         int64                           `json:"rows"`
	Changed      int64                           `json:"changed_rows"`
	Columns      int                             `json:"columns"`
	Reps         int                             `json:"reps"`
	Cluster      map[string]any                  `json:"cluster"`
	Measurements map[string]*measure.Measurement `json:"measurements"`
	Ratio        float64                         `json:"ratio"`
	MinRatio     float64                         `json:"min_ratio"`
	Met          bool                            `json:"met"`
	TotalSeconds float64                         `json:"total_seconds"`
}

// writeResults computes the best figures and the ratio, prints them and
// writes them to cfg.out.
func writeResults(cfg config, stdout io.Writer, hdr harness.Header, b *bench, began time.Time) error {
	b.sluice.Finish(cfg.changed, 0)
	b.base.Finish(cfg.changed, 0)
	res := results{
		Header: hdr, Rows: cfg.rows, Changed: cfg.changed, Columns: len(strings.Split(columns, ", ")), Reps: cfg.reps,
		Cluster: map[string]any{"nats": "embedded", "coordinators": 1, "workers": cfg.workers, "slots": cfg.slots,
			"target_rows": cfg.targetRows, "tasks": b.sluice.Tasks},
		Measurements: map[string]*measure.Measurement{"baseline_insert_on_conflict": &b.base, "sluice_merge": &b.sluice},
		Ratio:        measure.Round(b.base.BestSeconds/b.sluice.BestSeconds, 3),
		MinRatio:     minRatio,
	}
	res.Met = res.Ratio >= minRatio
	res.Finish()
	res.TotalSeconds = measure.Round(time.Since(began).Seconds(), 1)
	fmt.Fprintf(stdout, "\nincremental: merge of %d changed rows into %d; %d CPUs, %s, PostgreSQL %s, %s\n",
		res.Changed, res.Rows, res.NumCPU, res.GoVersion, res.PostgreSQL, res.Date.Format(time.RFC3339))
	fmt.Fprintf(stdout, "%s; load average before and after: %s, %s\n\n", res.Note, res.LoadAverage[0], res.LoadAverage[1])
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "measurement\tbest s\trows/s\tclient CPU s\tserver CPU s\tall reps (s)\t")
	for _, m := range []*measure.Measurement{&b.base, &b.sluice} {
		reps := make([]string, len(m.Seconds))
		for i, s := range m.Seconds {
			reps[i] = fmt.Sprintf("%.2f", s)
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%s\t%.1f\t%.1f\t%s\t\n", m.Label, m.BestSeconds, measure.Thousands(m.RowsPerSec), m.ClientCPU, m.ServerCPU, strings.Join(reps, " "))
	}
	tw.Flush()
	if p := b.sluice.Phases; p != nil {
		fmt.Fprintf(stdout, "Sluice, best run: plan %.2fs, %d tasks %.2fs, commit (the merge) %.2fs\n", p.Plan, b.sluice.Tasks, p.Tasks, p.Commit)
	}
	verdict := "met"
	if !res.Met {
		verdict = "NOT met"
	}
	fmt.Fprintf(stdout, "\nSluice merge vs hand-written INSERT ... ON CONFLICT: %.2fx (target >= %.1fx): %s\n", res.Ratio, minRatio, verdict)
	if err := harness.WriteJSON(cfg.out, res); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "results: %s\n", cfg.out)
	return nil
}
