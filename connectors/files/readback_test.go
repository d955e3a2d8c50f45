package files_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors/conformance"
	"github.com/sluicehq/sluice/objstore"
	"github.com/sluicehq/sluice/objstore/s3test"
)

// jsonlWant is the rows of rawJSONLBatches, batch by batch, from the
// values the test writes.
func jsonlWant() []conformance.Table {
	var ts []conformance.Table
	id := 0
	for n := range 3 {
		t := conformance.Table{Columns: []string{"id", "v", "s", "b", "n"}}
		for range 10 + n*7 {
			t.Rows = append(t.Rows, []string{strconv.Itoa(id), fmt.Sprintf("%d.25", id), fmt.Sprintf("x%d", id), strconv.FormatBool(id%2 == 0), conformance.Null})
			id++
		}
		ts = append(ts, t)
	}
	return ts
}

// csvWant is the rows of rawCSVBatches, batch by batch: the third column
// is an empty text.
func csvWant() []conformance.Table {
	var ts []conformance.Table
	id := 0
	for n := range 3 {
		t := conformance.Table{Columns: []string{"id", "text", "empty"}}
		for range 5 + n*3 {
			t.Rows = append(t.Rows, []string{strconv.Itoa(id), fmt.Sprintf("a, \"b\"\nc%d", id), ""})
			id++
		}
		ts = append(ts, t)
	}
	return ts
}

// arrowWant is the rows of arrowBatches, batch by batch.
func arrowWant() []conformance.Table {
	var ts []conformance.Table
	for n := range 3 {
		t := conformance.Table{Columns: []string{"id", "name", "f"}}
		for i := range 4 + n {
			name := fmt.Sprintf("row \"%d\",\n%d", n, i)
			if i == 2 {
				name = conformance.Null
			}
			t.Rows = append(t.Rows, []string{strconv.Itoa(n*100 + i), name, strconv.FormatFloat(float64(float32(i)/3), 'g', -1, 32)})
		}
		ts = append(ts, t)
	}
	return ts
}

// keptIn returns what a dataset of format keeps of the rows the test
// generated from input: CSV has no null (an empty field is one, and an
// empty text is written as one); JSONL keeps a CSV field as its text;
// Parquet types a CSV input's columns from their text, an empty field a
// null.
func keptIn(format, input string, want func() []conformance.Table) func() []conformance.Table {
	return func() []conformance.Table {
		ts := want()
		for i, t := range ts {
			ts[i] = t.Map(func(_, v string) string {
				if v == "" && (format == "csv" || (input == "csv" && format == "parquet")) {
					return conformance.Null
				}
				return v
			})
		}
		return ts
	}
}

// readDataset reads every row of the files of format under root (a
// directory or an s3:// URL), in the dataset's exposed version when
// current is set (the directory the current symlink or pointer object
// names), with the standard library and the Parquet reader: hidden
// names (_staging, .tmp) are skipped.
func readDataset(t *testing.T, root, format string, current bool) (conformance.Table, error) {
	t.Helper()
	var names []string
	var read func(string) ([]byte, error)
	if objstore.IsURL(root) {
		loc, err := objstore.ParseURL(root)
		if err != nil {
			return conformance.Table{}, err
		}
		b := s3test.Client(t)
		prefix := loc.Key + "/"
		if current {
			ptr, err := b.Get(t.Context(), prefix+"current")
			if err != nil {
				return conformance.Table{}, fmt.Errorf("read the current pointer: %w", err)
			}
			prefix += strings.TrimSpace(string(ptr)) + "/"
		}
		err = b.List(t.Context(), prefix, func(o objstore.Object) error {
			names = append(names, o.Key)
			return nil
		})
		if err != nil {
			return conformance.Table{}, err
		}
		kept := names[:0]
		for _, n := range names {
			if visible(strings.TrimPrefix(n, prefix), format) {
				kept = append(kept, n)
			}
		}
		names = kept
		read = func(key string) ([]byte, error) { return b.Get(t.Context(), key) }
	} else {
		dir := root
		if current {
			target, err := os.Readlink(filepath.Join(root, "current"))
			if err != nil {
				return conformance.Table{}, fmt.Errorf("read the current symlink: %w", err)
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(root, target)
			}
			dir = target
		}
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			if !d.IsDir() && visible(filepath.ToSlash(rel), format) {
				names = append(names, p)
			}
			return nil
		})
		if errors.Is(err, fs.ErrNotExist) && !current {
			return conformance.Table{}, err
		}
		if err != nil {
			return conformance.Table{}, err
		}
		read = os.ReadFile
	}
	sort.Strings(names)
	var ts []conformance.Table
	for _, n := range names {
		data, err := read(n)
		if err != nil {
			return conformance.Table{}, err
		}
		var tb conformance.Table
		switch format {
		case "jsonl":
			tb, err = conformance.JSONLRows(data)
		case "csv":
			tb, err = conformance.CSVRows(data, true)
		case "parquet":
			tb, err = conformance.ParquetRows(data)
		}
		if err != nil {
			return conformance.Table{}, fmt.Errorf("%s: %w", n, err)
		}
		ts = append(ts, tb)
	}
	return conformance.Concat(ts...), nil
}

// visible reports whether rel, a path in a dataset, is a data file of
// format that readers see: no hidden part, the format's extension.
func visible(rel, format string) bool {
	for _, part := range strings.Split(rel, "/") {
		if strings.HasPrefix(part, "_") || strings.HasPrefix(part, ".") {
			return false
		}
	}
	return path.Ext(rel) == "."+format
}
