package postgres

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors"
)

func records(data []byte) []string {
	var out []string
	forEachRecord(data, func(rec []byte) error { out = append(out, string(rec)); return nil })
	return out
}

func TestForEachRecord(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"plain", "a,b\nc,d\n", []string{"a,b", "c,d"}},
		{"no final newline", "a,b\nc,d", []string{"a,b", "c,d"}},
		{"quoted newline", "1,\"x\ny\"\n2,z\n", []string{"1,\"x\ny\"", "2,z"}},
		{"quoted crlf", "1,\"x\r\ny\"\r\n2,z\r\n", []string{"1,\"x\r\ny\"", "2,z"}},
		{"doubled quotes", "1,\"a \"\"b\"\"\nc\"\n2,\"\"\n", []string{"1,\"a \"\"b\"\"\nc\"", "2,\"\""}},
		{"crlf", "a\r\nb\r\n", []string{"a", "b"}},
		{"empty fields", ",\n,,\n", []string{",", ",,"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := records([]byte(tt.in))
			if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// splitInPieces feeds data to a recordSplitter in pieces of the given
// sizes (cycled), taking whole records whenever more than take bytes of
// them are buffered, and returns the batches taken.
//
// Each batch is taken with TakeSummed, and its checksum must be what
// connectors.Checksum.Add of each record forEachRecord yields gives (the
// sum a sink computes), else it panics.
func splitInPieces(data []byte, sizes []int, take int) ([][]byte, []int64, bool) {
	s := newRecordSplitter(16)
	var batches [][]byte
	var counts []int64
	takeOne := func() {
		b, sum := s.TakeSummed()
		var want connectors.Checksum
		forEachRecord(b, func(rec []byte) error { want.Add(rec); return nil })
		if sum != want {
			panic(fmt.Sprintf("TakeSummed of %q: %d rows %s, records summed one by one: %d rows %s", b, sum.Rows, sum, want.Rows, want))
		}
		batches = append(batches, b)
		counts = append(counts, sum.Rows)
	}
	for i := 0; len(data) > 0; i++ {
		n := min(max(1, sizes[i%len(sizes)]), len(data))
		s.Write(data[:n])
		data = data[n:]
		if s.WholeLen() > take {
			takeOne()
		}
	}
	partial := s.Partial()
	if s.WholeLen() > 0 {
		takeOne()
	}
	return batches, counts, partial
}

func TestSumRecords(t *testing.T) {
	// Records of every length from 0 to 40, in every order of four, with
	// and without "\r" before the "\n".
	var data []byte
	var ends []int
	var want connectors.Checksum
	for i := range 400 {
		rec := bytes.Repeat([]byte{byte('a' + i%26)}, (i*7)%41)
		want.Add(rec)
		data = append(data, rec...)
		if i%3 == 0 {
			data = append(data, '\r')
		}
		ends = append(ends, len(data))
		data = append(data, '\n')
		if got := sumRecords(data, ends); got != want.Sum {
			t.Fatalf("after %d records: sum %016x, want %016x", i+1, got, want.Sum)
		}
	}
}

func BenchmarkSumRecords(b *testing.B) {
	var data []byte
	var ends []int
	for i := range 12000 {
		data = fmt.Appendf(data, "%d,customer %x,%d.%02d,2024-01-01 00:00:%02d.123457+00,%d,t,shipped", i, i*7919, i%100000, i%97, i%60, i%1000)
		ends = append(ends, len(data))
		data = append(data, '\n')
	}
	b.Run("split-pass", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			sumRecords(data, ends)
		}
	})
	b.Run("add", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			var c connectors.Checksum
			forEachRecord(data, func(rec []byte) error { c.Add(rec); return nil })
		}
	})
}

func TestRecordSplitter(t *testing.T) {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	want := [][]string{
		{"1", "plain", ""},
		{"2", "with,comma", "with \"quotes\""},
		{"3", "multi\nline\nvalue", "crlf\r\ninside"},
		{"4", "\"", "\n"},
		{"5", "日本語", "héllo"},
	}
	for range 50 {
		w.WriteAll(want)
	}
	data := buf.Bytes()
	for _, sizes := range [][]int{{1}, {2, 3}, {7}, {64}, {1 << 20}} {
		for _, take := range []int{0, 10, 100} {
			batches, counts, partial := splitInPieces(data, sizes, take)
			if partial {
				t.Fatalf("sizes %v take %d: partial record left", sizes, take)
			}
			var joined []byte
			var total int64
			for i, b := range batches {
				// Every batch holds whole records only.
				recs, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
				if err != nil {
					t.Fatalf("sizes %v take %d: batch %d does not parse: %v", sizes, take, i, err)
				}
				if int64(len(recs)) != counts[i] {
					t.Fatalf("sizes %v take %d: batch %d holds %d records, counted %d", sizes, take, i, len(recs), counts[i])
				}
				joined = append(joined, b...)
				total += counts[i]
			}
			if !bytes.Equal(joined, data) || total != int64(len(want)*50) {
				t.Fatalf("sizes %v take %d: got %d rows, %d bytes; want %d rows, %d bytes", sizes, take, total, len(joined), len(want)*50, len(data))
			}
		}
	}
}

func TestRecordSplitterPartial(t *testing.T) {
	s := newRecordSplitter(0)
	s.Write([]byte("1,\"open\n"))
	if s.WholeLen() != 0 || !s.Partial() {
		t.Fatalf("whole %d partial %v, want 0 and true", s.WholeLen(), s.Partial())
	}
	s.Write([]byte("still\"\n2,x\n3"))
	b, n := s.Take()
	if string(b) != "1,\"open\nstill\"\n2,x\n" || n != 2 {
		t.Fatalf("took %q (%d rows)", b, n)
	}
	if !s.Partial() || s.Len() != 1 {
		t.Fatalf("left %d bytes, partial %v; want the 1 byte of record 3", s.Len(), s.Partial())
	}
}

func FuzzRecordSplitter(f *testing.F) {
	f.Add([]byte("a,b\n\"c\nd\",e\n"), uint8(3))
	f.Add([]byte("\"\"\"\"\r\n,\n"), uint8(1))
	f.Add([]byte("x"), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, piece uint8) {
		// Any byte stream: the pieces taken rejoin to the input and agree
		// with forEachRecord on the records of the whole input.
		batches, counts, partial := splitInPieces(data, []int{int(piece)}, int(piece)/2)
		var joined []byte
		var total int64
		for i, b := range batches {
			if len(b) == 0 || b[len(b)-1] != '\n' {
				t.Fatalf("batch %d does not end a record: %q", i, b)
			}
			if got := int64(len(records(b))); got != counts[i] {
				t.Fatalf("batch %d: forEachRecord sees %d records, splitter %d", i, got, counts[i])
			}
			joined = append(joined, b...)
			total += counts[i]
		}
		rest := data[len(joined):]
		if !bytes.Equal(joined, data[:len(joined)]) {
			t.Fatalf("batches do not rejoin to the input")
		}
		if partial != (len(rest) > 0) {
			t.Fatalf("partial %v with %d bytes left", partial, len(rest))
		}
		all := int64(len(records(data)))
		if len(rest) > 0 {
			all-- // forEachRecord counts the unfinished last record
		}
		if total != all {
			t.Fatalf("splitter found %d records, forEachRecord %d", total, all)
		}
		// Well-formed CSV: records parse back to what was written.
		fields := []string{"x"} // a record of one empty field would be a blank line
		for _, f := range bytes.Split(data, []byte{','}) {
			fields = append(fields, string(f))
		}
		var buf bytes.Buffer
		w := csv.NewWriter(&buf)
		w.Write(fields)
		w.Write([]string{"end"})
		w.Flush()
		batches, _, partial = splitInPieces(buf.Bytes(), []int{int(piece)}, 0)
		if partial {
			t.Fatalf("partial record at the end of well-formed CSV")
		}
		r := csv.NewReader(io.MultiReader(bytesReaders(batches)...))
		r.FieldsPerRecord = -1
		recs, err := r.ReadAll()
		if err != nil || len(recs) != 2 || recs[1][0] != "end" {
			t.Fatalf("well-formed CSV re-read as %q, %v", recs, err)
		}
	})
}

func bytesReaders(bs [][]byte) []io.Reader {
	rs := make([]io.Reader, len(bs))
	for i, b := range bs {
		rs[i] = bytes.NewReader(b)
	}
	return rs
}
