// Package cdctest holds the fixtures of tests of change data capture and
// its appliers: change events and the state they leave (Model), the
// SLUICE_CDC stream on an embedded NATS server with a runner applying it,
// and a reader of the files change log. Only tests import it.
package cdctest

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/protocol"
)

// Change builds a change event of the upstream pipeline "up": database
// "db", key column "id", committed 2024-05-01 10:30 UTC.
func Change(op protocol.Op, schema, table string, before, after protocol.Row) protocol.ChangeEvent {
	return protocol.ChangeEvent{Op: op, Pipeline: "up", Database: "db", Schema: schema, Table: table,
		Key: []string{"id"}, Before: before, After: after, CommitTime: time.Date(2024, 5, 1, 10, 30, 0, 0, time.UTC)}
}

// Numbered gives events the stream sequences first, first+1, ...: one
// message each.
func Numbered(first uint64, evs ...protocol.ChangeEvent) []connectors.Event {
	out := make([]connectors.Event, len(evs))
	for i, e := range evs {
		out[i] = connectors.Event{Seq: first + uint64(i), ChangeEvent: e}
	}
	return out
}

// Applied returns a's applied stream sequence, failing the test on an
// error.
func Applied(t testing.TB, a connectors.Applier) uint64 {
	t.Helper()
	seq, err := a.Applied(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// Model applies change events to rows of text values: the expected state
// of a target, computed without SQL. Rows are keyed by "schema.table" and
// the key values.
type Model map[string]map[string]protocol.Row

// Apply applies evs in order: inserts, updates and reads as upserts by key
// (an unchanged value keeps the row's), deletes, truncates.
func (m Model) Apply(t testing.TB, evs ...protocol.ChangeEvent) {
	t.Helper()
	for _, ev := range evs {
		name := ev.Schema + "." + ev.Table
		if m[name] == nil {
			m[name] = map[string]protocol.Row{}
		}
		rows := m[name]
		key := func(r protocol.Row) string {
			var parts []string
			for _, k := range ev.Key {
				parts = append(parts, r[k].Text)
			}
			return strings.Join(parts, "\x00")
		}
		switch ev.Op {
		case protocol.OpTruncate:
			m[name] = map[string]protocol.Row{}
		case protocol.OpDelete:
			delete(rows, key(ev.Before))
		default:
			old := key(ev.After)
			if ev.Before != nil {
				old = key(ev.Before)
			}
			prev := rows[old]
			row := protocol.Row{}
			for c, v := range ev.After {
				if v.Unchanged {
					if prev == nil {
						t.Fatalf("model: unchanged value of %s without a row", c)
					}
					v = prev[c]
				}
				row[c] = v
			}
			delete(rows, old)
			rows[key(ev.After)] = row
		}
	}
}

// Rows returns the model's rows of a table as text lines "v1|v2|...", NULL
// as \N, sorted: as pgtest.Rows reads a table.
func (m Model) Rows(name string, cols []string) []string {
	var out []string
	for _, r := range m[name] {
		var vals []string
		for _, c := range cols {
			v, ok := r[c]
			if !ok || v.Null {
				vals = append(vals, `\N`)
			} else {
				vals = append(vals, v.Text)
			}
		}
		out = append(out, strings.Join(vals, "|"))
	}
	slices.Sort(out)
	return out
}

// PostgresApplier opens a PostgreSQL Applier, closed when the test ends.
func PostgresApplier(t testing.TB, cfg postgres.ApplierConfig) *postgres.Applier {
	t.Helper()
	p, err := postgres.NewApplier(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}
