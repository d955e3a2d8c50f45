package contract

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func apply(t *testing.T, c Column, v string) (string, error) {
	t.Helper()
	k := &keys{hash: testKey}
	block, err := newTokenBlock(testKey)
	if err != nil {
		t.Fatal(err)
	}
	k.tok = block
	fn := k.newColFn("c", c)
	out, err := fn.fn(nil, []byte(v))
	return string(out), err
}

func TestHashIsHMACAndStable(t *testing.T) {
	m := hmac.New(sha256.New, testKey)
	m.Write([]byte("alice@example.com"))
	want := hex.EncodeToString(m.Sum(nil))
	for range 3 { // a fresh column function each time: another task, another worker
		got, err := apply(t, Column{Action: Hash}, "alice@example.com")
		if err != nil || got != want {
			t.Fatalf("hash = %q, %v; want %q", got, err, want)
		}
	}
	if HashValue(testKey, "alice@example.com") != want {
		t.Fatal("HashValue differs from the hash action")
	}
	// One function hashing several values resets between them.
	fn := (&keys{hash: testKey}).newColFn("c", Column{Action: Hash})
	a, _ := fn.fn(nil, []byte("bob"))
	b, _ := fn.fn(nil, []byte("alice@example.com"))
	if string(b) != want || string(a) == want {
		t.Fatalf("a reused hash function gives %s then %s", a, b)
	}
}

func TestMask(t *testing.T) {
	two := 2
	zero := 0
	tests := []struct {
		col      Column
		in, want string
	}{
		{Column{Action: Mask}, "4111-1111-1111-1234", "****-****-****-1234"},
		{Column{Action: Mask}, "+1 (555) 010-0199", "+* (***) ***-0199"},
		{Column{Action: Mask}, "1234", "****"},         // keeping 4 of 4 would show it all
		{Column{Action: Mask}, "12345678", "****5678"}, // half kept at most
		{Column{Action: Mask}, "1234567", "*******"},   // 4 of 7 is more than half
		{Column{Action: Mask, KeepFirst: 1, KeepLast: &zero}, "Alice", "A****"},
		{Column{Action: Mask, KeepLast: &two}, "Zoë Müller", "*** ****er"},
		{Column{Action: Mask, PII: "email"}, "jane.doe+x@example.com", "**********@example.com"},
		{Column{Action: Mask, Shape: ShapeEmail}, "jörg@beispiel.de", "****@beispiel.de"},
		{Column{Action: Mask, Shape: ShapeEmail}, "no-at-sign", "**-**-****"},
		{Column{Action: Mask, Shape: ShapeEmail}, "@x", "@*"},
		{Column{Action: Mask}, "", ""},
		{Column{Action: Mask}, "\xff\xfe12345678", "******5678"},
	}
	for _, tc := range tests {
		got, err := apply(t, tc.col, tc.in)
		if err != nil || got != tc.want {
			t.Errorf("mask %+v of %q = %q, %v; want %q", tc.col, tc.in, got, err, tc.want)
		}
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		col      Column
		in, want string
	}{
		{Column{Action: Truncate, To: "month"}, "1984-07-19", "1984-07-01"},
		{Column{Action: Truncate, To: "year"}, "1984-07-19", "1984-01-01"},
		{Column{Action: Truncate, To: "day"}, "2026-11-25 10:11:12.123456+00", "2026-11-25 00:00:00+00"},
		{Column{Action: Truncate, To: "hour"}, "2026-11-25T10:11:12Z", "2026-11-25T10:00:00Z"},
		{Column{Action: Truncate, To: "minute"}, "2026-11-25 10:11:12.5-05:30", "2026-11-25 10:11:00-05:30"},
		{Column{Action: Truncate, To: "month"}, "0044-03-15 BC", "0044-03-01 BC"},
		{Column{Action: Truncate, To: "hour"}, "10:11:12", "10:00:00"},
		{Column{Action: Truncate, To: "day"}, "infinity", "infinity"},
		{Column{Action: Truncate, To: "month"}, "12345-06-07", "12345-06-01"},
		{Column{Action: Truncate, Bucket: "1000"}, "123456", "123000"},
		{Column{Action: Truncate, Bucket: "1000"}, "-1", "-1000"},
		{Column{Action: Truncate, Bucket: "1000"}, "-1000", "-1000"},
		{Column{Action: Truncate, Bucket: "10"}, "1234.56", "1230"},
		{Column{Action: Truncate, Bucket: "0.5"}, "1234.76", "1234.5"},
		{Column{Action: Truncate, Bucket: "0.25"}, "-0.1", "-0.25"},
		{Column{Action: Truncate, Bucket: "5"}, "1.5e3", "1500"},
		{Column{Action: Truncate, Bucket: "5"}, "NaN", "NaN"},
		{Column{Action: Truncate, Bucket: "100"}, "99999999999999999999999", "99999999999999999999900"},
		{Column{Action: Truncate, Bucket: "10"}, "9223372036854775807", "9223372036854775800"},
		{Column{Action: Truncate, Bucket: "10"}, "-9223372036854775808", "-9223372036854775810"},
		{Column{Action: Truncate, Length: 3}, "94107", "941"},
		{Column{Action: Truncate, Length: 2}, "日本語", "日本"},
		{Column{Action: Truncate, Length: 9}, "ab", "ab"},
	}
	for _, tc := range tests {
		got, err := apply(t, tc.col, tc.in)
		if err != nil || got != tc.want {
			t.Errorf("truncate %+v of %q = %q, %v; want %q", tc.col, tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		col Column
		in  string
		err error
	}{
		{Column{Action: Truncate, To: "month"}, "not a date", errNotTime},
		{Column{Action: Truncate, To: "month"}, "2026-1-1", errNotTime},
		{Column{Action: Truncate, To: "day"}, "2026-11-25 garbage", errNotTime},
		{Column{Action: Truncate, Bucket: "10"}, "ten", errNotNumber},
		{Column{Action: Truncate, Bucket: "10"}, "", errNotNumber},
	} {
		if got, err := apply(t, tc.col, tc.in); !errors.Is(err, tc.err) {
			t.Errorf("truncate %+v of %q = %q, %v; want %v", tc.col, tc.in, got, err, tc.err)
		}
	}
}

func TestFilterConditions(t *testing.T) {
	tests := []struct {
		c    Condition
		v    string
		null bool
		want bool
	}{
		{Condition{Op: OpEq, Values: []string{"DE"}}, "DE", false, true},
		{Condition{Op: OpEq, Values: []string{"DE"}}, "de", false, false},
		{Condition{Op: OpEq, Values: []string{"1"}}, "1.0", false, true},
		{Condition{Op: OpEq, Values: []string{"true"}}, "t", false, true},
		{Condition{Op: OpNe, Values: []string{"DE"}}, "", true, false},
		{Condition{Op: OpIn, Values: []string{"DE", "FR"}}, "FR", false, true},
		{Condition{Op: OpNotIn, Values: []string{"DE", "FR"}}, "IT", false, true},
		{Condition{Op: OpNotIn, Values: []string{"DE"}}, "", true, false},
		{Condition{Op: OpGe, Values: []string{"18"}}, "9", false, false},
		{Condition{Op: OpGe, Values: []string{"18"}}, "18", false, true},
		{Condition{Op: OpLt, Values: []string{"2026-01-01"}}, "2025-12-31 23:59:59+00", false, true},
		{Condition{Op: OpGt, Values: []string{"10000000000000000001"}}, "10000000000000000002", false, true},
		{Condition{Op: OpNull}, "", true, true},
		{Condition{Op: OpNull}, "", false, false},
		{Condition{Op: OpNotNull}, "x", false, true},
	}
	for _, tc := range tests {
		c := compileFilter([]Condition{tc.c})[0]
		if got := c.test([]byte(tc.v), tc.null); got != tc.want {
			t.Errorf("%s %v on %q (null %v) = %v, want %v", tc.c.Op, tc.c.Values, tc.v, tc.null, got, tc.want)
		}
	}
}

// A column's repeated values are hashed once; a column of distinct values
// stops remembering them. Either way each value hashes as HashValue says.
func TestMemo(t *testing.T) {
	calls := 0
	inner := func(dst, v []byte) ([]byte, error) {
		calls++
		return append(dst, HashValue(testKey, string(v))...), nil
	}
	fn := newMemo(inner)
	for i := range 10000 {
		v := []string{"new", "paid", "shipped"}[i%3]
		out, err := fn(nil, []byte(v))
		if err != nil || string(out) != HashValue(testKey, v) {
			t.Fatalf("memo of %q = %q", v, out)
		}
	}
	if calls != 3 {
		t.Fatalf("3 distinct values hashed %d times", calls)
	}
	// More values than the few compared byte by byte: the rest in the map.
	calls = 0
	fn = newMemo(inner)
	for i := range 10000 {
		v := fmt.Sprintf("country-%d", i%100)
		if i%7 == 0 {
			v = ""
		}
		out, err := fn([]byte("x"), []byte(v))
		if err != nil || string(out) != "x"+HashValue(testKey, v) {
			t.Fatalf("memo of %q = %q", v, out)
		}
	}
	if calls != 101 {
		t.Fatalf("101 distinct values hashed %d times", calls)
	}
	calls = 0
	fn = newMemo(inner)
	for i := range 10000 {
		v := []byte(fmt.Sprintf("unique-%d", i))
		if out, _ := fn(nil, v); string(out) != HashValue(testKey, string(v)) {
			t.Fatalf("memo of %q = %q", v, out)
		}
	}
	if calls != 10000 {
		t.Fatalf("10000 distinct values hashed %d times", calls)
	}
}

// TestHashValueIsHMAC: the hash action is HMAC-SHA256 as crypto/hmac
// computes it, for keys shorter and longer than SHA-256's block.
func TestHashValueIsHMAC(t *testing.T) {
	for _, key := range []string{"sixteen byte key", strings.Repeat("long key ", 20)} {
		for _, v := range []string{"", "a", "alice@example.com", strings.Repeat("x", 200)} {
			m := hmac.New(sha256.New, []byte(key))
			m.Write([]byte(v))
			if got, want := HashValue([]byte(key), v), hex.EncodeToString(m.Sum(nil)); got != want {
				t.Fatalf("key %d bytes, value %q: %s, want %s", len(key), v, got, want)
			}
		}
	}
}

// TestIsASCIIAlnum: the arithmetic test is the plain one for every byte.
func TestIsASCIIAlnum(t *testing.T) {
	for c := range 256 {
		b := byte(c)
		want := b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z'
		if got := isASCIIAlnum(b); got != want {
			t.Fatalf("isASCIIAlnum(%q) = %v", b, got)
		}
	}
}
