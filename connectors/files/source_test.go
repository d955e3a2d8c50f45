package files

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
)

// linesOf returns the lines of data, each with its '\n' when it has one.
func linesOf(data []byte) [][]byte {
	var out [][]byte
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			out = append(out, data)
			break
		}
		out = append(out, data[:i+1])
		data = data[i+1:]
	}
	return out
}

// scanSplit scans data as consecutive ranges ending at cuts (and at
// len(data)) and returns the lines found, in order, with their offsets.
func scanSplit(t testing.TB, data []byte, cuts []int64) ([][]byte, []int64) {
	t.Helper()
	var lines [][]byte
	var offs []int64
	start := int64(0)
	for _, end := range append(slices.Clone(cuts), int64(len(data))) {
		if end <= start {
			continue
		}
		err := scanRange(context.Background(), bytes.NewReader(data), int64(len(data)), start, end, func(line []byte, off int64) error {
			if off < start || off >= end {
				t.Errorf("range [%d,%d) got a line starting at %d", start, end, off)
			}
			lines = append(lines, bytes.Clone(line))
			offs = append(offs, off)
			return nil
		})
		if err != nil {
			t.Fatalf("scanRange: %v", err)
		}
		start = end
	}
	return lines, offs
}

func TestScanRangeSplits(t *testing.T) {
	long := strings.Repeat("y", 700)
	contents := map[string]string{
		"empty":              "",
		"one line":           "a\n",
		"no final newline":   "a\nbb\nccc",
		"only newlines":      "\n\n\n",
		"long line":          "s\n" + long + "\nt\n" + long,
		"crlf":               "a\r\nb\r\n\r\nc",
		"single char lines":  "1\n2\n3\n4\n5\n6\n7\n8\n9\n",
		"bigger than buffer": strings.Repeat("z", 300<<10) + "\nq\n" + strings.Repeat("w", 270<<10),
	}
	for name, content := range contents {
		data := []byte(content)
		want := linesOf(data)
		for _, step := range []int64{1, 2, 3, 5, 7, 64, 333, 699, 700, 701, 100 << 10, 300<<10 + 1, 1 << 20} {
			if step < 64<<10 && len(data) > 10000 {
				continue
			}
			t.Run(fmt.Sprintf("%s/%d", name, step), func(t *testing.T) {
				var cuts []int64
				for c := step; c < int64(len(data)); c += step {
					cuts = append(cuts, c)
				}
				got, offs := scanSplit(t, data, cuts)
				if len(got) != len(want) {
					t.Fatalf("got %d lines, want %d", len(got), len(want))
				}
				off := int64(0)
				for i := range want {
					if !bytes.Equal(got[i], want[i]) || offs[i] != off {
						t.Fatalf("line %d = %q at %d, want %q at %d", i, got[i], offs[i], want[i], off)
					}
					off += int64(len(want[i]))
				}
			})
		}
	}
}

func FuzzScanRange(f *testing.F) {
	f.Add([]byte("a\nbb\nccc\n"), []byte{1, 2, 3})
	f.Add([]byte("\n\n{}\r\nx"), []byte{0, 1})
	f.Add([]byte("no newline at all"), []byte{5})
	f.Fuzz(func(t *testing.T, data []byte, steps []byte) {
		var cuts []int64
		c := int64(0)
		for _, s := range steps {
			c += int64(s) // a zero step repeats a cut point: an empty range
			cuts = append(cuts, c)
		}
		got, _ := scanSplit(t, data, cuts)
		if want := linesOf(data); !slices.EqualFunc(got, want, bytes.Equal) {
			t.Fatalf("ranges gave %q, want %q", got, want)
		}
	})
}

// TestJSONLRangesEachLineOnce reads a big JSONL file through Plan and Read
// with many target sizes and checks every row comes exactly once.
func TestJSONLRangesEachLineOnce(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	var want []string
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		line := fmt.Sprintf(`{"i":%d,"p":"%s"}`, i, strings.Repeat("p", r.IntN(60)))
		want = append(want, line)
		b.WriteString(line)
		if r.IntN(10) == 0 {
			b.WriteString("\r\n\n") // CRLF and a blank line
		} else if i < 199 {
			b.WriteString("\n") // and no final newline
		}
	}
	writeFile(t, dir, "big.jsonl", b.String())
	size := int64(b.Len())
	for _, target := range []int64{1, 2, 17, 100, 101, 1000, 4096, size - 1, size, size + 1} {
		t.Run(fmt.Sprint(target), func(t *testing.T) {
			src := SmallBatches(t, SourceConfig{Path: dir})
			parts, outs, err := readAll(t, src, connectors.PlanRequest{Partitioning: connectors.Partitioning{TargetBytes: target}})
			if err != nil {
				t.Fatal(err)
			}
			wantParts := int((size + target - 1) / target)
			if target >= size {
				wantParts = 1
			}
			if len(parts) != wantParts {
				t.Errorf("%d partitions, want %d", len(parts), wantParts)
			}
			got := strings.Split(strings.TrimSuffix(string(bytes.Join(outs, nil)), "\n"), "\n")
			if !slices.Equal(got, want) {
				t.Errorf("read %d lines, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
			}
		})
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestPlanKeysAndGrouping(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 5; i++ {
		writeFile(t, dir, fmt.Sprintf("f%d.jsonl", i), strings.Repeat("{}\n", 10)) // 30 bytes each
	}
	writeFile(t, dir, "g.jsonl", strings.Repeat("{}\n", 40)) // 120 bytes: split
	src, _ := NewSource(SourceConfig{Path: dir})
	plan, err := src.Plan(context.Background(), connectors.PlanRequest{Partitioning: connectors.Partitioning{TargetBytes: 70, MaxFiles: 3}})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, p := range plan.Partitions {
		keys = append(keys, fmt.Sprintf("%s(%d)", p.Key, p.Bytes))
	}
	want := []string{"files[0:2](60)", "files[2:4](60)", "files[4:5](30)", "g.jsonl@0+70(70)", "g.jsonl@70+50(50)"}
	if !slices.Equal(keys, want) {
		t.Errorf("partitions %v, want %v", keys, want)
	}
}

func TestPlanErrors(t *testing.T) {
	dir := t.TempDir()
	src, _ := NewSource(SourceConfig{Path: filepath.Join(dir, "missing")})
	_, err := src.Plan(context.Background(), connectors.PlanRequest{})
	if err == nil || !strings.Contains(err.Error(), "missing") || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Plan of a missing path = %v, want an error naming it", err)
	}
	writeFile(t, dir, "a.jsonl", "{}\n")
	writeFile(t, dir, "b.csv", "a\n1\n")
	src, _ = NewSource(SourceConfig{Path: dir})
	if _, err := src.Plan(context.Background(), connectors.PlanRequest{}); err == nil || !strings.Contains(err.Error(), "several formats") {
		t.Errorf("Plan of mixed formats = %v, want an error", err)
	}
	src, _ = NewSource(SourceConfig{Path: dir, Glob: "*.csv"})
	plan, err := src.Plan(context.Background(), connectors.PlanRequest{})
	if err != nil || len(plan.Partitions) != 1 || !strings.Contains(string(plan.Partitions[0].Spec), `"format":"csv"`) {
		t.Errorf("Plan with glob = %+v, %v", plan, err)
	}
}

func TestBadJSONLine(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	for i := 1; i <= 300; i++ {
		switch i {
		case 250:
			b.WriteString("[1,2]\n") // JSON but not an object
		case 40:
			b.WriteString("\n") // blank lines count as lines
		default:
			fmt.Fprintf(&b, `{"line":%d}`+"\n", i)
		}
	}
	writeFile(t, dir, "d/bad.jsonl", b.String())
	writeFile(t, dir, "d/worse.jsonl", "{}\n{\"a\":\n")
	for _, target := range []int64{0, 500} { // whole file, and byte ranges
		src, _ := NewSource(SourceConfig{Path: dir, Glob: "bad.jsonl"})
		_, _, err := readAll(t, src, connectors.PlanRequest{Partitioning: connectors.Partitioning{TargetBytes: target}})
		var re *connectors.RowError
		if !errors.As(err, &re) || re.Location != "d/bad.jsonl" || re.Row != 250 || !connectors.IsPermanent(err) {
			t.Errorf("target %d: error %v, want a RowError at d/bad.jsonl row 250", target, err)
		}
	}
	src, _ := NewSource(SourceConfig{Path: dir, Glob: "worse.jsonl"})
	_, _, err := readAll(t, src, connectors.PlanRequest{})
	var re *connectors.RowError
	if !errors.As(err, &re) || re.Location != "d/worse.jsonl" || re.Row != 2 {
		t.Errorf("error %v, want a RowError at d/worse.jsonl row 2", err)
	}
}

func TestCSVHeaderMismatch(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.csv", "x,y\n1,2\n")
	writeFile(t, dir, "b.csv", "x,z\n1,2\n")
	src, _ := NewSource(SourceConfig{Path: dir})
	_, _, err := readAll(t, src, connectors.PlanRequest{})
	var re *connectors.RowError
	if !errors.As(err, &re) || re.Location != "b.csv" || re.Row != 1 {
		t.Errorf("error %v, want a RowError at b.csv row 1", err)
	}
	writeFile(t, dir, "b.csv", "x,y\n1,2,3\n")
	_, _, err = readAll(t, src, connectors.PlanRequest{})
	if !errors.As(err, &re) || re.Location != "b.csv" || re.Row != 2 {
		t.Errorf("error %v, want a RowError at b.csv row 2", err)
	}
}

func TestCSVCanonicalBytes(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.csv", "a,b\r\n\"1\",\"x\"\"y\"\r\n2,\"multi\r\nline\"\r\n")
	src, _ := NewSource(SourceConfig{Path: dir})
	_, outs, err := readAll(t, src, connectors.PlanRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "1,\"x\"\"y\"\n2,\"multi\nline\"\n"; string(outs[0]) != want {
		t.Errorf("got %q, want %q", outs[0], want)
	}
}

func TestChangedOrMissingFile(t *testing.T) {
	for _, change := range []string{"append", "mtime", "remove"} {
		t.Run(change, func(t *testing.T) {
			dir := t.TempDir()
			p := writeFile(t, dir, "a.jsonl", "{\"a\":1}\n")
			src, _ := NewSource(SourceConfig{Path: dir})
			plan, err := src.Plan(context.Background(), connectors.PlanRequest{})
			if err != nil {
				t.Fatal(err)
			}
			switch change {
			case "append":
				f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
				f.WriteString("{\"a\":2}\n")
				f.Close()
			case "mtime":
				os.Chtimes(p, time.Now(), time.Now().Add(time.Hour))
			case "remove":
				os.Remove(p)
			}
			err = src.Read(context.Background(), plan.Partitions[0], func(context.Context, connectors.Batch) error { return nil })
			if change == "remove" {
				if err == nil || connectors.IsPermanent(err) || !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("Read of a removed file = %v, want a retryable not-exist error", err)
				}
				return
			}
			if err == nil || !connectors.IsPermanent(err) || !strings.Contains(err.Error(), "a.jsonl changed since the run was planned") {
				t.Errorf("Read of a changed file = %v, want a permanent error naming it", err)
			}
		})
	}
}

// TestPlanPinsCurrent checks a source over a dataset's current symlink
// keeps reading the version it planned.
func TestPlanPinsCurrent(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "v000001/part-a.jsonl", "{\"v\":1}\n")
	writeFile(t, dir, "v000002/part-a.jsonl", "{\"v\":2}\n{\"v\":2}\n")
	os.Symlink("v000001", filepath.Join(dir, "current"))
	src, _ := NewSource(SourceConfig{Path: filepath.Join(dir, "current")})
	plan, err := src.Plan(context.Background(), connectors.PlanRequest{})
	if err != nil || len(plan.Partitions) != 1 {
		t.Fatalf("Plan = %+v, %v", plan, err)
	}
	os.Remove(filepath.Join(dir, "current"))
	os.Symlink("v000002", filepath.Join(dir, "current"))
	var rows int64
	err = src.Read(context.Background(), plan.Partitions[0], func(_ context.Context, b connectors.Batch) error {
		rows += b.Rows
		return nil
	})
	if err != nil || rows != 1 {
		t.Errorf("Read after current moved: %d rows, %v; want the planned version's 1 row", rows, err)
	}
}
