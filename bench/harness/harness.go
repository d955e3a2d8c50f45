// Package harness holds what every benchmark command does around its
// measurements: the --smoke run at a small size (make bench-smoke), which
// checks its output as a full run does and never writes into bench/results;
// the lock that keeps two runs against one database apart; and the results
// file.
package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/bench/measure"
)

// smokeNote is the note of the results of a smoke run.
const smokeNote = "smoke run: a small size, to check that the benchmark runs and its outputs equal their sources; its figures mean nothing"

// Header is what the results of every benchmark start with: which
// benchmark ran, when, on what machine and under which load. Embed it in
// the results.
type Header struct {
	Benchmark string    `json:"benchmark"`
	Date      time.Time `json:"date"`
	GoVersion string    `json:"go_version"`
	NumCPU    int       `json:"num_cpu"`
	OS        string    `json:"os"`
	Note      string    `json:"note"`
	// Smoke marks a smoke run (--smoke): a small size, figures meaningless.
	Smoke      bool   `json:"smoke,omitempty"`
	PostgreSQL string `json:"postgresql,omitempty"`
	// LoadAverage is the machine's load average as the run began and as it
	// ended.
	LoadAverage [2]string `json:"load_average_before_after"`
}

// NewHeader starts the header of a run of benchmark as it begins: the
// machine, its load average, and note, which a smoke run replaces with
// what it is.
func NewHeader(benchmark string, smoke bool, note string) Header {
	if smoke {
		note = smokeNote
	}
	return Header{Benchmark: benchmark, GoVersion: runtime.Version(), NumCPU: runtime.NumCPU(),
		OS: runtime.GOOS + "/" + runtime.GOARCH, Note: note, Smoke: smoke, LoadAverage: [2]string{measure.LoadAverage()}}
}

// Finish dates the header and records the load average as the run ends.
func (h *Header) Finish() {
	h.Date = time.Now().UTC().Truncate(time.Second)
	h.LoadAverage[1] = measure.LoadAverage()
}

// Smoke sets the flags of fs that the command line did not set to the
// values of a smoke run (flag name -> value), and --out, when fs has it and
// the command line did not set it, to name.json in a temporary directory:
// a smoke run never overwrites the recorded results of a full one. Call it
// after fs.Parse.
func Smoke(fs *flag.FlagSet, name string, values map[string]string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for k, v := range values {
		if set[k] {
			continue
		}
		if err := fs.Set(k, v); err != nil {
			return fmt.Errorf("smoke: --%s %s: %w", k, v, err)
		}
	}
	if fs.Lookup("out") != nil && !set["out"] {
		return fs.Set("out", filepath.Join(os.TempDir(), "sluice-bench-smoke", name+".json"))
	}
	return nil
}

// schemaName matches the schemas a benchmark may create and drop.
var schemaName = regexp.MustCompile(`^sluice_bench[a-z0-9_]{0,28}$`)

// CheckSchema checks that name is fit to be a benchmark's schema: a run
// drops it with everything in it and writes it into SQL unquoted (and into
// the names of replication slots), so it must start with sluice_bench and
// hold only lower-case letters, digits and underscores, at most 40.
func CheckSchema(name string) error {
	if !schemaName.MatchString(name) {
		return fmt.Errorf("schema %q: want sluice_bench followed by at most 28 lower-case letters, digits or underscores", name)
	}
	return nil
}

// Lock takes a session advisory lock on conn, which holds it until it
// closes, for name: what the run creates and drops (its schema). Another
// run on the same name and database (the smoke runs of two checkouts, say)
// waits for it instead of dropping its tables. It says on w when it waits.
func Lock(ctx context.Context, conn *pgx.Conn, name string, w io.Writer) error {
	const key = "hashtextextended('sluice-bench:' || $1, 0)"
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock("+key+")", name).Scan(&ok); err != nil {
		return fmt.Errorf("lock %s: %w", name, err)
	}
	if ok {
		return nil
	}
	fmt.Fprintf(w, "waiting for another benchmark run on %s to end ...\n", name)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock("+key+")", name); err != nil {
		return fmt.Errorf("lock %s: %w", name, err)
	}
	return nil
}

// WriteJSON writes v as indented JSON to path, creating its directory.
func WriteJSON(path string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// StartCPUProfile profiles this process's CPU into the file path; the
// function it returns stops the profile and closes the file.
func StartCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
