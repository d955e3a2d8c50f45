package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
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

// cli runs one sluice command against the cluster at natsURL and returns
// its standard output.
func cli(ctx context.Context, natsURL string, args ...string) (string, error) {
	var stdout bytes.Buffer
	err := run(ctx, append(args, "--nats", natsURL), &stdout, io.Discard)
	return stdout.String(), err
}

// statusVersion is the exposed version `sluice status --json` shows for
// pipeline name.
func statusVersion(t *testing.T, ctx context.Context, natsURL, name string) int64 {
	t.Helper()
	out, err := cli(ctx, natsURL, "status", name, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st protocol.StatusReply
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Pipelines) != 1 {
		t.Fatalf("status --json: %v %s", err, out)
	}
	return st.Pipelines[0].Version
}

// runCommitted starts a run of pipeline name through the client and
// waits for its commit.
func runCommitted(ctx context.Context, c *devcluster.Cluster, name string) (protocol.RunStatus, error) {
	res, err := c.Client.Run(ctx, protocol.RunRequest{Pipeline: name})
	if err != nil {
		return protocol.RunStatus{}, err
	}
	st, err := c.Client.WaitRun(ctx, res.RunID, 50*time.Millisecond, nil)
	if err == nil && st.State != protocol.RunCommitted {
		err = fmt.Errorf("run %s %s: %s", st.RunID, st.State, st.Error)
	}
	return st, err
}

// sluice rollback on a files dataset a cluster committed three times
// (keep_versions 2): it goes through the leader, which exposes exactly the
// older version's rows and shows it in sluice status at once; a later
// rollback goes forward again; a pruned or unknown version is refused with
// its reason and the kept versions. No spec is needed: sluice pipelines get
// shows the stored one, its ${ENV} references unexpanded.
func TestRollbackFiles(t *testing.T) {
	root := t.TempDir()
	in := filepath.Join(root, "in")
	out := filepath.Join(root, "out")
	if _, err := generateEvents(in, 3000, 6); err != nil {
		t.Fatal(err)
	}
	// The sink's path comes from the environment where the coordinator
	// runs, as a spec with per-environment paths would have it.
	t.Setenv("SLUICE_ROLLBACK_TEST_OUT", out)
	spec := fmt.Sprintf("name: events\npattern: full_load\nsource: {kind: files, path: %s, format: jsonl}\nsink: {kind: files, path: '${SLUICE_ROLLBACK_TEST_OUT}', format: jsonl, keep_versions: 2}\npartitioning: {max_files: 2}\n", in)
	specPath := filepath.Join(root, "events.yaml")
	if err := os.WriteFile(specPath, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}

	// want[v] is the source's rows (canonical, sorted) version v was
	// loaded from, read here without the code under test.
	want := map[int64][]string{}
	exposed := func() int64 {
		t.Helper()
		cur, err := files.Current(out)
		if err != nil {
			t.Fatal(err)
		}
		var v int64
		if _, err := fmt.Sscanf(filepath.Base(cur), "v%06d", &v); err != nil {
			t.Fatalf("current -> %s", cur)
		}
		if got := jsonlRows(t, cur); !slices.Equal(got, want[v]) {
			t.Fatalf("exposed version %d holds %d rows, other than the %d rows it was loaded from", v, len(got), len(want[v]))
		}
		return v
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
		for i := range 3 {
			if i > 0 { // each version holds other rows
				if _, err := generateEvents(filepath.Join(in, fmt.Sprintf("more%d", i)), 500, 1); err != nil {
					return err
				}
			}
			src := jsonlRows(t, in)
			st, err := runCommitted(ctx, c, "events")
			if err != nil {
				return err
			}
			want[st.Version] = src
		}
		if len(want) != 3 || len(want[1]) == len(want[2]) || len(want[2]) == len(want[3]) {
			t.Fatalf("versions committed: %d; want 3 of different sizes", len(want))
		}
		if v := exposed(); v != 3 {
			t.Fatalf("exposed version %d before any rollback, want 3", v)
		}

		// The stored spec, as applied: the reference stays unexpanded.
		got, err := cli(ctx, c.NATSURL, "pipelines", "get", "events")
		if err != nil {
			return err
		}
		if !strings.Contains(got, "path: '${SLUICE_ROLLBACK_TEST_OUT}'") || strings.Contains(got, out) || !strings.Contains(got, "revision 1") {
			t.Errorf("pipelines get printed %q; want the spec as applied, ${SLUICE_ROLLBACK_TEST_OUT} unexpanded", got)
		}
		got, err = cli(ctx, c.NATSURL, "pipelines", "get", "events", "--json")
		if err != nil {
			return err
		}
		if !strings.Contains(got, `"path": "${SLUICE_ROLLBACK_TEST_OUT}"`) || strings.Contains(got, out) {
			t.Errorf("pipelines get --json printed %s; want the stored configuration, the reference unexpanded", got)
		}

		stdout, err := cli(ctx, c.NATSURL, "rollback", "events")
		if err != nil {
			return err
		}
		if !strings.Contains(stdout, "events: exposed version 3 -> 2") || !strings.Contains(stdout, filepath.Join(out, "v000002")+" (run events-000002, 3500 rows)") ||
			!strings.Contains(stdout, "kept: 2, 3; exposed: 2") {
			t.Errorf("rollback printed %q", stdout)
		}
		if v := exposed(); v != 2 {
			t.Fatalf("after rollback: version %d exposed, want 2", v)
		}
		if v := statusVersion(t, ctx, c.NATSURL, "events"); v != 2 {
			t.Errorf("sluice status shows version %d right after the rollback, want 2", v)
		}
		if _, err := os.Lstat(filepath.Join(out, "v000003")); err != nil {
			t.Errorf("the newer version must stay for a rollback forward: %v", err)
		}

		for _, tc := range []struct{ to, msg string }{
			{"1", "version 1 is not kept: pruned by keep_versions"},
			{"9", "version 9 was never committed"},
		} {
			if _, err := cli(ctx, c.NATSURL, "rollback", "events", "--to", tc.to); err == nil || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "kept: 2, 3; exposed: 2") {
				t.Errorf("rollback --to %s: %v; want %q and the kept versions", tc.to, err, tc.msg)
			}
			if v := exposed(); v != 2 {
				t.Fatalf("a refused rollback changed the exposed version to %d", v)
			}
		}
		// Nothing older than 2 is kept.
		if _, err := cli(ctx, c.NATSURL, "rollback", "events"); err == nil || !strings.Contains(err.Error(), "no kept version older than the exposed version 2") {
			t.Errorf("rollback past the oldest kept version: %v", err)
		}
		stdout, err = cli(ctx, c.NATSURL, "rollback", "events", "--to", "3")
		if err != nil || !strings.Contains(stdout, "events: exposed version 2 -> 3") {
			t.Fatalf("rollback forward: %v %q", err, stdout)
		}
		if v := exposed(); v != 3 || statusVersion(t, ctx, c.NATSURL, "events") != 3 {
			t.Fatalf("after rollback --to 3: version %d exposed", v)
		}
		stdout, err = cli(ctx, c.NATSURL, "rollback", "events", "--to", "3")
		if err != nil || !strings.Contains(stdout, "events: already exposes version 3") {
			t.Errorf("rollback to the exposed version: %v %q", err, stdout)
		}

		// Back to 2, then a run: it commits as version 4, exposed.
		if _, err := cli(ctx, c.NATSURL, "rollback", "events"); err != nil {
			return err
		}
		src := jsonlRows(t, in)
		st, err := runCommitted(ctx, c, "events")
		if err != nil {
			return err
		}
		if st.Version != 4 {
			t.Fatalf("the run after a rollback committed as version %d, want 4 (numbers are never reused)", st.Version)
		}
		want[4] = src
		if v := exposed(); v != 4 || statusVersion(t, ctx, c.NATSURL, "events") != 4 {
			t.Fatalf("after the next run: version %d exposed", v)
		}

		// An unknown pipeline, and the removed --spec flag.
		if _, err := cli(ctx, c.NATSURL, "rollback", "nope"); err == nil || !strings.Contains(err.Error(), `pipeline "nope" not found`) {
			t.Errorf("rollback of an unknown pipeline: %v", err)
		}
		if _, err := cli(ctx, c.NATSURL, "rollback", "events", "--spec", specPath); err == nil || !strings.Contains(err.Error(), "-spec") {
			t.Errorf("rollback --spec: %v; want the flag refused", err)
		}
		if _, err := cli(ctx, c.NATSURL, "pipelines", "get", "nope"); err == nil || !strings.Contains(err.Error(), `pipeline "nope" not found`) {
			t.Errorf("pipelines get of an unknown pipeline: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if ents, _ := filepath.Glob(filepath.Join(out, ".current*")); len(ents) != 0 {
		t.Errorf("temporary symlinks left: %v", ents)
	}
}

// sluice rollback on a postgres sink loaded through the cluster: the view
// shows the older version's rows exactly, sluice status the version; a
// dropped or unknown version is refused.
func TestRollbackPostgres(t *testing.T) {
	dsn, schema, conn := pgtest.DB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	src, view := schema+".orders", schema+".orders_copy"
	if _, err := conn.Exec(ctx, "CREATE TABLE "+src+" (id bigint PRIMARY KEY, name text, price numeric(10,2))"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SLUICE_ROLLBACK_TEST_PG", dsn)
	specPath := filepath.Join(t.TempDir(), "orders.yaml")
	spec := fmt.Sprintf("name: orders\npattern: full_load\nsource: {kind: postgres, dsn: '${SLUICE_ROLLBACK_TEST_PG}', table: %s}\nsink: {kind: postgres, dsn: '${SLUICE_ROLLBACK_TEST_PG}', table: %s, keep_versions: 2}\n", src, view)
	if err := os.WriteFile(specPath, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	// want[v] is the checksum of the source rows version v was loaded from.
	want := map[int64]connectors.Checksum{}
	viewHolds := func(v int64) {
		t.Helper()
		got, err := postgres.TableChecksum(ctx, conn, "SELECT * FROM "+view)
		if err != nil {
			t.Fatal(err)
		}
		if got != want[v] {
			t.Fatalf("view holds %d rows %s; version %d has %d rows %s", got.Rows, got, v, want[v].Rows, want[v])
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	err := devcluster.Run(ctx, devcluster.Config{DataDir: filepath.Join(t.TempDir(), "cluster"), Workers: 1, Slots: 2,
		Log: log, Tracer: noop.NewTracerProvider(), Registry: newRegistry(),
	}, func(ctx context.Context, c *devcluster.Cluster) error {
		if _, err := cli(ctx, c.NATSURL, "apply", "-f", specPath); err != nil {
			return err
		}
		// Versions 1..3 of 10, 20 and 30 rows; keep_versions 2 drops version 1.
		for v := int64(1); v <= 3; v++ {
			if _, err := conn.Exec(ctx, fmt.Sprintf("INSERT INTO %s SELECT g, 'item, ' || g, g * 1.5 FROM generate_series(%d, %d) g", src, 10*(v-1)+1, 10*v)); err != nil {
				return err
			}
			sum, err := postgres.TableChecksum(ctx, conn, "SELECT * FROM "+src)
			if err != nil {
				return err
			}
			st, err := runCommitted(ctx, c, "orders")
			if err != nil {
				return err
			}
			want[st.Version] = sum
		}
		viewHolds(3)

		stdout, err := cli(ctx, c.NATSURL, "rollback", "orders")
		if err != nil {
			return err
		}
		if !strings.Contains(stdout, "orders: exposed version 3 -> 2") || !strings.Contains(stdout, "orders_copy_v2 (run orders-000002, 20 rows)") {
			t.Errorf("rollback printed %q", stdout)
		}
		viewHolds(2)
		if v := statusVersion(t, ctx, c.NATSURL, "orders"); v != 2 {
			t.Errorf("sluice status shows version %d right after the rollback, want 2", v)
		}
		for _, tc := range []struct{ to, msg string }{
			{"1", "version 1 is not kept: pruned by keep_versions"},
			{"7", "version 7 was never committed"},
		} {
			if _, err := cli(ctx, c.NATSURL, "rollback", "orders", "--to", tc.to); err == nil || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "kept: 2, 3; exposed: 2") {
				t.Errorf("rollback --to %s: %v; want %q and the kept versions", tc.to, err, tc.msg)
			}
			viewHolds(2)
		}
		if _, err := cli(ctx, c.NATSURL, "rollback", "orders"); err == nil || !strings.Contains(err.Error(), "no kept version older") {
			t.Errorf("rollback past the oldest kept version: %v", err)
		}
		stdout, err = cli(ctx, c.NATSURL, "rollback", "orders", "--to", "3")
		if err != nil || !strings.Contains(stdout, "orders: exposed version 2 -> 3") {
			t.Fatalf("rollback forward: %v %q", err, stdout)
		}
		viewHolds(3)
		if v := statusVersion(t, ctx, c.NATSURL, "orders"); v != 3 {
			t.Errorf("sluice status shows version %d after the rollback forward, want 3", v)
		}
		// The stored spec keeps the DSN as a reference: no password, no
		// expanded value.
		got, err := cli(ctx, c.NATSURL, "pipelines", "get", "orders", "--json")
		if err != nil {
			return err
		}
		if strings.Contains(got, dsn) || !strings.Contains(got, "${SLUICE_ROLLBACK_TEST_PG}") {
			t.Errorf("pipelines get --json: %s; want the DSN as its reference", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
