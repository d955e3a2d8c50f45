package postgres

import (
	"bytes"

	"github.com/sluicehq/sluice/connectors"
)

// recordSplitter finds the ends of CSV records (RFC 4180, as PostgreSQL's
// COPY writes them) in a stream of bytes without decoding them: a record
// ends at a '\n' outside double quotes. Quoted fields may hold newlines,
// carriage returns and doubled quotes; a '"' always toggles the quoted
// state, which is exact for well-formed CSV because a doubled quote toggles
// twice.
type recordSplitter struct {
	buf []byte
	// scanned is how much of buf has been scanned.
	scanned int
	quoted  bool
	// nl is the index in buf of the next '\n' at or after scanned, or -1
	// when unknown, or len(buf) when there is none in buf.
	nl int
	// end is the end of the last whole record in buf (just after its
	// '\n'); rows counts the whole records in buf[:end].
	end  int
	rows int64
	// ends holds the index of the '\n' that ends each whole record of
	// buf[:end], for the checksum Take computes.
	ends []int
}

func newRecordSplitter(capacity int) *recordSplitter {
	return &recordSplitter{buf: make([]byte, 0, capacity), nl: -1}
}

// Write appends p to the buffer and scans it. It never fails.
func (s *recordSplitter) Write(p []byte) (int, error) {
	s.add(p)
	s.scan()
	return len(p), nil
}

// add appends p to the buffer without scanning it: a caller that adds
// many small pieces scans once after them.
func (s *recordSplitter) add(p []byte) {
	if s.nl == len(s.buf) {
		s.nl = -1 // new bytes may hold a newline
	}
	s.buf = append(s.buf, p...)
}

func (s *recordSplitter) scan() {
	b := s.buf
	i := s.scanned
	for i < len(b) {
		if s.quoted {
			j := bytes.IndexByte(b[i:], '"')
			if j < 0 {
				i = len(b)
				break
			}
			i += j + 1
			s.quoted = false
			continue
		}
		if s.nl < i {
			if j := bytes.IndexByte(b[i:], '\n'); j >= 0 {
				s.nl = i + j
			} else {
				s.nl = len(b)
			}
		}
		if q := bytes.IndexByte(b[i:s.nl], '"'); q >= 0 {
			i += q + 1
			s.quoted = true
			continue
		}
		if s.nl == len(b) {
			i = len(b)
			break
		}
		s.ends = append(s.ends, s.nl)
		i = s.nl + 1
		s.end = i
		s.rows++
	}
	s.scanned = i
}

// Take returns the whole records buffered so far, in a slice of their own
// (the splitter keeps no reference to it), with their count, and keeps the
// rest of the buffer.
func (s *recordSplitter) Take() ([]byte, int64) {
	out, sum := s.TakeSummed()
	return out, sum.Rows
}

// TakeSummed is Take that also returns the checksum of the records taken:
// connectors.Checksum.Add of each record without its line ending ("\n" or
// "\r\n"), as forEachRecord yields them, so it equals what a sink summing
// the returned bytes record by record would get.
func (s *recordSplitter) TakeSummed() ([]byte, connectors.Checksum) {
	// The records keep the buffer they are in; the rest of the buffer (the
	// start of the next record, usually short) moves to a new one.
	out := s.buf[:s.end:s.end]
	sum := connectors.Checksum{Sum: sumRecords(out, s.ends), Rows: s.rows}
	rest := make([]byte, len(s.buf)-s.end, max(cap(s.buf), 64))
	copy(rest, s.buf[s.end:])
	s.buf = rest
	s.discarded()
	return out, sum
}

// Sum returns the checksum of the whole records buffered so far and drops
// them, as TakeSummed without returning them.
func (s *recordSplitter) Sum() connectors.Checksum {
	sum := connectors.Checksum{Sum: sumRecords(s.buf[:s.end], s.ends), Rows: s.rows}
	n := copy(s.buf, s.buf[s.end:])
	s.buf = s.buf[:n]
	s.discarded()
	return sum
}

// discarded updates the positions once buf[:end] is gone.
func (s *recordSplitter) discarded() {
	s.scanned -= s.end
	if s.nl >= 0 {
		s.nl -= s.end
	}
	s.end, s.rows = 0, 0
	s.ends = s.ends[:0]
}

// sumRecords returns the sum, modulo 2^64, of connectors.RowHash of the
// records of data, record i ending just before the '\n' at ends[i] (and
// before a '\r' that precedes it), the first starting at 0 and each next
// one just after the previous '\n'. It is what connectors.Checksum.Add of
// each record would sum.
func sumRecords(data []byte, ends []int) uint64 {
	var sum uint64
	start := 0
	for _, end := range ends {
		r := data[start:end]
		start = end + 1
		if len(r) > 0 && r[len(r)-1] == '\r' {
			r = r[:len(r)-1]
		}
		sum += connectors.RowHash(r)
	}
	return sum
}

// Len is the number of bytes buffered.
func (s *recordSplitter) Len() int { return len(s.buf) }

// WholeLen is the number of bytes of whole records buffered.
func (s *recordSplitter) WholeLen() int { return s.end }

// Partial reports whether bytes of an unfinished record are buffered.
func (s *recordSplitter) Partial() bool { return len(s.buf) > s.end }

// forEachRecord calls fn with each CSV record of data, without its line
// ending ("\n" or "\r\n"). A last record without a line ending counts as a
// record.
func forEachRecord(data []byte, fn func(rec []byte) error) error {
	start := 0
	quoted := false
	i := 0
	for i < len(data) {
		if quoted {
			j := bytes.IndexByte(data[i:], '"')
			if j < 0 {
				break
			}
			i += j + 1
			quoted = false
			continue
		}
		j := bytes.IndexAny(data[i:], "\"\n")
		if j < 0 {
			break
		}
		i += j
		if data[i] == '"' {
			quoted = true
			i++
			continue
		}
		if err := fn(bytes.TrimSuffix(data[start:i], []byte{'\r'})); err != nil {
			return err
		}
		i++
		start = i
	}
	if start < len(data) {
		return fn(bytes.TrimSuffix(data[start:], []byte{'\r'}))
	}
	return nil
}
