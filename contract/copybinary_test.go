package contract

import (
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// binaryPeople hashes, masks, tokenizes, drops and nulls columns of rows
// in COPY's binary format.
const binaryPeople = `strict: true
key: ${TEST_CONTRACT_KEY}
columns:
  id: keep
  email: hash
  phone: mask
  name: drop
  card: tokenize
  notes: {action: "null"}
  blob: keep
`

// copyBinary encodes rows as COPY's binary format does, with a header
// extension of 3 bytes; nil is NULL.
func copyBinary(rows [][][]byte, trailer bool) []byte {
	b := []byte(copySignature)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 3, 'x', 'y', 'z')
	return copyTuples(b, rows, trailer)
}

// copyTuples appends rows as COPY's binary format does; nil is NULL.
func copyTuples(b []byte, rows [][][]byte, trailer bool) []byte {
	for _, r := range rows {
		b = binary.BigEndian.AppendUint16(b, uint16(len(r)))
		for _, f := range r {
			if f == nil {
				b = append(b, 0xff, 0xff, 0xff, 0xff)
				continue
			}
			b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
			b = append(b, f...)
		}
	}
	if trailer {
		b = append(b, 0xff, 0xff)
	}
	return b
}

// TestCopyBinary: rows in COPY's binary format, read in pieces of any
// size, come out with the contract applied: kept fields byte for byte in
// their binary form, the text of the transformed ones hashed, masked and
// tokenized as CopyText does, dropped ones gone, nulled ones and NULLs
// NULL, the header without its extension and the trailer.
func TestCopyBinary(t *testing.T) {
	c := compileYAML(t, binaryPeople)
	cols := []string{"id", "email", "phone", "name", "card", "notes", "blob"}
	text := []string{"card", "email", "phone"}
	id := func(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }
	blob := []byte{0, 0xff, '\t', '\n', '\\'}
	in := copyBinary([][][]byte{
		{id(1), []byte("alice@example.com"), []byte("+1 555\t010 0199"), []byte("Alice"), []byte("4111-1111-1111-1111"), []byte("secret"), blob},
		{id(2), nil, nil, nil, nil, nil, nil},
		{id(3), []byte(`\back\slash`), []byte(""), []byte("Carol"), []byte("AB1234567"), nil, []byte{}},
	}, true)
	card1, _ := TokenizeValue(testKey, "4111-1111-1111-1111")
	card3, _ := TokenizeValue(testKey, "AB1234567")
	// The header without the extension.
	want := append([]byte(copySignature), 0, 0, 0, 0, 0, 0, 0, 0)
	want = copyTuples(want, [][][]byte{
		{id(1), []byte(HashValue(testKey, "alice@example.com")), []byte("+* ***\t*** 0199"), []byte(card1), nil, blob},
		{id(2), nil, nil, nil, nil, nil},
		{id(3), []byte(HashValue(testKey, `\back\slash`)), []byte(""), []byte(card3), nil, []byte{}},
	}, true)
	for _, chunk := range []int{1, 7, 1 << 20} {
		cb, err := c.CopyBinary(cols, text)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(cb.Columns(), ","); got != "id,email,phone,card,notes,blob" || cb.Same() {
			t.Fatalf("columns %s, same %v", got, cb.Same())
		}
		var r io.Reader = strings.NewReader(string(in))
		if chunk == 1 {
			r = iotest.OneByteReader(r)
		} else if chunk == 7 {
			r = iotest.HalfReader(r)
		}
		br := cb.Reader(r)
		got, err := io.ReadAll(br)
		if err != nil || br.Err() != nil {
			t.Fatalf("read: %v, %v", err, br.Err())
		}
		if !slices.Equal(got, want) {
			t.Fatalf("chunk %d:\n%q\nwant\n%q", chunk, got, want)
		}
	}

	// A row or a stream it cannot read fails the read, naming the row,
	// never a value.
	good := [][]byte{id(1), []byte("piix@example.com"), []byte("1"), []byte("piix"), []byte("AB1234567"), nil, nil}
	full := copyBinary([][][]byte{good}, true)
	for _, tc := range []struct {
		in   []byte
		want string
	}{
		{copyBinary([][][]byte{good, good[:3]}, true), "row 2 of the batch: malformed row of COPY's binary format: 3 fields, want 7"},
		{copyBinary([][][]byte{good}, false), "row 2 of the batch: malformed row of COPY's binary format: the rows end inside a row, or without the trailer"},
		{full[:len(full)-9], "row 1 of the batch: malformed row of COPY's binary format: the rows end inside a row"},
		{append(slices.Clone(full), 0), "bytes after the trailer"},
		{[]byte("1\tpiix\n"), "no signature"},
	} {
		cb, _ := c.CopyBinary(cols, text)
		br := cb.Reader(strings.NewReader(string(tc.in)))
		_, err := io.ReadAll(br)
		if err == nil || !errors.Is(err, br.Err()) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "piix") {
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.want)
		}
	}

	// A column whose value an action takes must have been read as text;
	// a filter or a truncate reads the text format.
	if _, err := c.CopyBinary(cols, []string{"email", "phone"}); err == nil || !strings.Contains(err.Error(), `"card"`) {
		t.Errorf("card read in its binary form: %v", err)
	}
	if _, err := compileYAML(t, people).CopyBinary([]string{"id", "email", "phone", "name", "born", "salary", "card", "notes", "country"}, text); err == nil {
		t.Error("a contract with a filter and truncates takes binary rows")
	}
	if _, err := c.CopyBinary([]string{"id", "ssn"}, nil); !IsUnclassified(err) {
		t.Errorf("strict: %v", err)
	}
	if cb, err := compileYAML(t, "columns: {id: keep}\n").CopyBinary([]string{"id", "x"}, nil); err != nil || !cb.Same() {
		t.Errorf("keep: %v", err)
	}
}

// TestTextColumns: the columns a contract's actions take, or none when a
// filter or a truncate needs the text format.
func TestTextColumns(t *testing.T) {
	s, _ := Parse([]byte(binaryPeople))
	if cols, ok := s.TextColumns(); !ok || strings.Join(cols, ",") != "card,email,phone" {
		t.Errorf("TextColumns = %q, %v", cols, ok)
	}
	s, _ = Parse([]byte(people))
	if _, ok := s.TextColumns(); ok {
		t.Error("a contract with a filter and truncates takes binary rows")
	}
}
