package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors/iceberg"
)

// The Iceberg source read by position, as the README's lake section says:
// an incremental pipeline with read: appended reads the whole table on its
// first run, then only the data files appended since the snapshot the
// previous run reached; a run that finds nothing new reads nothing. The
// table is loaded by another pipeline, one hourly partition per run; one
// reader writes files, another appends to a second table (the Iceberg
// sink appends runs by position), itself read by position into files.
// Read by position without read: appended is refused at apply.
func TestIcebergSourceByPosition(t *testing.T) {
	t.Setenv("SLUICE_NATS", "")
	withCluster(t, func(ctx context.Context, l *local, root string) {
		in, out, out2, lake := filepath.Join(root, "in"), filepath.Join(root, "out"), filepath.Join(root, "out2"), filepath.Join(root, "lake")
		next := 0
		hour := func(h, rows int) {
			t.Helper()
			dir := filepath.Join(in, "date=2026-11-25", fmt.Sprintf("hour=%02d", h))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			for range rows {
				next++
				fmt.Fprintf(&b, "{\"id\":%d,\"name\":\"n%d\"}\n", next, next)
			}
			if err := os.WriteFile(filepath.Join(dir, "part-0.jsonl"), []byte(b.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "_SUCCESS"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		table := fmt.Sprintf("  table: lake.events\n  warehouse: %s\n", lake)
		mirror := fmt.Sprintf("  table: lake.mirror\n  warehouse: %s\n", lake)
		spec := writeSpec(t, root, "lake.yaml", `name: hourly
pattern: incremental
source: {kind: files, path: `+in+`, format: jsonl, layout: "date={date}/hour={hour}", ready: success_file}
sink:
  kind: iceberg
`+table+`  columns:
    - {name: id, type: int64, not_null: true}
    - {name: name, type: string}
incremental: {window: 1h, start: 2026-11-25T00:00:00Z, lag: 0s}
---
name: tail
pattern: incremental
source:
  kind: iceberg
`+table+`  read: appended
sink: {kind: files, path: `+out+`, format: jsonl}
incremental: {by: position}
---
name: mirror
pattern: incremental
source:
  kind: iceberg
`+table+`  read: appended
sink:
  kind: iceberg
`+mirror+`incremental: {by: position}
---
name: tail2
pattern: incremental
source:
  kind: iceberg
`+mirror+`  read: appended
sink: {kind: files, path: `+out2+`, format: jsonl}
incremental: {by: position}
`)
		url := l.NATSURL
		bad := writeSpec(t, root, "bad.yaml", strings.Replace(string(must(os.ReadFile(spec))), "  read: appended\n", "", 1))
		if _, _, err := sluice(ctx, "apply", "-f", bad, "--nats", url); err == nil || !strings.Contains(err.Error(), "set read: appended") {
			t.Fatalf("apply by position without read: appended: %v; want a refusal naming read: appended", err)
		}
		if _, _, err := sluice(ctx, "apply", "-f", spec, "--nats", url); err != nil {
			t.Fatal(err)
		}
		runOK := func(name, want string) {
			t.Helper()
			o, _, err := sluice(ctx, "run", name, "--wait", "--nats", url)
			if err != nil || !strings.Contains(o, want) {
				t.Fatalf("run %s: %v\n%s\nwant %q", name, err, o, want)
			}
		}
		hour(0, 100)
		hour(1, 150)
		runOK("hourly", "committed: 100 rows")
		runOK("hourly", "committed: 150 rows")
		runOK("tail", "committed: 250 rows") // the first run reads the whole table
		runOK("tail", "committed: 0 rows")   // nothing appended since
		runOK("mirror", "committed: 250 rows")
		runOK("tail2", "committed: 250 rows")
		hour(2, 50)
		runOK("hourly", "committed: 50 rows")
		runOK("tail", "committed: 50 rows") // only the hour appended since
		runOK("mirror", "committed: 50 rows")
		runOK("mirror", "committed: 0 rows")
		runOK("tail2", "committed: 50 rows")
		sn, err := iceberg.CurrentSnapshot(ctx, iceberg.Config{Table: "lake.mirror", Warehouse: lake})
		if err != nil || sn.Rows != int64(next) {
			t.Fatalf("lake.mirror: %+v %v, want %d rows", sn, err, next)
		}

		// Every row of the table reached the files exactly once, directly
		// and through the mirror.
		for _, dir := range []string{out, out2} {
			checkOnce(t, dir, next)
		}
	})
}

// checkOnce checks that the JSONL files of dir's run directories hold the
// rows of ids 1 to n, each once.
func checkOnce(t *testing.T, dir string, n int) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "run=*", "*.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]int{}
	for _, f := range files {
		for _, line := range strings.Split(strings.TrimSpace(string(must(os.ReadFile(f)))), "\n") {
			var row struct {
				ID   int    `json:"id"`
				Name string `json:"name"`
			}
			if err := json.Unmarshal([]byte(line), &row); err != nil || row.Name != fmt.Sprintf("n%d", row.ID) {
				t.Fatalf("%s: line %q: %v", f, line, err)
			}
			seen[row.ID]++
		}
	}
	for id := 1; id <= n; id++ {
		if seen[id] != 1 {
			t.Errorf("%s: id %d read %d times, want once", dir, id, seen[id])
		}
	}
	if len(seen) != n {
		t.Errorf("%s: %d ids read, want %d", dir, len(seen), n)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
