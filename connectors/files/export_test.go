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

// SetBeforeOffset makes Apply call fn between writing the part files and the
// offset; an error from fn stops Apply there, as a crash would.
func SetBeforeOffset(f *Applier, fn func() error) { f.beforeOffset = fn }
