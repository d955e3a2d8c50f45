package files_test

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/conformance"
	"github.com/sluicehq/sluice/connectors/files"
)

func rawJSONLBatches() []connectors.Batch {
	var bs []connectors.Batch
	id := 0
	for n := range []int{0, 1, 2} {
		var buf bytes.Buffer
		for i := 0; i < 10+n*7; i++ {
			fmt.Fprintf(&buf, `{"id":%d,"v":%d.25,"s":"x%d","b":%t,"n":null}`+"\n", id, id, id, id%2 == 0)
			id++
		}
		bs = append(bs, connectors.Batch{Raw: buf.Bytes(), Format: connectors.FormatJSONL, Rows: int64(10 + n*7), Position: fmt.Sprintf("in.jsonl:%d", id)})
	}
	return bs
}

func rawCSVBatches() []connectors.Batch {
	var bs []connectors.Batch
	id := 0
	for n := range []int{0, 1, 2} {
		var buf bytes.Buffer
		w := csv.NewWriter(&buf)
		for i := 0; i < 5+n*3; i++ {
			w.Write([]string{fmt.Sprint(id), fmt.Sprintf("a, \"b\"\nc%d", id), ""})
			id++
		}
		w.Flush()
		bs = append(bs, connectors.Batch{Raw: buf.Bytes(), Format: connectors.FormatCSV, Columns: []string{"id", "text", "empty"}, Rows: int64(5 + n*3), Position: "in.csv"})
	}
	return bs
}

func arrowBatches() []connectors.Batch {
	sc := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "name", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "f", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
	}, nil)
	var bs []connectors.Batch
	for n := 0; n < 3; n++ {
		b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
		for i := 0; i < 4+n; i++ {
			b.Field(0).(*array.Int64Builder).Append(int64(n*100 + i))
			if i == 2 {
				b.Field(1).AppendNull()
			} else {
				b.Field(1).(*array.StringBuilder).Append(fmt.Sprintf("row \"%d\",\n%d", n, i))
			}
			b.Field(2).(*array.Float32Builder).Append(float32(i) / 3)
		}
		rec := b.NewRecordBatch()
		b.Release()
		bs = append(bs, connectors.Batch{Record: rec, Format: connectors.FormatArrow, Rows: rec.NumRows(), Position: fmt.Sprintf("in.parquet:%d", n)})
	}
	return bs
}

func TestSinkConformance(t *testing.T) {
	testSinkConformance(t, func(t *testing.T, name string) string { return filepath.Join(t.TempDir(), name) })
}

// testSinkConformance runs the sink conformance suite for every output
// format and input, each on the dataset root(t, name) gives.
func testSinkConformance(t *testing.T, root func(t *testing.T, name string) string) {
	inputs := map[string]func() []connectors.Batch{"jsonl": rawJSONLBatches, "csv": rawCSVBatches, "arrow": arrowBatches}
	wants := map[string]func() []conformance.Table{"jsonl": jsonlWant, "csv": csvWant, "arrow": arrowWant}
	for _, format := range []string{"jsonl", "csv", "parquet"} {
		for _, in := range []string{"jsonl", "csv", "arrow"} {
			t.Run(in+"_to_"+format, func(t *testing.T) {
				out := root(t, in+"-"+format)
				conformance.TestSink(t, conformance.SinkHarness{
					Open:          openSink(out, format),
					Batches:       inputs[in],
					Want:          keptIn(format, in, wants[in]),
					ReadBack:      func(t *testing.T) (conformance.Table, error) { return readDataset(t, out, format, true) },
					ReadCommitted: readCurrent(out, format),
				})
			})
		}
	}
}

func openSink(root, format string) func(t *testing.T) connectors.Sink {
	return func(t *testing.T) connectors.Sink {
		s, err := files.NewSink(files.SinkConfig{Path: root, Format: format})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

// readCurrent reads the checksum of the version the dataset at root
// exposes, as a reader finds it.
func readCurrent(root, format string) func(*testing.T, connectors.Sink) (connectors.Checksum, error) {
	return func(*testing.T, connectors.Sink) (connectors.Checksum, error) {
		cur, err := files.Current(root)
		if err != nil {
			return connectors.Checksum{}, err
		}
		return files.ReadChecksum(cur, format)
	}
}

// The files sink keeps versions for rollback: v<N> directories behind
// the current symlink.
func TestVersionedConformance(t *testing.T) {
	testVersionedConformance(t, func(t *testing.T, name string) string { return filepath.Join(t.TempDir(), name) })
}

func testVersionedConformance(t *testing.T, root func(t *testing.T, name string) string) {
	for _, format := range []string{"jsonl", "parquet"} {
		t.Run(format, func(t *testing.T) {
			out := root(t, format)
			conformance.TestVersioned(t, conformance.SinkHarness{
				Open:          openSink(out, format),
				Batches:       rawJSONLBatches,
				Want:          jsonlWant,
				ReadBack:      func(t *testing.T) (conformance.Table, error) { return readDataset(t, out, format, true) },
				ReadCommitted: readCurrent(out, format),
			})
		})
	}
}

func TestSourceConformance(t *testing.T) {
	testSourceConformance(t, func(t *testing.T, dir, _ string) string { return dir })
}

// testSourceConformance runs the source conformance suite on JSONL (a
// big file split into byte ranges), CSV, Parquet and an empty tree, each
// written to a local directory and read from the path place(t, dir, name)
// returns for it.
func testSourceConformance(t *testing.T, place func(t *testing.T, dir, name string) string) {
	t.Run("jsonl", func(t *testing.T) {
		dir := t.TempDir()
		var big bytes.Buffer
		for i := 0; i < 3000; i++ {
			fmt.Fprintf(&big, `{"i":%d,"pad":"%s"}`+"\n", i, bytes.Repeat([]byte{'x'}, i%50))
		}
		read := map[string]string{"big.jsonl": big.String(), "a.jsonl": "{\"a\":1}\n{\"a\":2}\n\n{\"a\":3}", "sub/b.ndjson": "{\"b\":1}\r\n  {\"b\":2}  \r\n\r\n"}
		for name, content := range read {
			files.WriteFile(t, dir, name, content)
		}
		files.WriteFile(t, dir, "_ignored.jsonl", "not json\n")
		files.WriteFile(t, dir, ".hidden/c.jsonl", "not json\n")
		files.WriteFile(t, dir, "notes.txt", "not json\n")
		src := place(t, dir, "jsonl")
		conformance.TestSource(t, conformance.SourceHarness{
			Open:     func(t *testing.T) connectors.Source { return files.SmallBatches(t, files.SourceConfig{Path: src}) },
			Request:  connectors.PlanRequest{RunID: "r", Partitioning: connectors.Partitioning{TargetBytes: 16 << 10}},
			WantRows: 3000 + 3 + 2,
			Want:     wantFiles(read, conformance.JSONLRows),
		})
	})
	t.Run("csv", func(t *testing.T) {
		dir := t.TempDir()
		read := map[string]string{"a.csv": files.CSVRows(0, 400), "b.csv": "\ufeff" + files.CSVRows(400, 10), "c.csv": "", "d/e.csv": "id,name,note\r\n1,x,y\r\n"}
		for name, content := range read {
			files.WriteFile(t, dir, name, content)
		}
		src := place(t, dir, "csv")
		conformance.TestSource(t, conformance.SourceHarness{
			Open: func(t *testing.T) connectors.Source {
				return files.SmallBatches(t, files.SourceConfig{Path: src, Format: "csv"})
			},
			Request:  connectors.PlanRequest{RunID: "r", Partitioning: connectors.Partitioning{MaxFiles: 2}},
			WantRows: 411, WantPartitions: 2,
			Want: wantFiles(read, func(data []byte) (conformance.Table, error) { return conformance.CSVRows(data, true) }),
		})
	})
	t.Run("parquet", func(t *testing.T) {
		dir := t.TempDir()
		files.WriteParquet(t, filepath.Join(dir, "a.parquet"), files.TestRecord(0, 100), files.TestRecord(100, 50), files.TestRecord(150, 7))
		files.WriteParquet(t, filepath.Join(dir, "x/b.parquet"), files.TestRecord(0, 3))
		src := place(t, dir, "parquet")
		conformance.TestSource(t, conformance.SourceHarness{
			Open: func(t *testing.T) connectors.Source {
				return files.SmallBatches(t, files.SourceConfig{Path: src, Glob: "*.parquet"})
			},
			Request:  connectors.PlanRequest{RunID: "r", Partitioning: connectors.Partitioning{TargetBytes: 1}},
			WantRows: 160, WantPartitions: 2,
			Want: func(*testing.T) conformance.Table {
				var ts []conformance.Table
				for _, r := range [][2]int{{0, 100}, {100, 50}, {150, 7}, {0, 3}} {
					rec := files.TestRecord(r[0], r[1])
					ts = append(ts, conformance.RecordRows(rec))
					rec.Release()
				}
				return conformance.Concat(ts...)
			},
		})
	})
	t.Run("empty", func(t *testing.T) {
		src := place(t, t.TempDir(), "empty")
		conformance.TestSource(t, conformance.SourceHarness{
			Open: func(t *testing.T) connectors.Source { return files.SmallBatches(t, files.SourceConfig{Path: src}) },
			Want: func(*testing.T) conformance.Table { return conformance.Table{} },
		})
	})
}

// wantFiles returns the rows of the files the test wrote (name to
// content), each decoded by decode.
func wantFiles(written map[string]string, decode func([]byte) (conformance.Table, error)) func(*testing.T) conformance.Table {
	return func(t *testing.T) conformance.Table {
		var ts []conformance.Table
		for name, content := range written {
			tb, err := decode([]byte(content))
			if err != nil {
				t.Fatalf("the test's own %s: %v", name, err)
			}
			ts = append(ts, tb)
		}
		return conformance.Concat(ts...)
	}
}

// The change log Applier passes the applier conformance suite: its dump is
// every line of every part file by hour directory, in stream order.
func TestApplierConformance(t *testing.T) {
	root := t.TempDir()
	dir := func(target string) string { return filepath.Join(root, target) }
	conformance.TestApplier(t, conformance.ApplierHarness{
		Open: func(t *testing.T, target string) connectors.Applier {
			a, err := files.NewApplier(files.ApplierConfig{Path: dir(target)})
			if err != nil {
				t.Fatal(err)
			}
			return a
		},
		Dump: func(t *testing.T, target string) []string {
			var out []string
			err := filepath.WalkDir(dir(target), func(path string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() || !strings.HasPrefix(d.Name(), "part-") {
					return err
				}
				b, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				rel, _ := filepath.Rel(dir(target), filepath.Dir(path))
				out = appendLines(out, rel, b)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			return out
		},
		Events: conformance.ChangeEvents(),
	})
}

// appendLines appends each line of a change log's part file, prefixed
// with its hour directory rel, to out.
func appendLines(out []string, rel string, data []byte) []string {
	for line := range strings.Lines(string(data)) {
		out = append(out, rel+" "+line)
	}
	return out
}
