package contract

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"math/big"
)

// ff1 is the FF1 format-preserving cipher of NIST SP 800-38G over AES: a
// permutation of the numeral strings of one length in one radix, chosen
// by the key and a tweak. Numeral strings are handled as the integers
// they denote (NUM_radix); their length is given beside them. It is used
// by one goroutine.
type ff1 struct {
	block cipher.Block
	// scratch
	buf  []byte
	r, s [aes.BlockSize]byte
}

func newFF1(block cipher.Block) *ff1 { return &ff1{block: block} }

// crypt enciphers (or deciphers) x, a numeral string of n numerals in
// radix (0 <= x < radix^n, n >= 2), under tweak, as NIST SP 800-38G
// algorithms 7 and 8 do.
func (f *ff1) crypt(x *big.Int, n int, radix int64, tweak []byte, decrypt bool) *big.Int {
	u := n / 2
	v := n - u
	br := big.NewInt(radix)
	pu := new(big.Int).Exp(br, big.NewInt(int64(u)), nil)
	pv := new(big.Int).Exp(br, big.NewInt(int64(v)), nil)
	a, b := new(big.Int).QuoRem(x, pv, new(big.Int))
	// b: the bytes of NUM(B) for the longer half; d: the bytes of S.
	nb := (new(big.Int).Sub(pv, big.NewInt(1)).BitLen() + 7) / 8
	d := 4*((nb+3)/4) + 4
	t := len(tweak)
	pad := ((-t-nb-1)%16 + 16) % 16
	// P || Q, with Q's last 1+nb bytes rewritten each round.
	size := 16 + t + pad + 1 + nb
	if cap(f.buf) < size {
		f.buf = make([]byte, size)
	}
	pq := f.buf[:size]
	clear(pq)
	pq[0], pq[1], pq[2] = 1, 2, 1
	pq[3], pq[4], pq[5] = byte(radix>>16), byte(radix>>8), byte(radix)
	pq[6], pq[7] = 10, byte(u)
	pq[8], pq[9], pq[10], pq[11] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	pq[12], pq[13], pq[14], pq[15] = byte(t>>24), byte(t>>16), byte(t>>8), byte(t)
	copy(pq[16:], tweak)
	sBytes := make([]byte, (d+15)/16*16)
	y := new(big.Int)
	for k := range 10 {
		i := k
		if decrypt {
			i = 9 - k
		}
		// Q = T || 0^pad || [i] || [NUM(B)]^nb, B being A when deciphering.
		src := b
		if decrypt {
			src = a
		}
		pq[16+t+pad] = byte(i)
		src.FillBytes(pq[16+t+pad+1:])
		// R = PRF(P || Q): CBC-MAC with a zero IV.
		clear(f.r[:])
		for j := 0; j < len(pq); j += 16 {
			for m := range 16 {
				f.r[m] ^= pq[j+m]
			}
			f.block.Encrypt(f.r[:], f.r[:])
		}
		// S = R || CIPH(R xor [1]) || CIPH(R xor [2]) ..., its first d bytes.
		copy(sBytes, f.r[:])
		for j := 1; j*16 < d; j++ {
			f.s = f.r
			f.s[15] ^= byte(j)
			f.s[14] ^= byte(j >> 8)
			f.block.Encrypt(sBytes[j*16:], f.s[:])
		}
		y.SetBytes(sBytes[:d])
		m := pu
		if i%2 == 1 {
			m = pv
		}
		if decrypt {
			// C = (NUM(B) - y) mod radix^m; B = A; A = C.
			c := new(big.Int).Sub(b, y)
			c.Mod(c, m)
			b, a = a, c
		} else {
			// C = (NUM(A) + y) mod radix^m; A = B; B = C.
			c := new(big.Int).Add(a, y)
			c.Mod(c, m)
			a, b = b, c
		}
	}
	return a.Mul(a, pv).Add(a, b)
}

// tokenKeyInfo derives the AES-256 key of tokenize from the contract's
// key, so that the hash action's HMAC key and the cipher's key differ.
const tokenKeyInfo = "sluice contract tokenize v1"

// newTokenBlock returns the AES-256 cipher of tokenize for a contract key.
func newTokenBlock(key []byte) (cipher.Block, error) {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(tokenKeyInfo))
	return aes.NewCipher(m.Sum(nil))
}

// minTokenDomain is the least number of values a tokenized value's
// letters and digits may range over: NIST SP 800-38G asks a domain of at
// least a million for FF1.
const minTokenDomain = 1_000_000

var (
	errTokenShort = errors.New("too few letters and digits to tokenize (fewer than a million values of that shape): hash the column instead")
	errTokenChars = errors.New("tokenize takes ASCII letters and digits (other characters are kept in place, but letters and digits of other scripts are refused): hash the column instead")
)

// tokenizer applies tokenize: the ASCII digits and letters of a value,
// read as one mixed-radix number (a digit place counts ten, a letter
// place twenty-six), are enciphered with FF1 in radix 2 over the bits of
// that number's range, walking the cycle until the result falls in the
// range again; the result is written back in the same places, a digit
// as a digit and a letter as a letter of the same case. Every other
// character stays where it is. The tweak is the value's shape (which
// places hold a digit, a lower or an upper letter, and the other
// characters), so only values of one shape share a permutation.
type tokenizer struct {
	f     *ff1
	x, n  big.Int
	shape []byte
}

func newTokenizer(block cipher.Block) *tokenizer { return &tokenizer{f: newFF1(block)} }

func (t *tokenizer) encrypt(dst, v []byte) ([]byte, error) { return t.crypt(dst, v, false) }

func (t *tokenizer) decrypt(dst, v []byte) ([]byte, error) { return t.crypt(dst, v, true) }

func (t *tokenizer) crypt(dst, v []byte, decrypt bool) ([]byte, error) {
	t.shape = t.shape[:0]
	t.x.SetInt64(0)
	t.n.SetInt64(1)
	ten, twentySix := big.NewInt(10), big.NewInt(26)
	places := 0
	for _, c := range v {
		switch {
		case c >= '0' && c <= '9':
			t.x.Mul(&t.x, ten).Add(&t.x, big.NewInt(int64(c-'0')))
			t.n.Mul(&t.n, ten)
			t.shape = append(t.shape, '9')
			places++
		case c >= 'a' && c <= 'z':
			t.x.Mul(&t.x, twentySix).Add(&t.x, big.NewInt(int64(c-'a')))
			t.n.Mul(&t.n, twentySix)
			t.shape = append(t.shape, 'a')
			places++
		case c >= 'A' && c <= 'Z':
			t.x.Mul(&t.x, twentySix).Add(&t.x, big.NewInt(int64(c-'A')))
			t.n.Mul(&t.n, twentySix)
			t.shape = append(t.shape, 'A')
			places++
		case c >= 0x80:
			return dst, errTokenChars
		default:
			t.shape = append(t.shape, c)
		}
	}
	if places == 0 {
		return append(dst, v...), nil
	}
	if t.n.Cmp(big.NewInt(minTokenDomain)) < 0 {
		return dst, errTokenShort
	}
	bits := new(big.Int).Sub(&t.n, big.NewInt(1)).BitLen()
	y := t.f.crypt(&t.x, bits, 2, t.shape, decrypt)
	for y.Cmp(&t.n) >= 0 {
		y = t.f.crypt(y, bits, 2, t.shape, decrypt)
	}
	start := len(dst)
	dst = append(dst, v...)
	out := dst[start:]
	var rem big.Int
	for i := len(out) - 1; i >= 0; i-- {
		switch s := t.shape[i]; s {
		case '9':
			y.QuoRem(y, ten, &rem)
			out[i] = '0' + byte(rem.Int64())
		case 'a', 'A':
			y.QuoRem(y, twentySix, &rem)
			out[i] = s + byte(rem.Int64())
		}
	}
	return dst, nil
}

// TokenizeValue returns what the tokenize action makes of value under the
// contract key key (the secret itself, not its reference).
func TokenizeValue(key []byte, value string) (string, error) {
	block, err := newTokenBlock(key)
	if err != nil {
		return "", err
	}
	out, err := newTokenizer(block).encrypt(nil, []byte(value))
	return string(out), err
}

// Detokenize reverses TokenizeValue: given the contract key and a token the
// tokenize action wrote, it returns the original value. Without the key a
// token tells nothing of the value but its shape.
func Detokenize(key []byte, token string) (string, error) {
	block, err := newTokenBlock(key)
	if err != nil {
		return "", err
	}
	out, err := newTokenizer(block).decrypt(nil, []byte(token))
	return string(out), err
}
