package files

import (
	"bufio"
	"context"
	"errors"
	"io"
)

// lineScanner reads lines, tracking the file offset of each.
type lineScanner struct {
	r    *bufio.Reader
	off  int64 // offset of the next unread byte
	long []byte
}

func newLineScanner(r io.Reader, off int64, sizeHint int64) *lineScanner {
	return &lineScanner{r: bufio.NewReaderSize(r, int(min(256<<10, max(4<<10, sizeHint)))), off: off}
}

// next returns the next line with its '\n' (the last line of a file may
// lack it) and the offset where it starts; io.EOF when no line is left. The
// line is valid until the next call.
func (s *lineScanner) next() ([]byte, int64, error) {
	start := s.off
	s.long = s.long[:0]
	for {
		frag, err := s.r.ReadSlice('\n')
		s.off += int64(len(frag))
		if errors.Is(err, bufio.ErrBufferFull) {
			s.long = append(s.long, frag...)
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, start, err
		}
		line := frag
		if len(s.long) > 0 {
			s.long = append(s.long, frag...)
			line = s.long
		}
		if len(line) == 0 {
			return nil, start, io.EOF
		}
		return line, start, nil
	}
}

// scanRange calls fn for every line that starts inside [start, end) of a
// file of the given size, with the line (its '\n' included when present)
// and its offset. A range that starts at start > 0 begins after the first
// '\n' at or after start-1, so that consecutive ranges own each line once.
func scanRange(ctx context.Context, r io.ReaderAt, size, start, end int64, fn func(line []byte, off int64) error) error {
	if end > size {
		end = size
	}
	if start >= end {
		return nil
	}
	pos := start
	if start > 0 {
		pos = start - 1
	}
	s := newLineScanner(io.NewSectionReader(r, pos, size-pos), pos, end-pos)
	if start > 0 {
		// Skip the tail of the line that started before the range.
		if _, _, err := s.next(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
	for n := 0; ; n++ {
		if n&1023 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if s.off >= end {
			return nil
		}
		line, off, err := s.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(line, off); err != nil {
			return err
		}
	}
}
