package contract_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/contract"
)

// overheadContract hashes three and masks two of the seven columns of the
// benchmark table (bench/harness.Orders).
const overheadContract = `key: ${SLUICE_BENCH_CONTRACT_KEY}
columns:
  id: keep
  customer: {pii: name, action: hash}
  created_at: {action: hash}
  status: {action: hash}
  amount: {action: mask}
  quantity: {action: mask}
  paid: keep
`

// ordersCSV returns n rows shaped like bench/harness.Orders' (customer
// and created_at distinct in every row, status of 5 values), as a
// PostgreSQL source's CSV batch.
func ordersCSV(n int) []byte {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		customer := fmt.Sprintf("customer %012x", i*2654435761)
		if i%10 == 0 {
			customer = `"Smith, ` + customer + `"`
		}
		qty := fmt.Sprint(i * 7 % 1000)
		if i%50 == 0 {
			qty = ""
		}
		fmt.Fprintf(&b, "%d,%s,%d.%02d,%s,%s,%s,%s\n", i, customer, i%100000, i%97, ordersCreatedAt(i), qty,
			map[bool]string{true: "t", false: "f"}[i%3 == 0], []string{"new", "paid", "shipped", "returned", "cancelled"}[i%5])
	}
	return []byte(b.String())
}

// ordersCreatedAt is row i's created_at as PostgreSQL's text has it
// (bench/harness.Orders': 15.123457 s apart, distinct in every row).
func ordersCreatedAt(i int) string {
	t := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * 15123457 * time.Microsecond)
	return t.Format("2006-01-02 15:04:05.999999") + "+00"
}

type discard struct{ rows int64 }

func (d *discard) Write(_ context.Context, b connectors.Batch) error { d.rows += b.Rows; return nil }
func (d *discard) Close(context.Context) (connectors.TaskOutput, error) {
	return connectors.TaskOutput{Rows: d.rows}, nil
}
func (d *discard) Abort(context.Context) error { return nil }

// BenchmarkWriterCSV is the contract's own cost: 3 hashed and 2 masked
// columns of 7, on CSV batches of 10,000 rows (about 1 MiB, as a
// PostgreSQL source's), beside the same batches passed through.
func BenchmarkWriterCSV(b *testing.B) {
	const rows = 10_000
	raw := ordersCSV(rows)
	cols := []string{"id", "customer", "amount", "created_at", "quantity", "paid", "status"}
	for _, tc := range []struct {
		name string
		y    string
	}{{"passthrough", "columns: {id: keep}\n"}, {"3hash2mask", overheadContract}} {
		b.Run(tc.name, func(b *testing.B) {
			spec, problems := contract.Parse([]byte(tc.y))
			if len(problems) > 0 {
				b.Fatal(problems)
			}
			c, err := contract.Compile(spec, func(string) (string, bool) { return "benchmark contract key, 32 byte", true })
			if err != nil {
				b.Fatal(err)
			}
			w, err := c.Writer(&discard{})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				if err := w.Write(context.Background(), connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: cols, Rows: rows}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(rows)/float64(b.N), "cpu-ns/row")
		})
	}
}

// cpuTime is the CPU time this process used so far (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHash is the hash action's cost per value: HMAC-SHA256 of a
// value of 22 bytes, in lower-case hex (two SHA-256 compressions).
func BenchmarkHash(b *testing.B) {
	fn := contract.HashFunc([]byte("benchmark contract key, 32 byte"))
	v := []byte("customer 00009e3779b1")
	dst := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		dst, _ = fn(dst[:0], v)
	}
}

// BenchmarkActions is each action's cost per value, on values of the
// benchmark table's shapes: a column of distinct values (the memo of hash
// and tokenize gives up on it) and, for hash, one of 5 values repeated.
func BenchmarkActions(b *testing.B) {
	const n = 4096
	distinct := make([][]byte, n)
	stamps := make([][]byte, n)
	statuses := make([][]byte, n)
	for i := range n {
		distinct[i] = fmt.Appendf(nil, "customer %012x", i*2654435761)
		stamps[i] = []byte(ordersCreatedAt(i))
		statuses[i] = []byte([]string{"new", "paid", "shipped", "returned", "cancelled"}[i%5])
	}
	for _, tc := range []struct {
		name, action string
		values       [][]byte
	}{
		{"hash", "hash", distinct},
		{"hash-5-values", "hash", statuses},
		{"mask", "mask", distinct},
		{"mask-email", "{action: mask, shape: email}", [][]byte{[]byte("alice.smith@example.com")}},
		{"truncate-day", "{action: truncate, to: day}", stamps},
		{"tokenize", "tokenize", distinct},
	} {
		b.Run(tc.name, func(b *testing.B) {
			fn, err := contract.ActionFunc([]byte("key: ${K}\ncolumns:\n  v: "+tc.action+"\n"), []byte("benchmark contract key, 32 byte"))
			if err != nil {
				b.Fatal(err)
			}
			dst := make([]byte, 0, 256)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if dst, err = fn(dst[:0], tc.values[i%len(tc.values)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// ordersCopy returns the rows of ordersCSV in COPY's text format and in
// its binary format with the contract's columns as text (the id and paid
// in their binary forms), as a table passthrough's transform reads them.
func ordersCopy(n int) (text, bin []byte) {
	bin = append([]byte("PGCOPY\n\xff\r\n\x00"), 0, 0, 0, 0, 0, 0, 0, 0)
	for i := 1; i <= n; i++ {
		f := []string{fmt.Sprint(i), fmt.Sprintf("customer %012x", i*2654435761), fmt.Sprintf("%d.%02d", i%100000, i%97),
			ordersCreatedAt(i), fmt.Sprint(i * 7 % 1000),
			map[bool]string{true: "t", false: "f"}[i%3 == 0], []string{"new", "paid", "shipped", "returned", "cancelled"}[i%5]}
		text = append(text, strings.Join(f, "\t")+"\n"...)
		bin = binary.BigEndian.AppendUint16(bin, 7)
		for j, v := range f {
			b := []byte(v)
			switch j {
			case 0:
				b = binary.BigEndian.AppendUint64(nil, uint64(i))
			case 5:
				b = []byte{map[bool]byte{true: 1, false: 0}[i%3 == 0]}
			}
			bin = binary.BigEndian.AppendUint32(bin, uint32(len(b)))
			bin = append(bin, b...)
		}
	}
	return text, append(bin, 0xff, 0xff)
}

// BenchmarkCopy is the contract's cost on a table passthrough's units:
// COPY's text format (contract.CopyText) beside its binary format with
// the transformed columns as text (contract.CopyBinary).
func BenchmarkCopy(b *testing.B) {
	const rows = 10_000
	text, bin := ordersCopy(rows)
	cols := []string{"id", "customer", "amount", "created_at", "quantity", "paid", "status"}
	spec, problems := contract.Parse([]byte(overheadContract))
	if len(problems) > 0 {
		b.Fatal(problems)
	}
	c, err := contract.Compile(spec, func(string) (string, bool) { return "benchmark contract key, 32 byte", true })
	if err != nil {
		b.Fatal(err)
	}
	textCols, _ := spec.TextColumns()
	for _, format := range []string{"text", "binary"} {
		b.Run(format, func(b *testing.B) {
			// Compiled once, as a task does for its unit (a chunk of
			// 250,000 rows or so, of which each op is a part).
			ct, err := c.CopyText(cols)
			if err != nil {
				b.Fatal(err)
			}
			cb, err := c.CopyBinary(cols, textCols)
			if err != nil {
				b.Fatal(err)
			}
			cpu0 := cpuTime()
			for b.Loop() {
				var r io.Reader
				if format == "text" {
					r = ct.Reader(bytes.NewReader(text))
				} else {
					r = cb.Reader(bytes.NewReader(bin))
				}
				if _, err := io.Copy(io.Discard, r); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(rows)/float64(b.N), "cpu-ns/row")
		})
	}
}
