package postgres

import (
	"bytes"
	"strings"
	"testing"
)

// TestCopyText: a value in COPY's text format escapes backslash, newline,
// carriage return and tab, and nothing else, wherever they are.
func TestCopyText(t *testing.T) {
	escape := strings.NewReplacer(`\`, `\\`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	for _, s := range []string{"", "plain", `\`, "\n", "a\tb", "\r\n", `end\`, "\x00\x01\x0b\x0c\x0e]^_|~\x7f", "ü 日本 \\x\\", strings.Repeat("ab\tc\\", 50)} {
		var b bytes.Buffer
		b.WriteString("prefix|")
		copyText(&b, s)
		if got, want := b.String(), "prefix|"+escape.Replace(s); got != want {
			t.Errorf("copyText(%q) = %q, want %q", s, got, want)
		}
	}
}

// TestCopyTextEveryByte: every byte value at every place of a word and of
// the tail (copyText skips eight bytes at a time).
func TestCopyTextEveryByte(t *testing.T) {
	escape := strings.NewReplacer(`\`, `\\`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	for _, fill := range []byte{'a', 0x0e, 0xff} {
		for n := 1; n <= 19; n++ {
			for at := range n {
				for c := range 256 {
					s := []byte(strings.Repeat(string(fill), n))
					s[at] = byte(c)
					var b bytes.Buffer
					copyText(&b, string(s))
					if got, want := b.String(), escape.Replace(string(s)); got != want {
						t.Fatalf("copyText(%q) = %q, want %q", s, got, want)
					}
				}
			}
		}
	}
}
