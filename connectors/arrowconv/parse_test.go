package arrowconv

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestParseDecimal(t *testing.T) {
	for _, tc := range []struct {
		in          string
		prec, scale int32
		want        string // the value at scale, or "" for an error
		err         string
	}{
		{in: "123.45", prec: 12, scale: 2, want: "123.45"},
		{in: "-0.50", prec: 5, scale: 2, want: "-0.50"},
		{in: "7", prec: 5, scale: 2, want: "7.00"},
		{in: "1.5", prec: 5, scale: 3, want: "1.500"},
		{in: "1.500", prec: 5, scale: 1, want: "1.5"},
		{in: "0.000", prec: 3, scale: 2, want: "0.00"},
		{in: "+42", prec: 2, scale: 0, want: "42"},
		{in: "1.5e3", prec: 6, scale: 1, want: "1500.0"},
		{in: "125E-2", prec: 4, scale: 2, want: "1.25"},
		{in: "1234567890123456789012345678.0123456789", prec: 38, scale: 10, want: "1234567890123456789012345678.0123456789"},
		{in: "12345678901234567890123456789.0123456789", prec: 38, scale: 10, err: "does not fit decimal(38,10)"},
		{in: "-99999999999999999999999999999999999999", prec: 38, scale: 0, want: "-99999999999999999999999999999999999999"},
		{in: "1.234", prec: 5, scale: 2, err: "more than 2 digits after the point"},
		{in: "1000", prec: 5, scale: 2, err: "does not fit decimal(5,2)"},
		{in: "123456789012345678901234567890123456789", prec: 38, scale: 0, err: "does not fit decimal(38,0)"},
		{in: "NaN", prec: 10, scale: 2, err: "cannot be held by a decimal"},
		{in: "-Infinity", prec: 10, scale: 2, err: "cannot be held by a decimal"},
		{in: "1.2.3", prec: 10, scale: 2, err: "not a decimal"},
		{in: ".", prec: 10, scale: 2, err: "not a decimal"},
		{in: "", prec: 10, scale: 2, err: "not a decimal"},
		{in: "1e", prec: 10, scale: 2, err: "not a decimal"},
	} {
		n, err := parseDecimal([]byte(tc.in), tc.prec, tc.scale)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseDecimal(%q, %d, %d) = %s, %v; want an error with %q", tc.in, tc.prec, tc.scale, n.ToString(tc.scale), err, tc.err)
			}
		case err != nil:
			t.Errorf("parseDecimal(%q, %d, %d): %v", tc.in, tc.prec, tc.scale, err)
		case n.ToString(tc.scale) != tc.want:
			t.Errorf("parseDecimal(%q, %d, %d) = %s, want %s", tc.in, tc.prec, tc.scale, n.ToString(tc.scale), tc.want)
		}
	}
}

func TestParseInt(t *testing.T) {
	for _, tc := range []struct {
		in   string
		bits int
		want int64
		ok   bool
	}{
		{"0", 16, 0, true},
		{"-32768", 16, -32768, true},
		{"32767", 16, 32767, true},
		{"32768", 16, 0, false},
		{"-32769", 16, 0, false},
		{"2147483647", 32, math.MaxInt32, true},
		{"-9223372036854775808", 64, math.MinInt64, true},
		{"9223372036854775807", 64, math.MaxInt64, true},
		{"9223372036854775808", 64, 0, false},
		{"99999999999999999999999", 64, 0, false},
		{"+5", 32, 5, true},
		{"-", 32, 0, false},
		{"1.0", 32, 0, false},
		{"", 32, 0, false},
	} {
		got, err := parseInt([]byte(tc.in), tc.bits)
		if (err == nil) != tc.ok || tc.ok && got != tc.want {
			t.Errorf("parseInt(%q, %d) = %d, %v; want %d, ok %t", tc.in, tc.bits, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseFloat(t *testing.T) {
	for in, want := range map[string]float64{
		"1.5": 1.5, "-0": math.Copysign(0, -1), "1e300": 1e300, "Infinity": math.Inf(1), "-Infinity": math.Inf(-1),
		"0.1": 0.1, "3.4028235e+38": 3.4028235e+38,
	} {
		got, err := parseFloat([]byte(in), 64)
		if err != nil || got != want || math.Signbit(got) != math.Signbit(want) {
			t.Errorf("parseFloat(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if got, err := parseFloat([]byte("NaN"), 64); err != nil || !math.IsNaN(got) {
		t.Errorf("parseFloat(NaN) = %v, %v", got, err)
	}
	for _, in := range []string{"", "abc", "1,5", "1e999"} {
		if _, err := parseFloat([]byte(in), 64); err == nil {
			t.Errorf("parseFloat(%q) succeeded, want an error", in)
		}
	}
	if _, err := parseFloat([]byte("1e39"), 32); err == nil {
		t.Errorf("parseFloat(1e39, 32) succeeded, want out of range")
	}
}

func TestParseDateTime(t *testing.T) {
	days := func(s string) int32 {
		d, err := time.Parse("2006-01-02", s)
		if err != nil {
			t.Fatal(err)
		}
		return int32(d.Unix() / 86400)
	}
	for in, want := range map[string]int32{
		"1970-01-01": 0, "2024-02-29": days("2024-02-29"), "1969-12-31": -1, "0001-01-01": days("0001-01-01"),
		"9999-12-31": days("9999-12-31"), "0001-12-31 BC": days("0000-12-31"), "12345-01-01": int32(time.Date(12345, 1, 1, 0, 0, 0, 0, time.UTC).Unix() / 86400),
	} {
		got, err := ParseDate([]byte(in))
		if err != nil || got != want {
			t.Errorf("ParseDate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"2023-02-29", "2024-13-01", "2024-1-01", "infinity", "-infinity", "2024-01-01x", ""} {
		if got, err := ParseDate([]byte(in)); err == nil {
			t.Errorf("ParseDate(%q) = %d, want an error", in, got)
		}
	}

	micros := func(s string) int64 {
		ts, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return ts.UnixMicro()
	}
	for in, want := range map[string]int64{
		"2024-01-01 00:00:15.123457+00":    micros("2024-01-01T00:00:15.123457Z"),
		"2024-01-01 00:00:15+00":           micros("2024-01-01T00:00:15Z"),
		"2024-01-01 02:00:00+02":           micros("2024-01-01T00:00:00Z"),
		"2024-01-01 00:00:00-05:30":        micros("2024-01-01T05:30:00Z"),
		"1900-01-01 00:00:00+00:09:21":     micros("1899-12-31T23:50:39Z"),
		"2024-06-01T12:00:00.5Z":           micros("2024-06-01T12:00:00.5Z"),
		"2024-06-01 12:00:00":              micros("2024-06-01T12:00:00Z"),
		"2024-06-01":                       micros("2024-06-01T00:00:00Z"),
		"1969-12-31 23:59:59.999999+00":    -1,
		"0001-01-01 00:00:00+00":           micros("0001-01-01T00:00:00Z"),
		"0044-03-15 12:00:00+00 BC":        time.Date(-43, 3, 15, 12, 0, 0, 0, time.UTC).UnixMicro(),
		"200000-12-31 23:59:59.999999+00":  time.Date(200000, 12, 31, 23, 59, 59, 0, time.UTC).Unix()*1e6 + 999999,
		"2024-01-01 00:00:00.000001+00":    micros("2024-01-01T00:00:00.000001Z"),
		"2000-02-29 23:59:59.1+00":         micros("2000-02-29T23:59:59.1Z"),
		"2024-01-01 00:00:00.123456789+00": 0, // seven or more digits: refused below
	} {
		got, err := ParseTimestamp([]byte(in))
		if strings.Contains(in, "123456789") {
			if err == nil {
				t.Errorf("ParseTimestamp(%q) = %d, want an error (nanoseconds)", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("ParseTimestamp(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	// PostgreSQL's latest timestamp is beyond 64-bit microseconds since 1970.
	for _, in := range []string{"294276-12-31 23:59:59.999999+00", "infinity", "-infinity", "2024-01-01 25:00:00", "2024-01-01 00:00", "2024-01-01 00:00:00+", "2024-01-01 00:00:00 AD"} {
		if got, err := ParseTimestamp([]byte(in)); err == nil {
			t.Errorf("ParseTimestamp(%q) = %d, want an error", in, got)
		}
	}

	for in, want := range map[string]int64{"00:00:00": 0, "23:59:59.999999": 86_399_999_999, "12:30:00.5": 45_000_500_000} {
		got, err := parseTime([]byte(in))
		if err != nil || got != want {
			t.Errorf("parseTime(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"24:00:00", "12:60:00", "1:00:00", "12:00:00+02"} {
		if _, err := parseTime([]byte(in)); err == nil {
			t.Errorf("parseTime(%q) succeeded, want an error", in)
		}
	}
}

func TestBytesUUIDArrays(t *testing.T) {
	got, err := appendBytea(nil, []byte(`\x00ff0a`))
	if err != nil || string(got) != "\x00\xff\x0a" {
		t.Errorf("appendBytea = %q, %v", got, err)
	}
	for _, in := range []string{`00ff`, `\x0`, `\xzz`} {
		if _, err := appendBytea(nil, []byte(in)); err == nil {
			t.Errorf("appendBytea(%q) succeeded", in)
		}
	}
	u, err := parseUUID([]byte("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"))
	if err != nil || u[0] != 0xa0 || u[15] != 0x11 {
		t.Errorf("parseUUID = %x, %v", u, err)
	}
	for _, in := range []string{"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", "a0eebc999c0b4ef8bb6d6bb9bd380a11x", "a0eebc99-9c0b4ef8-bb6d-6bb9bd380a11"} {
		if _, err := parseUUID([]byte(in)); err == nil {
			t.Errorf("parseUUID(%q) succeeded", in)
		}
	}

	elems, nulls, _, err := SplitArray([]byte(`{1,"b \"c\"",NULL,"NULL",""}`), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"1", `b "c"`, "NULL", "NULL", ""}
	wantNull := []bool{false, false, true, false, false}
	for i := range want {
		if string(elems[i]) != want[i] || nulls[i] != wantNull[i] {
			t.Errorf("element %d = %q null %t, want %q null %t", i, elems[i], nulls[i], want[i], wantNull[i])
		}
	}
	for _, in := range []string{`{{1,2},{3,4}}`, `[0:1]={1,2}`, `{"a}`, `1,2`} {
		if _, _, _, err := SplitArray([]byte(in), nil, nil, nil); err == nil {
			t.Errorf("SplitArray(%q) succeeded", in)
		}
	}
}

func TestFieldEnd(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	alphabet := []byte("ab,\n\r\x00\xff\x2b\x2d\x0b\x0e")
	for range 20000 {
		raw := make([]byte, r.IntN(40))
		for i := range raw {
			raw[i] = alphabet[r.IntN(len(alphabet))]
			if r.IntN(3) == 0 {
				raw[i] = byte(r.IntN(256))
			}
		}
		p := 0
		if len(raw) > 0 {
			p = r.IntN(len(raw) + 1)
		}
		want := p
		for want < len(raw) && raw[want] != ',' && raw[want] != '\n' && raw[want] != '\r' {
			want++
		}
		if got := fieldEnd(raw, p); got != want {
			t.Fatalf("fieldEnd(%q, %d) = %d, want %d", raw, p, got, want)
		}
	}
}
