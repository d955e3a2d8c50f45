package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/protocol"
)

// sluice rollback on a files dataset that a cluster committed three times
// (keep_versions 2): the exposed data becomes exactly the older version's,
// a later rollback goes forward again, and a pruned or unknown version is
// refused with its reason.
func TestRollbackFiles(t *testing.T) {
	root := t.TempDir()
	in := filepath.Join(root, "in")
	out := filepath.Join(root, "out")
	if _, err := generateEvents(in, 3000, 6); err != nil {
		t.Fatal(err)
	}
	spec := fmt.Sprintf("name: events\npattern: full_load\nsource: {kind: files, path: %s, format: jsonl}\nsink: {kind: files, path: %s, format: jsonl, keep_versions: 2}\npartitioning: {max_files: 2}\n", in, out)
	specPath := filepath.Join(root, "events.yaml")
	if err := os.WriteFile(specPath, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	// The rollback reads the dataset path through ${ENV}, as a spec with
	// per-environment paths would.
	t.Setenv("SLUICE_ROLLBACK_TEST_OUT", out)
	rbSpec := filepath.Join(root, "events-env.yaml")
	if err := os.WriteFile(rbSpec, []byte(strings.Replace(spec, "path: "+out, "path: '${SLUICE_ROLLBACK_TEST_OUT}'", 1)), 0o644); err != nil {
		t.Fatal(err)
	}

	// want[v] is the source checksum version v was loaded from.
	want := map[int64]connectors.Checksum{}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := newRegistry()
	err := devcluster.Run(ctx, devcluster.Config{DataDir: filepath.Join(root, "cluster"), Workers: 1, Slots: 2,
		Log: log, Tracer: noop.NewTracerProvider(), Registry: reg,
	}, func(ctx context.Context, c *devcluster.Cluster) error {
		specs, err := loadSpecs([]string{specPath}, reg, io.Discard)
		if err != nil {
			return err
		}
		if _, err := c.Client.Apply(ctx, specs[0]); err != nil {
			return err
		}
		for i := range 3 {
			if i > 0 { // each version holds other rows
				if _, err := generateEvents(filepath.Join(in, fmt.Sprintf("more%d", i)), 500, 1); err != nil {
					return err
				}
			}
			src, err := files.ReadChecksum(in, "jsonl")
			if err != nil {
				return err
			}
			res, err := c.Client.Run(ctx, protocol.RunRequest{Pipeline: "events"})
			if err != nil {
				return err
			}
			st, err := c.Client.WaitRun(ctx, res.RunID, 50*time.Millisecond, nil)
			if err != nil {
				return err
			}
			if st.State != protocol.RunCommitted {
				return fmt.Errorf("run %s %s: %s", st.RunID, st.State, st.Error)
			}
			want[st.Version] = src
		}

		// Without --spec the command finds the pipeline but cannot get its
		// sink from the API, and says what to give.
		err = run(ctx, []string{"rollback", "events", "--nats", c.NATSURL}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--spec") {
			t.Errorf("rollback without --spec: %v; want an error asking for --spec", err)
		}
		err = run(ctx, []string{"rollback", "nope", "--nats", c.NATSURL}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), `no pipeline "nope"`) {
			t.Errorf("rollback of an unknown pipeline: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != 3 || want[1] == want[2] || want[2] == want[3] {
		t.Fatalf("versions committed: %v; want 3 distinct", want)
	}

	exposed := func() int64 {
		t.Helper()
		cur, err := files.Current(out)
		if err != nil {
			t.Fatal(err)
		}
		v, ok := parseVersionDir(filepath.Base(cur))
		if !ok {
			t.Fatalf("current -> %s", cur)
		}
		got, err := files.ReadChecksum(cur, "jsonl")
		if err != nil {
			t.Fatal(err)
		}
		if got != want[v] {
			t.Fatalf("exposed version %d holds %d rows %s; it was loaded from %d rows %s", v, got.Rows, got, want[v].Rows, want[v])
		}
		return v
	}
	rollback := func(args ...string) (string, error) {
		var stdout bytes.Buffer
		err := run(context.Background(), append([]string{"rollback", "events", "--spec", rbSpec}, args...), &stdout, io.Discard)
		return stdout.String(), err
	}
	if v := exposed(); v != 3 {
		t.Fatalf("exposed version %d before any rollback, want 3", v)
	}

	stdout, err := rollback()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout, "events: exposed version 3 -> 2") {
		t.Errorf("rollback printed %q", stdout)
	}
	if v := exposed(); v != 2 {
		t.Fatalf("after rollback: version %d exposed, want 2", v)
	}
	if _, err := os.Lstat(filepath.Join(out, "v000003")); err != nil {
		t.Errorf("the newer version must stay for a rollback forward: %v", err)
	}

	for _, tc := range []struct {
		to, msg string
	}{
		{"1", "version 1 is not kept: pruned by keep_versions"},
		{"9", "version 9 was never committed"},
	} {
		if _, err := rollback("--to", tc.to); err == nil || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "kept: 2, 3") {
			t.Errorf("rollback --to %s: %v; want %q and the kept versions", tc.to, err, tc.msg)
		}
		if v := exposed(); v != 2 {
			t.Fatalf("a refused rollback changed the exposed version to %d", v)
		}
	}
	// Nothing older than 2 is kept.
	if _, err := rollback(); err == nil || !strings.Contains(err.Error(), "no kept version older than the exposed version 2") {
		t.Errorf("rollback past the oldest kept version: %v", err)
	}

	stdout, err = rollback("--to", "3")
	if err != nil || !strings.Contains(stdout, "events: exposed version 2 -> 3") {
		t.Fatalf("rollback forward: %v %q", err, stdout)
	}
	if v := exposed(); v != 3 {
		t.Fatalf("after rollback --to 3: version %d exposed", v)
	}
	if ents, _ := filepath.Glob(filepath.Join(out, ".current*")); len(ents) != 0 {
		t.Errorf("temporary symlinks left: %v", ents)
	}

	// A spec of another pipeline, or an unset variable, is refused.
	if err := run(context.Background(), []string{"rollback", "other", "--spec", rbSpec}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), `holds pipeline "events"`) {
		t.Errorf("rollback with another pipeline's spec: %v", err)
	}
	os.Unsetenv("SLUICE_ROLLBACK_TEST_OUT")
	if _, err := rollback(); err == nil || !strings.Contains(err.Error(), "SLUICE_ROLLBACK_TEST_OUT") {
		t.Errorf("rollback with the sink path's variable unset: %v", err)
	}
}

// sluice rollback on a postgres sink: the view shows the older version's
// rows exactly, and a dropped or unknown version is refused.
func TestRollbackPostgres(t *testing.T) {
	dsn, schema, conn := pgtest.DB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	table := schema + ".orders"
	sink, err := postgres.NewSink(postgres.SinkConfig{DSN: dsn, Table: table, KeepVersions: 2})
	if err != nil {
		t.Fatal(err)
	}
	// Versions 1..3 of 10, 20 and 30 rows; keep_versions 2 drops version 1.
	want := map[int64]connectors.Checksum{}
	for v := int64(1); v <= 3; v++ {
		run := fmt.Sprintf("orders-%06d", v)
		w, err := sink.OpenTask(ctx, connectors.TaskRef{RunID: run, TaskID: "t1", Pipeline: "orders", Attempt: 1})
		if err != nil {
			t.Fatal(err)
		}
		var raw []byte
		for i := range 10 * v {
			raw = fmt.Appendf(raw, "%d,\"item, %d\",%d.50\n", i, v, i*v)
		}
		if err := w.Write(ctx, connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: []string{"id", "name", "price"}, Rows: 10 * v}); err != nil {
			t.Fatal(err)
		}
		outp, err := w.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: run, Pipeline: "orders", Version: v, Tasks: []connectors.TaskOutput{outp}}); err != nil {
			t.Fatal(err)
		}
		want[v] = outp.Checksum
	}

	t.Setenv("SLUICE_ROLLBACK_TEST_PG", dsn)
	specPath := filepath.Join(t.TempDir(), "orders.yaml")
	spec := fmt.Sprintf("name: orders\npattern: full_load\nsource: {kind: postgres, dsn: '${SLUICE_ROLLBACK_TEST_PG}', table: public.orders}\nsink: {kind: postgres, dsn: '${SLUICE_ROLLBACK_TEST_PG}', table: %s, keep_versions: 2}\n", table)
	if err := os.WriteFile(specPath, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	rollback := func(args ...string) (string, error) {
		var stdout bytes.Buffer
		err := run(ctx, append([]string{"rollback", "orders", "--spec", specPath}, args...), &stdout, io.Discard)
		return stdout.String(), err
	}
	viewHolds := func(v int64) {
		t.Helper()
		got, err := postgres.TableChecksum(ctx, conn, "SELECT * FROM "+table)
		if err != nil {
			t.Fatal(err)
		}
		if got != want[v] {
			t.Fatalf("view holds %d rows %s; version %d has %d rows %s", got.Rows, got, v, want[v].Rows, want[v])
		}
	}
	viewHolds(3)

	stdout, err := rollback()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout, "orders: exposed version 3 -> 2") || !strings.Contains(stdout, "orders_v2 (20 rows") {
		t.Errorf("rollback printed %q", stdout)
	}
	viewHolds(2)

	for _, tc := range []struct{ to, msg string }{
		{"1", "version 1 was dropped"},
		{"7", "version 7 was never committed"},
	} {
		if _, err := rollback("--to", tc.to); err == nil || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "kept versions: 2, 3") {
			t.Errorf("rollback --to %s: %v; want %q and the kept versions", tc.to, err, tc.msg)
		}
		viewHolds(2)
	}
	if _, err := rollback(); err == nil || !strings.Contains(err.Error(), "no kept version older") {
		t.Errorf("rollback past the oldest kept version: %v", err)
	}

	stdout, err = rollback("--to", "3")
	if err != nil || !strings.Contains(stdout, "orders: exposed version 2 -> 3") {
		t.Fatalf("rollback forward: %v %q", err, stdout)
	}
	viewHolds(3)
	stdout, err = rollback("--to", "3")
	if err != nil || !strings.Contains(stdout, "already exposes version 3") {
		t.Errorf("rollback to the exposed version: %v %q", err, stdout)
	}
}
