package main

import (
	"fmt"
	"io"
	"time"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/bench/measure"
)

// target is one of the benchmark's targets and whether this run met it.
type target struct {
	Name string  `json:"name"`
	Want string  `json:"want"`
	Got  float64 `json:"got"`
	Met  bool    `json:"met"`
}

// results are what a run writes to --out.
type results struct {
	harness.Header
	Cluster      map[string]any   `json:"cluster"`
	Control      *controlResults  `json:"control_plane,omitempty"`
	Data         *dataResults     `json:"data_plane,omitempty"`
	Backfill     *backfillResults `json:"backfill,omitempty"`
	Targets      []target         `json:"targets"`
	TotalSeconds float64          `json:"total_seconds"`
}

// writeResults checks the targets, prints them and writes the results to
// cfg.out.
func writeResults(cfg config, stdout io.Writer, res results, began time.Time) error {
	if cp := res.Control; cp != nil {
		best := 0.0
		for _, s := range cp.ByWorkers {
			best = max(best, s.Sluice.CommittedPerSec)
		}
		res.Targets = append(res.Targets,
			target{Name: "no-op tasks committed per second (best worker count)", Want: fmt.Sprintf(">= %d", targetTasksPerSec), Got: best, Met: best >= targetTasksPerSec},
			target{Name: "spread of that rate from the smallest to the largest run", Want: fmt.Sprintf("<= %.2f", targetFlat), Got: cp.Spread, Met: cp.Spread <= targetFlat})
	}
	if dp := res.Data; dp != nil {
		for _, r := range dp.Runs {
			res.Targets = append(res.Targets, target{Name: fmt.Sprintf("efficiency of I/O-bound tasks on %d workers", r.Workers),
				Want: fmt.Sprintf(">= %.1f", targetEfficiency), Got: r.Efficiency, Met: r.Efficiency >= targetEfficiency})
		}
	}
	if bf := res.Backfill; bf != nil && len(bf.PerSecByTenth) == 10 {
		// The first tenth holds the backfill's start, the last its
		// tail (fewer windows left than run at once).
		mid := bf.PerSecByTenth[1:9]
		lo, hi := mid[0], mid[0]
		for _, r := range mid {
			lo, hi = min(lo, r), max(hi, r)
		}
		spread := measure.Round((hi-lo)/hi, 3)
		res.Targets = append(res.Targets, target{Name: "spread of the backfill's windows per second from its second to its ninth tenth", Want: fmt.Sprintf("<= %.2f", targetFlat), Got: spread, Met: spread <= targetFlat})
	}
	res.Finish()
	res.TotalSeconds = measure.Round(time.Since(began).Seconds(), 1)
	fmt.Fprintln(stdout, "targets:")
	for _, t := range res.Targets {
		met := "met"
		if !t.Met {
			met = "NOT met"
		}
		fmt.Fprintf(stdout, "  %s: %v (want %s) %s\n", t.Name, t.Got, t.Want, met)
	}
	if err := harness.WriteJSON(cfg.out, res); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "results: %s (load average %s -> %s)\n", cfg.out, res.LoadAverage[0], res.LoadAverage[1])
	return nil
}
