package postgres

import "bytes"

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
}

func newRecordSplitter(capacity int) *recordSplitter {
	return &recordSplitter{buf: make([]byte, 0, capacity), nl: -1}
}

// Write appends p to the buffer and scans it. It never fails.
func (s *recordSplitter) Write(p []byte) (int, error) {
	if s.nl == len(s.buf) {
		s.nl = -1 // new bytes may hold a newline
	}
	s.buf = append(s.buf, p...)
	s.scan()
	return len(p), nil
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
		i = s.nl + 1
		s.end = i
		s.rows++
	}
	s.scanned = i
}

// Take returns the whole records buffered so far, in a new slice of their
// own, with their count, and keeps the rest of the buffer.
func (s *recordSplitter) Take() ([]byte, int64) {
	out := make([]byte, s.end)
	copy(out, s.buf[:s.end])
	rows := s.rows
	n := copy(s.buf, s.buf[s.end:])
	s.buf = s.buf[:n]
	s.scanned -= s.end
	if s.nl >= 0 {
		s.nl -= s.end
	}
	s.end, s.rows = 0, 0
	return out, rows
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
