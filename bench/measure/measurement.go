package measure

// Measurement is one timed thing of a benchmark, repeated: its wall times
// and, for the best repetition, its rates and what it used.
type Measurement struct {
	Label string `json:"label"`
	// Seconds are the wall times of each repetition.
	Seconds     []float64 `json:"seconds"`
	BestSeconds float64   `json:"best_seconds"`
	RowsPerSec  float64   `json:"rows_per_sec"`
	MBPerSec    float64   `json:"mb_per_sec,omitempty"`
	// ClientCPU is the CPU time of the client side in the best
	// repetition: a psql process, or this process (a whole Sluice
	// cluster, or a Go pipe); ServerCPU is PostgreSQL's, when readable
	// from /proc: every server process, so other sessions on a shared
	// server count too.
	ClientCPU float64 `json:"client_cpu_seconds"`
	ServerCPU float64 `json:"server_cpu_seconds,omitempty"`
	Tasks     int     `json:"tasks,omitempty"`
	// Phases splits the best repetition of a Sluice run.
	Phases   *Phases `json:"phases_seconds,omitempty"`
	Verified string  `json:"verified"`
	uses     []Use
}

// Use is what one repetition used: CPU seconds of the client and of the
// server, and the phases of a Sluice run.
type Use struct {
	Client, Server float64
	Phases         *Phases
}

// Phases splits a Sluice run: plan (until the run request returned),
// tasks (until every task had succeeded, as polled every 20 ms) and commit
// (until the run was committed).
type Phases struct {
	Plan   float64 `json:"plan"`
	Tasks  float64 `json:"tasks"`
	Commit float64 `json:"commit"`
}

// Add records a repetition.
func (m *Measurement) Add(secs float64, u Use) {
	m.Seconds = append(m.Seconds, Round(secs, 3))
	m.uses = append(m.uses, u)
}

// Finish computes the figures of the best repetition, of rows rows and
// bytes bytes (0: no MB/s).
func (m *Measurement) Finish(rows, bytes int64) {
	i := Best(m.Seconds)
	m.BestSeconds = m.Seconds[i]
	m.RowsPerSec = Round(float64(rows)/m.BestSeconds, 0)
	m.MBPerSec = Round(float64(bytes)/1e6/m.BestSeconds, 2)
	m.ClientCPU, m.ServerCPU, m.Phases = Round(m.uses[i].Client, 2), Round(m.uses[i].Server, 2), m.uses[i].Phases
}
