package contract

import (
	"crypto/aes"
	"encoding/hex"
	"math/big"
	"strings"
	"testing"
)

// The sample vectors of NIST SP 800-38G for FF1 (FF1samples.pdf).
func TestFF1NISTSamples(t *testing.T) {
	const (
		k128 = "2B7E151628AED2A6ABF7158809CF4F3C"
		k192 = k128 + "EF4359D8D580AA4F"
		k256 = k192 + "7F036D6F04FC6A94"
		tw10 = "39383736353433323130"
		tw36 = "3737373770717273373737"
	)
	tests := []struct {
		key, tweak string
		radix      int64
		pt, ct     string
	}{
		{k128, "", 10, "0123456789", "2433477484"},
		{k128, tw10, 10, "0123456789", "6124200773"},
		{k128, tw36, 36, "0123456789abcdefghi", "a9tv40mll9kdu509eum"},
		{k192, "", 10, "0123456789", "2830668132"},
		{k192, tw10, 10, "0123456789", "2496655549"},
		{k192, tw36, 36, "0123456789abcdefghi", "xbj3kv35jrawxv32ysr"},
		{k256, "", 10, "0123456789", "6657667009"},
		{k256, tw10, 10, "0123456789", "1001623463"},
		{k256, tw36, 36, "0123456789abcdefghi", "xs8a0azh2avyalyzuwd"},
	}
	for _, tc := range tests {
		key, _ := hex.DecodeString(tc.key)
		tweak, _ := hex.DecodeString(tc.tweak)
		block, err := aes.NewCipher(key)
		if err != nil {
			t.Fatal(err)
		}
		f := newFF1(block)
		x, _ := new(big.Int).SetString(tc.pt, int(tc.radix))
		y := f.crypt(x, len(tc.pt), tc.radix, tweak, false)
		got := y.Text(int(tc.radix))
		got = strings.Repeat("0", len(tc.ct)-len(got)) + got
		if got != tc.ct {
			t.Errorf("key %d bits, radix %d, tweak %q: encrypt = %s, want %s", len(key)*8, tc.radix, tc.tweak, got, tc.ct)
		}
		back := f.crypt(y, len(tc.pt), tc.radix, tweak, true)
		if back.Cmp(x) != 0 {
			t.Errorf("key %d bits, radix %d: decrypt gives %s, want %s", len(key)*8, tc.radix, back.Text(int(tc.radix)), tc.pt)
		}
	}
}

var testKey = []byte("0123456789abcdef0123456789abcdef")

func TestTokenizeKeepsShapeAndRoundTrips(t *testing.T) {
	for _, v := range []string{
		"4111-1111-1111-1111", "DE89 3704 0044 0532 0130 00", "AB1234567", "+1 (555) 010-0199",
		"123456", "abcde", "x-Y-z-1-2-3-4", "---", "", "000000", "999999",
	} {
		tok, err := TokenizeValue(testKey, v)
		if err != nil {
			t.Fatalf("tokenize %q: %v", v, err)
		}
		if len(tok) != len(v) {
			t.Fatalf("tokenize %q = %q: length changed", v, tok)
		}
		for i := range v {
			a, b := v[i], tok[i]
			switch {
			case a >= '0' && a <= '9':
				if b < '0' || b > '9' {
					t.Fatalf("tokenize %q = %q: a digit became %q", v, tok, b)
				}
			case a >= 'a' && a <= 'z':
				if b < 'a' || b > 'z' {
					t.Fatalf("tokenize %q = %q: a lower-case letter became %q", v, tok, b)
				}
			case a >= 'A' && a <= 'Z':
				if b < 'A' || b > 'Z' {
					t.Fatalf("tokenize %q = %q: an upper-case letter became %q", v, tok, b)
				}
			default:
				if a != b {
					t.Fatalf("tokenize %q = %q: %q moved", v, tok, a)
				}
			}
		}
		if strings.ContainsAny(v, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") && tok == v {
			t.Fatalf("tokenize %q left it as it was", v)
		}
		back, err := Detokenize(testKey, tok)
		if err != nil || back != v {
			t.Fatalf("detokenize %q = %q, %v; want %q", tok, back, err, v)
		}
		again, _ := TokenizeValue(testKey, v)
		if again != tok {
			t.Fatalf("tokenize %q twice: %q then %q", v, tok, again)
		}
		if other, _ := TokenizeValue([]byte("another key of 32 bytes, really!"), v); other == tok && tok != v {
			t.Fatalf("tokenize %q under two keys gives the same %q", v, tok)
		}
	}
}

func TestTokenizeRefuses(t *testing.T) {
	for _, v := range []string{"12345", "abcd", "ab-123", "Zoë1234567", "日本123456"} {
		if tok, err := TokenizeValue(testKey, v); err == nil {
			t.Errorf("tokenize %q = %q, want an error", v, tok)
		} else if strings.Contains(err.Error(), v) {
			t.Errorf("the error %q holds the value", err)
		}
	}
}

// Distinct values of one shape stay distinct: the tokens of every 6-digit
// value from 000000 on are a permutation.
func TestTokenizeIsAPermutation(t *testing.T) {
	block, err := newTokenBlock(testKey)
	if err != nil {
		t.Fatal(err)
	}
	tk := newTokenizer(block)
	seen := map[string]bool{}
	for i := range 3000 {
		v := []byte(strings.Repeat("0", 6-len(big.NewInt(int64(i)).String())) + big.NewInt(int64(i)).String())
		out, err := tk.encrypt(nil, v)
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(out)] {
			t.Fatalf("two values tokenize to %s", out)
		}
		seen[string(out)] = true
	}
}
