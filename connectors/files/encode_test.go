package files

import (
	"bufio"
	"fmt"
	"io"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/arrowconv"
	"github.com/sluicehq/sluice/protocol"
)

// BenchmarkEncode encodes CSV batches shaped like bench/fullload's table
// (as the postgres source sends them: about 1 MB each, with their
// checksum) into one task's JSONL or Parquet output, typed by the table's
// schema or not.
func BenchmarkEncode(b *testing.B) {
	orders := &protocol.Schema{Columns: []protocol.Column{
		{Name: "id", Type: protocol.TypeInt64, NotNull: true},
		{Name: "customer", Type: protocol.TypeString, NotNull: true},
		{Name: "amount", Type: protocol.TypeDecimal, Precision: 12, Scale: 2, NotNull: true},
		{Name: "created_at", Type: protocol.TypeTimestampTZ, NotNull: true},
		{Name: "quantity", Type: protocol.TypeInt32},
		{Name: "paid", Type: protocol.TypeBool, NotNull: true},
		{Name: "status", Type: protocol.TypeString, NotNull: true},
	}}
	const rows = 100_000
	var batches []connectors.Batch
	var raw []byte
	var sum connectors.Checksum
	n := 0
	statuses := []string{"new", "paid", "shipped", "returned", "cancelled"}
	for i := 1; i <= rows; i++ {
		start := len(raw)
		cust := fmt.Sprintf("customer %012x", i*7919)
		if i%10 == 0 {
			cust = `"Smith, ` + cust + `"`
		}
		qty := fmt.Sprint(i * 7 % 1000)
		if i%50 == 0 {
			qty = ""
		}
		raw = fmt.Appendf(raw, "%d,%s,%d.%02d,2024-01-%02d %02d:%02d:%02d.%06d+00,%s,%c,%s", i, cust, i%100000, i%97,
			1+i%28, i%24, i%60, i%60, i%1000000, qty, "ft"[i%3/2], statuses[i%5])
		sum.Add(raw[start:])
		raw = append(raw, '\n')
		n++
		if len(raw) >= 1<<20 || i == rows {
			s := sum
			batches = append(batches, connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: orders.Names(), Rows: int64(n), Checksum: &s})
			raw, n, sum = nil, 0, connectors.Checksum{}
		}
	}
	mem := new(arrowconv.Allocator)
	for _, format := range []string{"jsonl", "parquet"} {
		for _, typed := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/typed=%t", format, typed), func(b *testing.B) {
				var sc *protocol.Schema
				if typed {
					sc = orders
				}
				ts, err := typedSchema(sc)
				if err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					var sum connectors.Checksum
					w := bufio.NewWriterSize(io.Discard, 64<<10)
					enc, err := newEncoder(format, w, &sum, ts, mem)
					if err != nil {
						b.Fatal(err)
					}
					for _, bt := range batches {
						if err := enc.write(bt); err != nil {
							b.Fatal(err)
						}
					}
					if err := enc.finish(); err != nil {
						b.Fatal(err)
					}
					enc.release()
				}
				b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
			})
		}
	}
}
