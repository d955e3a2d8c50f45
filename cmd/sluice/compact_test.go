package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/protocol"
)

// sluice compact and sluice vacuum on the dataset of a full load that
// wrote one small file per task: the dry run lists the group and changes
// nothing (as a table and as JSON); the compaction commits, and the
// exposed version then holds the same rows in one file; apply --check of a
// compact pipeline checks its dataset; the vacuum's dry run keeps the
// rollback window; a missing pipeline name is a usage error.
func TestCompactAndVacuumCLI(t *testing.T) {
	root := t.TempDir()
	in := filepath.Join(root, "in")
	out := filepath.Join(root, "out")
	if _, err := generateEvents(in, 3000, 6); err != nil {
		t.Fatal(err)
	}
	spec := fmt.Sprintf("name: events\npattern: full_load\nsource: {kind: files, path: %s, format: jsonl}\nsink: {kind: files, path: %s, format: jsonl}\npartitioning: {max_files: 1}\n", in, out)
	specPath := filepath.Join(root, "events.yaml")
	if err := os.WriteFile(specPath, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	dataFiles := func(dir string) int {
		t.Helper()
		names, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		return len(names)
	}
	if err := run(context.Background(), []string{"compact"}, io.Discard, io.Discard); !isUsage(err) {
		t.Errorf("compact without a pipeline: %v; want a usage error", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	err := devcluster.Run(ctx, devcluster.Config{DataDir: filepath.Join(root, "cluster"), Workers: 1, Slots: 2,
		Log: log, Tracer: noop.NewTracerProvider(), Registry: newRegistry(),
	}, func(ctx context.Context, c *devcluster.Cluster) error {
		if _, err := cli(ctx, c.NATSURL, "apply", "-f", specPath); err != nil {
			return err
		}
		if _, err := runCommitted(ctx, c, "events"); err != nil {
			return err
		}
		src, err := files.ReadChecksum(in, "jsonl")
		if err != nil {
			return err
		}
		loaded, err := files.Current(out)
		if err != nil {
			return err
		}
		if n := dataFiles(loaded); n != 6 {
			t.Fatalf("the load wrote %d files, want 6 (one per task)", n)
		}

		stdout, err := cli(ctx, c.NATSURL, "compact", "events", "--dry-run")
		if err != nil {
			return err
		}
		if !strings.Contains(stdout, "events: 1 rewrite groups in ") || !strings.Contains(stdout, ", 6 files, ") || !strings.Contains(stdout, "dry run: nothing changed") {
			t.Errorf("compact --dry-run printed %q", stdout)
		}
		stdout, err = cli(ctx, c.NATSURL, "compact", "events", "--dry-run", "-o", "json")
		if err != nil {
			return err
		}
		var dry protocol.CompactReply
		if err := json.Unmarshal([]byte(stdout), &dry); err != nil || len(dry.Groups) != 1 || dry.Groups[0].Files != 6 || dry.RunID != "" {
			t.Errorf("compact --dry-run -o json printed %s (%v); want one group of 6 files, no run", stdout, err)
		}
		if cur, err := files.Current(out); err != nil || cur != loaded {
			t.Fatalf("a dry run changed the exposed directory: %s, %v", cur, err)
		}

		stdout, err = cli(ctx, c.NATSURL, "compact", "events")
		if err != nil {
			return err
		}
		cur, err := files.Current(out)
		if err != nil {
			return err
		}
		if !strings.Contains(stdout, "compaction events-000002 committed: 1 groups, 3000 rows") || !strings.Contains(stdout, "data: "+cur) {
			t.Errorf("compact printed %q; want the committed compaction and its directory %s", stdout, cur)
		}
		got, err := files.ReadChecksum(cur, "jsonl")
		if err != nil {
			return err
		}
		if cur == loaded || got != src || dataFiles(cur) != 1 {
			t.Errorf("after the compaction %s holds %d files, %d rows %s; want one file of the source's %d rows %s", cur, dataFiles(cur), got.Rows, got, src.Rows, src)
		}

		// A compact pipeline of the dataset: apply --check looks at its
		// dataset, and refuses one that is not a directory.
		compactSpec := filepath.Join(root, "compact.yaml")
		if err := os.WriteFile(compactSpec, fmt.Appendf(nil, "name: events-compact\npattern: compact\ndataset: {kind: files, path: %s, format: jsonl}\n", out), 0o644); err != nil {
			return err
		}
		stdout, err = cli(ctx, c.NATSURL, "apply", "-f", compactSpec, "--check")
		if err != nil || !strings.Contains(stdout, "events-compact: checked dataset: ") {
			t.Errorf("apply --check of a compact pipeline: %v\n%s", err, stdout)
		}
		notDir := filepath.Join(root, "bad.yaml")
		if err := os.WriteFile(notDir, fmt.Appendf(nil, "name: bad-compact\npattern: compact\ndataset: {kind: files, path: %s, format: jsonl}\n", specPath), 0o644); err != nil {
			return err
		}
		if _, err := cli(ctx, c.NATSURL, "apply", "-f", notDir, "--check"); err == nil || !strings.Contains(err.Error(), "dataset") {
			t.Errorf("apply --check of a compact pipeline whose dataset is a file: %v; want a problem naming dataset", err)
		}

		stdout, err = cli(ctx, c.NATSURL, "vacuum", "events", "--dry-run", "-o", "json")
		if err != nil {
			return err
		}
		var vac protocol.VacuumReply
		if err := json.Unmarshal([]byte(stdout), &vac); err != nil || !vac.DryRun || len(vac.Kept) != 1 || !vac.Kept[0].Exposed {
			t.Errorf("vacuum --dry-run -o json printed %s (%v); want a dry run keeping the exposed version", stdout, err)
		}
		// Within the retention the directory the rewrite replaced stays.
		for _, it := range vac.Removed {
			if strings.Contains(it.Path, filepath.Base(loaded)) {
				t.Errorf("a vacuum within the retention would remove %s (%s)", it.Path, it.Why)
			}
		}
		stdout, err = cli(ctx, c.NATSURL, "vacuum", "events")
		if err != nil {
			return err
		}
		if !strings.HasPrefix(stdout, "events: removed ") || !strings.Contains(stdout, "rollback window (never removed): ") {
			t.Errorf("vacuum printed %q", stdout)
		}
		if _, err := os.Stat(loaded); err != nil {
			t.Errorf("the vacuum removed the replaced directory within the retention: %v", err)
		}

		// A dataset no pipeline names: the path as the argument, or
		// --dataset, applies a compact pipeline for it (the same one for
		// both) and runs it.
		if _, err := runCommitted(ctx, c, "events"); err != nil {
			return err
		}
		loaded, err = files.Current(out)
		if err != nil {
			return err
		}
		stdout, err = cli(ctx, c.NATSURL, "compact", out, "--dry-run")
		if err != nil {
			return err
		}
		name := ""
		if _, rest, ok := strings.Cut(stdout, "dataset files: compact pipeline "); ok {
			name, _, _ = strings.Cut(rest, " ")
		}
		if !strings.HasPrefix(name, "compact-") || !strings.Contains(stdout, name+": 1 rewrite groups in ") || !strings.Contains(stdout, ", 6 files, ") {
			t.Errorf("compact <path> --dry-run printed %q; want the pipeline applied and one group of 6 files", stdout)
		}
		if cur, err := files.Current(out); err != nil || cur != loaded {
			t.Fatalf("a dry run changed the exposed directory: %s, %v", cur, err)
		}
		stdout, err = cli(ctx, c.NATSURL, "compact", "--dataset", fmt.Sprintf("{kind: files, path: %q}", out))
		if err != nil {
			return err
		}
		cur, err = files.Current(out)
		if err != nil {
			return err
		}
		if !strings.Contains(stdout, "compact pipeline "+name+" ") || !strings.Contains(stdout, "committed: 1 groups, 3000 rows") {
			t.Errorf("compact --dataset printed %q; want pipeline %s's compaction committed", stdout, name)
		}
		if got, err := files.ReadChecksum(cur, "jsonl"); err != nil || cur == loaded || got != src || dataFiles(cur) != 1 {
			t.Errorf("after compact --dataset %s holds %d files, %d rows %s (%v); want one file of the source's %d rows %s", cur, dataFiles(cur), got.Rows, got, err, src.Rows, src)
		}
		if _, err := cli(ctx, c.NATSURL, "compact", "events", "--dataset", "{kind: files, path: /x}"); !isUsage(err) {
			t.Errorf("compact with a pipeline and --dataset: %v; want a usage error", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// isUsage reports whether err is a command line sluice cannot read.
func isUsage(err error) bool {
	var ue *usageError
	return errors.As(err, &ue)
}
