package postgres

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/conformance"
)

func TestConformanceSource(t *testing.T) {
	dsn, schema, conn := testDB(t)
	table := schema + ".src"
	createAllTypes(t, conn, table, 20_000, true)
	exec(t, conn, "CREATE TABLE "+schema+".nopk AS SELECT * FROM "+table)
	for _, tc := range []struct{ name, table string }{{"key ranges", table}, {"ctid ranges", schema + ".nopk"}} {
		t.Run(tc.name, func(t *testing.T) {
			conformance.TestSource(t, conformance.SourceHarness{
				Open: func(t *testing.T) connectors.Source {
					cfg := SourceConfig{DSN: dsn, Table: tc.table}
					s, err := NewSource(cfg)
					if err != nil {
						t.Fatal(err)
					}
					return s
				},
				Request:  connectors.PlanRequest{RunID: "conf", Partitioning: connectors.Partitioning{TargetRows: 4000}},
				WantRows: 20_000,
			})
		})
	}
}

func TestConformanceSink(t *testing.T) {
	dsn, schema, conn := testDB(t)
	conformance.TestSink(t, confHarness(dsn, schema+".conf", conn))
}

// The sink keeps versions for rollback: a table per version behind the
// view.
func TestConformanceVersioned(t *testing.T) {
	dsn, schema, conn := testDB(t)
	conformance.TestVersioned(t, confHarness(dsn, schema+".conf", conn))
}

// confHarness is the conformance harness of a sink loading view.
func confHarness(dsn, view string, conn *pgx.Conn) conformance.SinkHarness {
	return conformance.SinkHarness{
		Open: func(t *testing.T) connectors.Sink {
			s, err := NewSink(SinkConfig{DSN: dsn, Table: view})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Batches: func() []connectors.Batch {
			var bs []connectors.Batch
			for i := range 6 {
				raw := fmt.Appendf(nil, "%d,\"multi\nline, %d\"\n%d,\n%d,\"\"\n", 3*i, i, 3*i+1, 3*i+2)
				bs = append(bs, connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: []string{"id", "v"}, Rows: 3})
			}
			return bs
		},
		ReadCommitted: func(t *testing.T, _ connectors.Sink) (connectors.Checksum, error) {
			return TableChecksum(context.Background(), conn, "SELECT id, v FROM "+view)
		},
	}
}
