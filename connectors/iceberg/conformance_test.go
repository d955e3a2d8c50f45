package iceberg

import (
	"context"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/conformance"
)

// conformanceHarness opens sinks on one table of cfg, created from the
// (id, v) schema the batches carry: the suite's tasks carry no schema.
func conformanceHarness(cfg SinkConfig) conformance.SinkHarness {
	return conformance.SinkHarness{
		Open: func(t *testing.T) connectors.Sink {
			s := newSink(t, cfg)
			if err := s.CheckSchema(context.Background(), idv); err != nil {
				t.Fatal(err)
			}
			return s
		},
		Batches:       func() []connectors.Batch { return idvBatches(6) },
		Want:          func() []conformance.Table { return idvWant(6) },
		ReadBack:      readTable(cfg.Config),
		ReadCommitted: readCommitted(cfg.Config),
	}
}

func TestConformanceSink(t *testing.T) {
	conformance.TestSink(t, conformanceHarness(localConfig(t, "conf")))
}

func TestConformanceSinkS3(t *testing.T) {
	cfg, _ := s3Config(t, "conf")
	conformance.TestSink(t, conformanceHarness(cfg))
}

// A run by position (incremental.by) is appended to the table.
func TestConformanceAppend(t *testing.T) {
	conformance.TestAppend(t, conformanceHarness(localConfig(t, "append")))
}

func TestConformanceVersioned(t *testing.T) {
	conformance.TestVersioned(t, conformanceHarness(localConfig(t, "versions")))
}

// The source reads back a table the sink wrote: three data files, one a
// partition.
func TestConformanceSource(t *testing.T) {
	cfg := localConfig(t, "src")
	s := newSink(t, cfg)
	defer s.Close()
	if err := s.CheckSchema(context.Background(), idv); err != nil {
		t.Fatal(err)
	}
	bs := idvBatches(9)
	commit(t, s, "run-1", 1, write(t, s, "run-1", "t1", 1, idv, bs[:3]), write(t, s, "run-1", "t2", 1, idv, bs[3:6]), write(t, s, "run-1", "t3", 1, idv, bs[6:]))
	conformance.TestSource(t, conformance.SourceHarness{
		Open: func(t *testing.T) connectors.Source {
			src, err := NewSource(SourceConfig{Config: cfg.Config})
			if err != nil {
				t.Fatal(err)
			}
			return src
		},
		Request:        connectors.PlanRequest{RunID: "read-1", Partitioning: connectors.Partitioning{MaxFiles: 1}},
		WantRows:       27,
		WantPartitions: 3,
		Want:           func(*testing.T) conformance.Table { return conformance.Concat(idvWant(9)...) },
	})
}
