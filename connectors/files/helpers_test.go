package files

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// writeFile writes a test file under dir, creating directories.
func writeFile(t testing.TB, dir, rel, content string) string {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// jsonlRows returns n canonical JSONL lines of mixed types, nulls included.
func jsonlRows(from, n int) string {
	var b strings.Builder
	for i := from; i < from+n; i++ {
		var f, s, ok, ts string
		f = fmt.Sprintf("%d.5", i)
		s = fmt.Sprintf("%q", fmt.Sprintf("name \"%d\" <é>\t", i))
		ok = fmt.Sprint(i%2 == 0)
		ts = fmt.Sprintf("\"2024-01-02T03:04:%02d.123456Z\"", i%60)
		switch i % 5 {
		case 1:
			f = "null"
		case 2:
			s = "null"
		case 3:
			ok = "null"
		case 4:
			ts = "null"
		}
		fmt.Fprintf(&b, `{"id":%d,"score":%s,"name":%s,"ok":%s,"at":%s,"tags":["a",%d],"neg":-%d}`+"\n", i, f, s, ok, ts, i, i*1000+1)
	}
	return b.String()
}

// csvRows returns a CSV file: a header and n records, some with quoted
// commas and newlines.
func csvRows(from, n int) string {
	var b strings.Builder
	b.WriteString("id,name,note\n")
	for i := from; i < from+n; i++ {
		note := "plain"
		switch i % 3 {
		case 1:
			note = "\"with, comma\""
		case 2:
			note = "\"two\nlines \"\"quoted\"\"\""
		}
		fmt.Fprintf(&b, "%d,name%d,%s\n", i, i, note)
	}
	return b.String()
}

// testRecord builds an Arrow record of n rows with several column types.
func testRecord(from, n int) arrow.RecordBatch {
	sc := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "score", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		{Name: "name", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "ok", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
		{Name: "at", Type: timestampType, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer b.Release()
	for i := from; i < from+n; i++ {
		b.Field(0).(*array.Int64Builder).Append(int64(i))
		if i%4 == 1 {
			b.Field(1).AppendNull()
		} else {
			b.Field(1).(*array.Float64Builder).Append(float64(i) / 4)
		}
		b.Field(2).(*array.StringBuilder).Append(fmt.Sprintf("n,%d\n\"x\"", i))
		b.Field(3).(*array.BooleanBuilder).Append(i%2 == 0)
		b.Field(4).(*array.TimestampBuilder).Append(arrow.Timestamp(int64(i) * 1_000_123))
	}
	return b.NewRecordBatch()
}

// writeParquet writes records to a Parquet file, one row group each.
func writeParquet(t testing.TB, path string, recs ...arrow.RecordBatch) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fw, err := pqarrow.NewFileWriter(recs[0].Schema(), f, parquet.NewWriterProperties(parquet.WithCompression(compress.Codecs.Zstd)),
		pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := fw.Write(r); err != nil {
			t.Fatal(err)
		}
		r.Release()
	}
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
}

// readAll plans with req and reads every partition, returning the batches'
// raw bytes concatenated per partition, and the error of the first failing
// read.
func readAll(t testing.TB, src *Source, req connectors.PlanRequest) ([]protocol.Partition, [][]byte, error) {
	t.Helper()
	plan, err := src.Plan(context.Background(), req)
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	var outs [][]byte
	for _, p := range plan.Partitions {
		var out []byte
		err := src.Read(context.Background(), p, func(_ context.Context, b connectors.Batch) error {
			out = append(out, b.Raw...)
			return nil
		})
		if err != nil {
			return plan.Partitions, outs, err
		}
		outs = append(outs, out)
	}
	return plan.Partitions, outs, nil
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// readParquetTable reads a whole Parquet file, independently of the sink (the
// caller releases the table).
func readParquetTable(t testing.TB, path string) arrow.Table {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pf, err := file.NewParquetReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.NewGoAllocator())
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}
