package arrowconv

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/sluicehq/sluice/protocol"
)

func TestAllocator(t *testing.T) {
	var a Allocator
	for _, size := range []int{0, 1, 100, 4095, 4096, 4097, 1 << 20, 3<<20 + 5} {
		b := a.Allocate(size)
		if len(b) != size || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%64 != 0 && size > 0 {
			t.Fatalf("Allocate(%d): len %d, aligned %t", size, len(b), aligned(b))
		}
		for i := range b {
			b[i] = 0xff
		}
		a.Free(b)
		// The same class again: the recycled buffer comes back zeroed.
		c := a.Allocate(size)
		if i := slices.IndexFunc(c, func(v byte) bool { return v != 0 }); i >= 0 {
			t.Fatalf("Allocate(%d) after Free: byte %d is %#x, want zeroed memory", size, i, c[i])
		}
		a.Free(c)
	}
	b := a.Allocate(5000)
	for i := range b {
		b[i] = byte(i)
	}
	b = a.Reallocate(7000, b) // within the class: grown in place
	if b[4999] != byte(4999%256) || b[5000] != 0 || len(b) != 7000 {
		t.Errorf("Reallocate within the capacity: len %d, b[4999] %d, b[5000] %d", len(b), b[4999], b[5000])
	}
	b[6999] = 1
	b = a.Reallocate(1<<16, b) // to a larger class: copied
	if b[4999] != byte(4999%256) || b[6999] != 1 || b[7000] != 0 || len(b) != 1<<16 {
		t.Errorf("Reallocate to a larger class: len %d, b[4999] %d, b[6999] %d, b[7000] %d", len(b), b[4999], b[6999], b[7000])
	}
}

// ordersCSV returns n rows of an orders table in PostgreSQL's CSV form:
// a key, a name, an amount, a time, a count that repeats, a flag and a
// status of five values.
func ordersCSV(first, n int) []byte {
	var raw []byte
	statuses := []string{"new", "paid", "shipped", "returned", "cancelled"}
	for i := first; i < first+n; i++ {
		qty := fmt.Sprint(i * 7 % 100)
		if i%50 == 0 {
			qty = ""
		}
		raw = fmt.Appendf(raw, "%d,\"customer, %012x\",%d.%02d,2024-01-%02d %02d:%02d:%02d.%06d+00,%s,%c,%s\n",
			i, i*7919, i%100000, i%97, 1+i%28, i%24, i%60, i%60, i%1000000, qty, "ft"[i%3/2], statuses[i%5])
	}
	return raw
}

var orders = &protocol.Schema{Columns: []protocol.Column{
	{Name: "id", Type: protocol.TypeInt64, NotNull: true},
	{Name: "customer", Type: protocol.TypeString, NotNull: true},
	{Name: "amount", Type: protocol.TypeDecimal, Precision: 12, Scale: 2, NotNull: true},
	{Name: "created_at", Type: protocol.TypeTimestampTZ, NotNull: true},
	{Name: "quantity", Type: protocol.TypeInt32},
	{Name: "paid", Type: protocol.TypeBool, NotNull: true},
	{Name: "status", Type: protocol.TypeString, NotNull: true},
}}

// A Parquet file written with WriterProperties and buffers recycled by
// an Allocator, record after record, holds exactly the rows converted
// (read back with pqarrow, compared with records built with Go's
// allocator), encoded as chosen: a dictionary for the columns whose
// values repeat, delta encoding for the other integer columns, plain
// encoding for the other strings; every column with statistics.
func TestWriterProperties(t *testing.T) {
	as, err := Schema(orders)
	if err != nil {
		t.Fatal(err)
	}
	var mem Allocator
	conv, err := NewBuilder(&mem, as)
	if err != nil {
		t.Fatal(err)
	}
	defer conv.Release()
	want, err := NewBuilder(memory.NewGoAllocator(), as)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Release()

	var out bytes.Buffer
	arrp := pqarrow.NewArrowWriterProperties(pqarrow.WithAllocator(&mem))
	var fw *pqarrow.FileWriter
	var wants []arrow.RecordBatch
	const records, rows = 6, 20_000
	for r := range records {
		raw := ordersCSV(1+r*rows, rows)
		if _, err := conv.AppendCSV(raw, orders.Names(), "test", 1, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := want.AppendCSV(raw, orders.Names(), "test", 1, nil); err != nil {
			t.Fatal(err)
		}
		wants = append(wants, want.NewRecord())
		rec := conv.NewRecord()
		if fw == nil {
			props, err := WriterProperties(as, rec, arrp, ParquetConfig{Codec: compress.Codecs.Zstd, Level: 1, Mem: &mem})
			if err != nil {
				t.Fatal(err)
			}
			if fw, err = pqarrow.NewFileWriter(as, &out, props, arrp); err != nil {
				t.Fatal(err)
			}
		}
		if err := fw.WriteBuffered(rec); err != nil {
			t.Fatal(err)
		}
		rec.Release()
	}
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, r := range wants {
			r.Release()
		}
	}()

	pf, err := file.NewParquetReader(bytes.NewReader(out.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	md := pf.MetaData()
	dict := map[string]bool{"quantity": true, "status": true}
	delta := map[string]bool{"id": true, "amount": true, "created_at": true}
	for rg := range md.NumRowGroups() {
		for c := range md.RowGroup(rg).NumColumns() {
			cc, err := md.RowGroup(rg).ColumnChunk(c)
			if err != nil {
				t.Fatal(err)
			}
			name := cc.PathInSchema().String()
			encs := cc.Encodings()
			hasDict := slices.Contains(encs, parquet.Encodings.RLEDict) || slices.Contains(encs, parquet.Encodings.PlainDict)
			if hasDict != dict[name] {
				t.Errorf("column %s: encodings %v, want a dictionary: %t", name, encs, dict[name])
			}
			if got := slices.Contains(encs, parquet.Encodings.DeltaBinaryPacked); got != delta[name] {
				t.Errorf("column %s: encodings %v, want delta encoding: %t", name, encs, delta[name])
			}
			if ok, err := cc.StatsSet(); !ok || err != nil {
				t.Errorf("column %s has no statistics (%v)", name, err)
			}
		}
	}

	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: rows}, memory.NewGoAllocator())
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Release()
	if tbl.NumRows() != records*rows {
		t.Fatalf("read %d rows, wrote %d", tbl.NumRows(), records*rows)
	}
	wantTbl := array.NewTableFromRecords(as, wants)
	defer wantTbl.Release()
	for i := range as.NumFields() {
		got, exp := tbl.Column(i).Data(), wantTbl.Column(i).Data()
		if !array.ChunkedEqual(got, exp) {
			t.Errorf("column %s read back differs from the rows converted", as.Field(i).Name)
		}
	}
}
