package files

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/arrowconv"
	"github.com/sluicehq/sluice/objstore"
)

// ReadChecksum returns the checksum of every row of every data file of the
// given format (jsonl, csv or parquet) under dir, computed the way the sink
// computes it: JSONL lines as they are (CRLF normalized, blank lines
// skipped), CSV records without their header and line ending, Parquet rows
// rendered as canonical JSONL lines. Names starting with '_' or '.' are
// skipped, as the source skips them. dir may be an s3:// URL (read with
// the standard AWS environment, following current pointers as the source
// does).
func ReadChecksum(dir string, format string) (connectors.Checksum, error) {
	var sum connectors.Checksum
	if err := checkFormat(format); err != nil || format == "" {
		return sum, fmt.Errorf("read checksum: unknown format %q", format)
	}
	if objstore.IsURL(dir) {
		return readChecksumS3(dir, format)
	}
	base, found, _, err := followSwitch(context.Background(), localTreeAt, localWalker(dir))
	if err != nil {
		return sum, fmt.Errorf("read checksum of %s: %w", dir, err)
	}
	var paths []string
	for rel := range found {
		if formatOf(rel) == format {
			paths = append(paths, filepath.Join(base, filepath.FromSlash(rel)))
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		c, err := fileChecksum(p, format)
		if err != nil {
			return connectors.Checksum{}, fmt.Errorf("read checksum of %s: %w", p, err)
		}
		sum.Merge(c)
	}
	return sum, nil
}

func fileChecksum(p, format string) (connectors.Checksum, error) {
	f, err := os.Open(p)
	if err != nil {
		return connectors.Checksum{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return connectors.Checksum{}, err
	}
	return readerChecksum(f, st.Size(), format)
}

// readChecksumS3 is ReadChecksum of an s3:// directory.
func readChecksumS3(dir, format string) (connectors.Checksum, error) {
	var sum connectors.Checksum
	ctx := context.Background()
	r, err := openS3Root(dir, objstore.Config{})
	if err != nil {
		return sum, err
	}
	defer r.b.Close()
	base, found, _, err := followSwitch(ctx, s3TreeAt(r), r.walker(dir))
	if err != nil {
		return sum, fmt.Errorf("read checksum of %s: %w", dir, err)
	}
	var rels []string
	for rel := range found {
		if formatOf(rel) == format {
			rels = append(rels, rel)
		}
	}
	sort.Strings(rels)
	for _, rel := range rels {
		err := r.read(ctx, base, found[rel], func(f io.ReaderAt) error {
			c, err := readerChecksum(f, found[rel].Size, format)
			sum.Merge(c)
			return err
		})
		if err != nil {
			return connectors.Checksum{}, fmt.Errorf("read checksum of %s: %w", joinPath(base, rel), err)
		}
	}
	return sum, nil
}

// readerChecksum sums the rows of one file of size bytes read from f.
func readerChecksum(f io.ReaderAt, size int64, format string) (connectors.Checksum, error) {
	var sum connectors.Checksum
	var err error
	ctx := context.Background()
	switch format {
	case "jsonl":
		err = scanRange(ctx, f, size, 0, size, func(line []byte, _ int64) error {
			if line = normalizeLine(line); len(line) > 0 {
				sum.Add(line)
			}
			return nil
		})
	case "csv":
		s := newLineScanner(io.NewSectionReader(f, 0, size), 0, size)
		var rec []byte
		quoted, first := false, true
		for {
			line, _, lerr := s.next()
			if errors.Is(lerr, io.EOF) {
				break
			}
			if lerr != nil {
				return sum, lerr
			}
			rec = append(rec, line...)
			if bytes.Count(line, []byte{'"'})%2 == 1 {
				quoted = !quoted
			}
			if quoted {
				continue
			}
			if !first {
				r := bytes.TrimSuffix(bytes.TrimSuffix(rec, []byte{'\n'}), []byte{'\r'})
				sum.Add(r)
			}
			first = false
			rec = rec[:0]
		}
		if len(rec) > 0 && !first {
			sum.Add(bytes.TrimSuffix(rec, []byte{'\r'}))
		}
	case "parquet":
		if size == 0 {
			return sum, nil
		}
		pf, perr := file.NewParquetReader(io.NewSectionReader(f, 0, size))
		if perr != nil {
			return sum, perr
		}
		defer pf.Close()
		if pf.NumRows() == 0 {
			return sum, nil
		}
		fr, perr := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: parquetBatchRows}, memory.DefaultAllocator)
		if perr != nil {
			return sum, perr
		}
		rr, perr := fr.GetRecordReader(ctx, nil, nil)
		if perr != nil {
			return sum, perr
		}
		defer rr.Release()
		var scratch []byte
		for rr.Next() {
			rec := rr.RecordBatch()
			r := arrowconv.NewRowRenderer(rec)
			for i := 0; i < int(rec.NumRows()); i++ {
				scratch = r.AppendRow(scratch[:0], i)
				sum.Add(scratch)
			}
		}
		if perr := rr.Err(); perr != nil && !errors.Is(perr, io.EOF) {
			return sum, perr
		}
	}
	return sum, err
}
