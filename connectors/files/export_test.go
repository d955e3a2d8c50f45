package files

import "testing"

// SmallBatches opens a source that emits small batches, so that a test
// partition has several.
func SmallBatches(t *testing.T, cfg SourceConfig) *Source {
	s, err := NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.batchBytes, s.batchRows = 512, 16
	return s
}

var WriteFile = writeFile
var CSVRows = csvRows
var TestRecord = testRecord
var WriteParquet = writeParquet
