package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// textRow is one row as ReadText gives it, copied: nil is NULL.
type textRow []*string

func (r textRow) String() string {
	var parts []string
	for _, v := range r {
		if v == nil {
			parts = append(parts, "NULL")
		} else {
			parts = append(parts, fmt.Sprintf("%q", *v))
		}
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func copyRow(values [][]byte) textRow {
	r := make(textRow, len(values))
	for i, v := range values {
		if v != nil {
			s := string(v)
			r[i] = &s
		}
	}
	return r
}

// readTextChunk reads one chunk with ReadText.
func readTextChunk(t *testing.T, src *Source, p protocol.Partition) ([]string, []textRow) {
	t.Helper()
	var cols []string
	var rows []textRow
	err := src.ReadText(context.Background(), p, func(columns []string, values [][]byte) error {
		cols = slices.Clone(columns)
		rows = append(rows, copyRow(values))
		return nil
	})
	if err != nil {
		t.Fatalf("ReadText %s: %v", p.Key, err)
	}
	return cols, rows
}

// TestPlanSnapshotReadText: chunks planned on a snapshot another session
// exported read exactly that snapshot's rows as text (NULL distinct from
// the empty string, unicode intact), however the table changed since, in
// the same order on every read; once the exporting session ends, planning
// and reading fail permanently with ErrSnapshotGone.
func TestPlanSnapshotReadText(t *testing.T) {
	dsn, schema, conn := testDB(t)
	ctx := context.Background()
	table := schema + ".snap"
	createAllTypes(t, conn, table, 3000, true)

	// The exporting session renders values as ReadText does (connect).
	exporter, err := connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer exporter.Close(ctx)
	exec(t, exporter, "BEGIN ISOLATION LEVEL REPEATABLE READ")
	var snapshot string
	if err := exporter.QueryRow(ctx, "SELECT pg_export_snapshot()").Scan(&snapshot); err != nil {
		t.Fatal(err)
	}
	// What the snapshot holds, read by the exporter itself.
	want := map[string]textRow{}
	rr := exporter.PgConn().ExecParams(ctx, "SELECT "+allTypesColumns+" FROM "+table, nil, nil, nil, nil)
	for rr.NextRow() {
		r := copyRow(rr.Values())
		want[*r[0]] = r
	}
	if _, err := rr.Close(); err != nil {
		t.Fatal(err)
	}
	// Changes after the export, which no chunk may see.
	exec(t, conn, "UPDATE "+table+" SET name = 'changed', note = NULL WHERE id % 10 = 0")
	exec(t, conn, "DELETE FROM "+table+" WHERE id % 10 = 1")
	exec(t, conn, "INSERT INTO "+table+" (id, name) SELECT g, 'new' FROM generate_series(5001, 5500) g")

	for _, tc := range []struct {
		name   string
		config map[string]any
		order  func(prev, cur textRow) bool // nil: no order to check
	}{
		{name: "ctid", config: map[string]any{"dsn": dsn, "table": table}},
		{name: "key", config: map[string]any{"dsn": dsn, "table": table, "key": "id"}, order: func(prev, cur textRow) bool {
			var a, b int
			fmt.Sscan(*prev[0], &a)
			fmt.Sscan(*cur[0], &b)
			return a < b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newSource(t, tc.config)
			plan, err := src.PlanSnapshot(ctx, connectors.PlanRequest{RunID: "r1", Partitioning: connectors.Partitioning{TargetRows: 700}}, snapshot)
			if err != nil {
				t.Fatal(err)
			}
			if len(plan.Partitions) < 3 {
				t.Fatalf("%d chunks, want several", len(plan.Partitions))
			}
			if held := src.HeldRuns(); len(held) != 0 {
				t.Fatalf("PlanSnapshot holds runs %v", held)
			}
			got := map[string]textRow{}
			for _, p := range plan.Partitions {
				var spec chunkSpec
				if err := json.Unmarshal(p.Spec, &spec); err != nil || spec.Snapshot != snapshot {
					t.Fatalf("chunk %s: snapshot %q (%v), want %q", p.Key, spec.Snapshot, err, snapshot)
				}
				if tc.name == "ctid" && !spec.Ctid || tc.name == "key" && spec.Key != "id" {
					t.Fatalf("chunk %s: spec %s", p.Key, p.Spec)
				}
				cols, rows := readTextChunk(t, src, p)
				if strings.Join(cols, ", ") != allTypesColumns {
					t.Fatalf("chunk %s: columns %v", p.Key, cols)
				}
				for i, r := range rows {
					if _, dup := got[*r[0]]; dup {
						t.Fatalf("row id %s read twice", *r[0])
					}
					got[*r[0]] = r
					if tc.order != nil && i > 0 && !tc.order(rows[i-1], r) {
						t.Fatalf("chunk %s: row %s after %s", p.Key, *r[0], *rows[i-1][0])
					}
				}
				if _, again := readTextChunk(t, src, p); !slices.EqualFunc(rows, again, func(a, b textRow) bool { return a.String() == b.String() }) {
					t.Fatalf("chunk %s: a second read gave other rows or another order", p.Key)
				}
			}
			if len(got) != len(want) {
				t.Fatalf("read %d rows, the snapshot holds %d", len(got), len(want))
			}
			for id, w := range want {
				if got[id].String() != w.String() {
					t.Fatalf("row %s: read %v, snapshot holds %v", id, got[id], w)
				}
			}
			// NULL and '' stay apart, unicode stays whole (name: '' when id%5 = 3,
			// NULL when id%5 = 4, '日本語, ...' when id%5 = 1).
			if r := got["3"]; r[2] == nil || *r[2] != "" {
				t.Errorf("row 3 name = %v, want the empty string", r)
			}
			if r := got["4"]; r[2] != nil {
				t.Errorf("row 4 name = %v, want NULL", r)
			}
			if r := got["11"]; r[2] == nil || !strings.HasPrefix(*r[2], "日本語") {
				t.Errorf("row 11 name = %v, want 日本語...", r)
			}
		})
	}

	// An error from fn stops the read and comes back.
	src := newSource(t, map[string]any{"dsn": dsn, "table": table})
	plan, err := src.PlanSnapshot(ctx, connectors.PlanRequest{RunID: "r2"}, snapshot)
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	calls := 0
	err = src.ReadText(ctx, plan.Partitions[0], func([]string, [][]byte) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("ReadText with a failing fn: %v after %d calls", err, calls)
	}

	// A bad snapshot id is refused before any SQL.
	if _, err := src.PlanSnapshot(ctx, connectors.PlanRequest{RunID: "r3"}, "x'; SELECT 1; --"); !connectors.IsPermanent(err) {
		t.Fatalf("PlanSnapshot with a bad id: %v, want a permanent error", err)
	}

	// The exporting session ends: the snapshot is gone.
	exec(t, exporter, "COMMIT")
	err = src.ReadText(ctx, plan.Partitions[0], func([]string, [][]byte) error { return nil })
	if !errors.Is(err, ErrSnapshotGone) || !connectors.IsReplan(err) || !connectors.IsPermanent(err) {
		t.Fatalf("ReadText after the export ended: %v, want a Replan (and permanent) ErrSnapshotGone", err)
	}
	if _, err := src.PlanSnapshot(ctx, connectors.PlanRequest{RunID: "r4"}, snapshot); !errors.Is(err, ErrSnapshotGone) || !connectors.IsPermanent(err) {
		t.Fatalf("PlanSnapshot after the export ended: %v, want a permanent ErrSnapshotGone", err)
	}
}

// TestSessionParams: SessionParams is a copy of the settings every session
// of the package uses.
func TestSessionParams(t *testing.T) {
	p := SessionParams()
	if p["TimeZone"] != "UTC" || p["bytea_output"] != "hex" {
		t.Fatalf("SessionParams() = %v", p)
	}
	p["TimeZone"] = "Asia/Tokyo"
	if sessionParams["TimeZone"] != "UTC" {
		t.Fatal("SessionParams returned the package's own map")
	}
}
