package files_test

import (
	"path/filepath"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/conformance"
	"github.com/sluicehq/sluice/connectors/files"
)

// The files sink appends a run by position as a run=<run id> directory
// of its own; the dataset is every such directory.
func TestAppendConformance(t *testing.T) {
	for _, format := range []string{"jsonl", "parquet"} {
		t.Run(format, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			conformance.TestAppend(t, conformance.SinkHarness{
				Open: func(t *testing.T) connectors.Sink {
					s, err := files.NewSink(files.SinkConfig{Path: dir, Format: format})
					if err != nil {
						t.Fatal(err)
					}
					return s
				},
				Batches: rawJSONLBatches,
				Want:    jsonlWant,
				ReadBack: func(t *testing.T) (conformance.Table, error) {
					return readDataset(t, dir, format, false)
				},
				ReadCommitted: func(t *testing.T, _ connectors.Sink) (connectors.Checksum, error) {
					return files.ReadChecksum(dir, format)
				},
			})
		})
	}
}
