package contract

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// TestCopyText: rows in COPY's text format, read in pieces of any size,
// come out with the people contract applied: kept fields byte for byte
// (escapes included), transformed ones unescaped, transformed and escaped
// again, dropped ones and the rows the filter leaves out gone, NULLs
// kept; the values are those the CSV path makes of the same rows.
func TestCopyText(t *testing.T) {
	c := compileYAML(t, people)
	cols := []string{"id", "email", "phone", "name", "born", "salary", "card", "notes", "country"}
	in := "1\talice@example.com\t+1 555\\t010 0199\tAlice\t1984-07-19\t123456.78\t4111-1111-1111-1111\tsecret\\nnote\tDE\n" +
		"2\tbob@example.com\t\\N\tBob\t\\N\t\\N\t\\N\t\\N\tUS\n" +
		"3\t\\\\back\\\\slash\t\\N\tCarol\t2001-02-03\t-5\tAB1234567\t\\N\tFR\n"
	card1, _ := TokenizeValue(testKey, "4111-1111-1111-1111")
	card3, _ := TokenizeValue(testKey, "AB1234567")
	want := "1\t" + HashValue(testKey, "alice@example.com") + "\t+* ***\\t*** 0199\t1984-07-01\t123000\t" + card1 + "\t\\N\tDE\n" +
		"3\t" + HashValue(testKey, `\back\slash`) + "\t\\N\t2001-02-01\t-1000\t" + card3 + "\t\\N\tFR\n"
	for _, chunk := range []int{1, 7, 1 << 20} {
		ct, err := c.CopyText(cols)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(ct.Columns(), ","); got != "id,email,phone,born,salary,card,notes,country" || ct.Same() {
			t.Fatalf("columns %s, same %v", got, ct.Same())
		}
		var r io.Reader = strings.NewReader(in)
		if chunk == 1 {
			r = iotest.OneByteReader(r)
		} else {
			r = iotest.HalfReader(r)
		}
		tr := ct.Reader(r)
		got, err := io.ReadAll(tr)
		if err != nil || tr.Err() != nil {
			t.Fatalf("read: %v, %v", err, tr.Err())
		}
		if string(got) != want {
			t.Fatalf("chunk %d:\n%q\nwant\n%q", chunk, got, want)
		}
	}

	// A bad row or value fails the read, naming the row and the column,
	// never the value.
	for _, tc := range []struct{ in, want string }{
		{"1\ta@b\t\\N\tA\t1984-07-19\t1\tAB1234567\t\\N\tDE\n2\ta@b\tpiix\n", "row 2 of the batch: malformed row of COPY's text format: 3 fields, want 9"},
		{"1\ta@b\t\\N\tA\tpiix-born\t1\tAB1234567\t\\N\tDE\n", `row 1 of the batch, column "born": truncate: not a date`},
		{"1\ta@b\t\\N\tA\t1984-07-19\t1\tAB1234567\t\\N\tDE", "row 1 of the batch: malformed row of COPY's text format: the last row has no line end"},
	} {
		ct, _ := c.CopyText(cols)
		tr := ct.Reader(strings.NewReader(tc.in))
		_, err := io.ReadAll(tr)
		if err == nil || !errors.Is(err, tr.Err()) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "piix") {
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.want)
		}
	}

	// A strict contract names a column it does not classify.
	if _, err := compileYAML(t, "strict: true\ncolumns: {id: keep}\n").CopyText([]string{"id", "ssn"}); !IsUnclassified(err) {
		t.Fatalf("strict: %v", err)
	}
	// A contract that keeps everything leaves the rows as they are.
	if ct, err := compileYAML(t, "columns: {id: keep}\n").CopyText([]string{"id", "x"}); err != nil || !ct.Same() {
		t.Fatalf("keep: %v", err)
	}
}
