package protocol

import (
	"bytes"
	"testing"
)

// TestJSONPlainEnd: every byte value at every place of a word and of the
// tail, after ASCII or non-ASCII text, against a byte-by-byte scan.
func TestJSONPlainEnd(t *testing.T) {
	naive := func(s []byte, i int) (int, bool) {
		ascii := true
		for ; i < len(s); i++ {
			c := s[i]
			if c < 0x20 || c == '"' || c == '\\' {
				break
			}
			if c >= 0x80 {
				ascii = false
			}
		}
		return i, ascii
	}
	for _, fill := range []byte{'a', 0x7f, 0xc3} {
		for n := 0; n <= 19; n++ {
			for at := 0; at < n; at++ {
				for c := 0; c < 256; c++ {
					s := bytes.Repeat([]byte{fill}, n)
					s[at] = byte(c)
					for from := 0; from <= min(n, 3); from++ {
						end, ascii := jsonPlainEnd(s, from)
						wantEnd, wantASCII := naive(s, from)
						if end != wantEnd || ascii != wantASCII {
							t.Fatalf("jsonPlainEnd(%q, %d) = %d, %v; want %d, %v", s, from, end, ascii, wantEnd, wantASCII)
						}
					}
				}
			}
		}
	}
}
