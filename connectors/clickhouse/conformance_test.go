package clickhouse

import (
	"context"
	"fmt"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/clickhouse/chtest"
	"github.com/sluicehq/sluice/connectors/conformance"
)

// testSink opens a sink on table in the test's database.
func testSink(t *testing.T, url, db, table string, mod func(*SinkConfig)) *Sink {
	t.Helper()
	cfg := SinkConfig{URL: url, Table: db + "." + table}
	if mod != nil {
		mod(&cfg)
	}
	s, err := NewSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformanceSink(t *testing.T) {
	url, db := chtest.DB(t)
	conformance.TestSink(t, confHarness(url, db))
}

// The sink keeps versions for rollback: <table>_v<N> beside the table.
func TestConformanceVersioned(t *testing.T) {
	url, db := chtest.DB(t)
	conformance.TestVersioned(t, confHarness(url, db))
}

// confHarness is the conformance harness of a sink loading db.conf.
func confHarness(url, db string) conformance.SinkHarness {
	return conformance.SinkHarness{
		Open: func(t *testing.T) connectors.Sink { return testSink(t, url, db, "conf", nil) },
		Batches: func() []connectors.Batch {
			var bs []connectors.Batch
			for i := range 6 {
				raw := fmt.Appendf(nil, "%d,\"multi\nline, %d\"\n%d,\n%d,\"\"\n", 3*i, i, 3*i+1, 3*i+2)
				bs = append(bs, connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: []string{"id", "v"}, Rows: 3})
			}
			return bs
		},
		// Each batch: a text with a newline and a comma, a NULL (an
		// unquoted empty field) and an empty text (a quoted one).
		Want: func() []conformance.Table {
			var ts []conformance.Table
			for i := range 6 {
				ts = append(ts, conformance.Table{Columns: []string{"id", "v"}, Rows: [][]string{
					{fmt.Sprint(3 * i), fmt.Sprintf("multi\nline, %d", i)}, {fmt.Sprint(3*i + 1), conformance.Null}, {fmt.Sprint(3*i + 2), ""}}})
			}
			return ts
		},
		// Read back over plain HTTP, as JSON lines.
		ReadBack: func(t *testing.T) (conformance.Table, error) {
			out, err := chtest.Exec(t.Context(), url, "SELECT id, v FROM "+db+".conf FORMAT JSONEachRow")
			if err != nil {
				return conformance.Table{}, err
			}
			return conformance.JSONLRows([]byte(out))
		},
		ReadCommitted: func(t *testing.T, s connectors.Sink) (connectors.Checksum, error) {
			return TextChecksum(context.Background(), s.(*Sink).cl, "SELECT id, v FROM "+db+".conf")
		},
	}
}
