package contract

import (
	"math/rand/v2"
	"testing"
)

// TestCSVFieldEnd: the word-at-a-time scan finds the first delimiter,
// quote or line ending as a byte-by-byte one does, wherever it lies
// (bytes above 0x80 and near-misses such as '-' and '\f' included).
func TestCSVFieldEnd(t *testing.T) {
	alphabet := []byte{',', '"', '\n', '\r', 'a', '-', '+', '\f', '\x0c', '\x00', 0x80, 0xac, 0xff, '0', '\\', '\t'}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		raw := make([]byte, r.IntN(40))
		for i := range raw {
			if r.IntN(4) == 0 {
				raw[i] = alphabet[r.IntN(len(alphabet))]
			} else {
				raw[i] = alphabet[4+r.IntN(len(alphabet)-4)]
			}
		}
		p := 0
		if len(raw) > 0 {
			p = r.IntN(len(raw) + 1)
		}
		want := p
		for want < len(raw) && raw[want] != ',' && raw[want] != '"' && raw[want] != '\n' && raw[want] != '\r' {
			want++
		}
		if got := csvFieldEnd(raw, p); got != want {
			t.Fatalf("csvFieldEnd(%q, %d) = %d, want %d", raw, p, got, want)
		}
	}
}
