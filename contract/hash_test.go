package contract

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// TestHasherFastPath: the hasher takes its fast path (padding the
// messages itself and reading the digest from the marshaled state) on
// this Go, and gives crypto/hmac's HMAC-SHA256 for values of every length
// around SHA-256's block boundaries, the same with a new hasher, with one
// reused for every value, and with the fallback through Sum.
func TestHasherFastPath(t *testing.T) {
	key := []byte("a contract key of some length")
	k := newHMACKey(key)
	reused := newHasher(k)
	if !reused.fast {
		t.Fatal("the hasher fell back to Sum: crypto/sha256's marshaled state is not what it expects")
	}
	// The fallback, for a Go whose state it could not read.
	slow := newHasher(&hmacKey{innerS: k.innerS, outerS: k.outerS})
	v := make([]byte, 300)
	for i := range v {
		v[i] = byte(i*131 + 7)
	}
	for n := 0; n <= len(v); n++ {
		m := hmac.New(sha256.New, key)
		m.Write(v[:n])
		want := hex.EncodeToString(m.Sum(nil))
		got, err := reused.apply(nil, v[:n])
		if err != nil || string(got) != want {
			t.Fatalf("%d bytes, reused hasher: %s, %v; want %s", n, got, err, want)
		}
		if got, err := slow.apply(nil, v[:n]); err != nil || string(got) != want {
			t.Fatalf("%d bytes, fallback: %s, %v; want %s", n, got, err, want)
		}
		if got := HashValue(key, string(v[:n])); got != want {
			t.Fatalf("%d bytes, HashValue: %s; want %s", n, got, want)
		}
	}
}

// TestAppendHex32: the word-at-a-time hex is encoding/hex's.
func TestAppendHex32(t *testing.T) {
	for i := range 256 {
		var d [sha256.Size]byte
		for j := range d {
			d[j] = byte(i + j*97)
		}
		if got, want := string(appendHex32([]byte("x"), d[:])), "x"+hex.EncodeToString(d[:]); got != want {
			t.Fatalf("%s, want %s", got, want)
		}
	}
}
