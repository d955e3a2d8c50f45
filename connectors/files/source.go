package files

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/objstore"
	"github.com/sluicehq/sluice/protocol"
)

// Read batch sizes.
const (
	rawBatchBytes    = 1 << 20
	parquetBatchRows = 64 << 10
)

// Source reads the files of a directory, local or on S3. It is safe for
// concurrent use.
type Source struct {
	cfg SourceConfig
	// root is the local directory (or file) to read: cfg.Path, a file://
	// URL's path; empty on S3.
	root string
	// s3 is the bucket of an s3:// path; nil for a local one.
	s3 *s3Root
	// layout is the parsed cfg.Layout; nil without one.
	layout *layout
	// Batch sizes; tests make them small.
	batchBytes int
	batchRows  int64
	// filesPerRun, when positive, replaces maxFilesPerRun (tests).
	filesPerRun int
}

var _ connectors.Source = (*Source)(nil)

// NewSource returns a source for cfg. It reaches no server (on S3 it reads
// the AWS shared configuration files): a missing path is reported by Plan.
func NewSource(cfg SourceConfig) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	src := &Source{cfg: cfg, batchBytes: rawBatchBytes, batchRows: parquetBatchRows}
	if objstore.IsURL(cfg.Path) {
		r, err := openS3Root(cfg.Path, cfg.S3)
		if err != nil {
			return nil, err
		}
		src.s3 = r
	} else {
		root, err := localPath(cfg.Path)
		if err != nil {
			return nil, &connectors.FieldError{Field: "path", Msg: err.Error()}
		}
		src.root = root
	}
	if cfg.Layout != "" {
		l, err := parseLayout(cfg.Layout)
		if err != nil {
			return nil, &connectors.FieldError{Field: "layout", Msg: err.Error()}
		}
		src.layout = &l
	}
	return src, nil
}

// Close releases the idle connections of an S3 source; a local one holds
// nothing between calls.
func (s *Source) Close() error {
	if s.s3 != nil {
		return s.s3.b.Close()
	}
	return nil
}

// path returns the root to read: a local path, or the s3:// URL.
func (s *Source) path() string {
	if s.s3 != nil {
		return s.s3.url("")
	}
	return s.root
}

// partSpec is the Spec of a planned partition.
type partSpec struct {
	Format string `json:"format"`
	// Base is the directory the paths are relative to, with symlinks
	// resolved at planning time: a local path, or an s3:// URL.
	Base  string    `json:"base"`
	Files []fileRef `json:"files"`
}

// fileRef is one file of a partition, as it was when the run was planned.
type fileRef struct {
	Path  string `json:"path"` // slash-separated, relative to Base
	Size  int64  `json:"size"`
	MTime int64  `json:"mtime"` // Unix nanoseconds
	// Start and End bound a byte range of a JSONL file; End 0 means the
	// whole file.
	Start int64 `json:"start,omitempty"`
	End   int64 `json:"end,omitempty"`
	// ETag is an S3 object's ETag when it was listed: every read asks for
	// that content (If-Match).
	ETag string `json:"etag,omitempty"`
}

// Plan lists the files (sorted by relative path) and groups consecutive
// files into partitions of about TargetBytes and at most MaxFiles files; a
// JSONL file larger than TargetBytes is split into byte ranges. For a run
// with a window (an incremental run of a source with a layout) it lists
// the window's time partition only; a partition directory that does not
// exist (an hour without data, under the next-partition convention) plans
// no task. A run by position (incremental.by: modified) lists the files
// new or changed since its watermark, oldest first (see arrivals). ctx
// bounds the listing.
func (s *Source) Plan(ctx context.Context, req connectors.PlanRequest) (connectors.Plan, error) {
	root := s.path()
	var err error
	if req.Window != nil {
		if s.layout == nil {
			return connectors.Plan{}, connectors.Permanent(fmt.Errorf("plan %s: a files source cannot read a delta-column window %v: lay the files out by time (layout) and leave incremental.delta_column out", s.cfg.Path, req.Window))
		}
		dir, _, err := s.partitionDirs(*req.Window)
		if err != nil {
			return connectors.Plan{}, fmt.Errorf("plan: %w", err)
		}
		if ok, err := s.exists(ctx, dir, true); err != nil {
			return connectors.Plan{}, fmt.Errorf("plan %s: %w", dir, err)
		} else if !ok {
			return connectors.Plan{}, nil
		}
		root = dir
	}
	if root, err = s.paramRoot(root, req.Params); err != nil {
		return connectors.Plan{}, err
	}
	base, files, format, err := s.list(ctx, root)
	if err != nil {
		return connectors.Plan{}, err
	}
	var watermark string
	if req.ByPosition {
		// By arrival: the files new or changed since the watermark.
		if files, watermark, err = s.arrivals(ctx, req, base, files); err != nil {
			return connectors.Plan{}, err
		}
	}
	target, maxFiles := taskBounds(req.Partitioning)
	var parts []protocol.Partition
	add := func(key string, refs []fileRef, bytes int64) error {
		spec, err := json.Marshal(partSpec{Format: format, Base: base, Files: refs})
		if err != nil {
			return fmt.Errorf("encode partition spec: %w", err)
		}
		parts = append(parts, protocol.Partition{Key: key, Spec: spec, Bytes: bytes})
		return nil
	}
	err = planGroups(len(files), func(i int) int64 { return files[i].Size },
		func(int) int64 {
			if format == "jsonl" {
				return target
			}
			return 0
		}, target, maxFiles,
		func(i, j int, bytes int64) error {
			return add(fmt.Sprintf("files[%d:%d]", i, j), files[i:j], bytes)
		},
		func(i int, off, n int64) error {
			r := files[i]
			r.Start, r.End = off, off+n
			return add(fmt.Sprintf("%s@%d+%d", r.Path, off, n), []fileRef{r}, n)
		})
	if err != nil {
		return connectors.Plan{}, err
	}
	return connectors.Plan{Partitions: parts, Watermark: watermark}, nil
}

// list returns the resolved base directory (or s3:// URL), the selected
// files sorted by relative path, and their format.
func (s *Source) list(ctx context.Context, root string) (string, []fileRef, string, error) {
	var (
		base  string
		found map[string]fileRef
		err   error
	)
	var within string
	if s.s3 != nil {
		base, found, within, err = followSwitch(ctx, s3TreeAt(s.s3), s.s3.walker(root))
	} else {
		base, found, within, err = followSwitch(ctx, localTreeAt, localWalker(root))
	}
	if err != nil {
		return "", nil, "", fmt.Errorf("list %s: %w", root, err)
	}
	refs, format, err := s.selectFiles(found, within)
	if err != nil {
		return "", nil, "", fmt.Errorf("list %s: %w", root, err)
	}
	return base, refs, format, nil
}

// walkLocal returns the directory root resolves to (symlinks followed,
// absolute) and every regular file under it that is not hidden, by
// slash-separated relative path; for a root that is a file, its directory
// and the file.
func walkLocal(ctx context.Context, root string) (string, map[string]fileRef, error) {
	base, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", nil, err
	}
	base, err = filepath.Abs(base)
	if err != nil {
		return "", nil, err
	}
	st, err := os.Stat(base)
	if err != nil {
		return "", nil, err
	}
	found := map[string]fileRef{}
	if !st.IsDir() {
		rel := filepath.Base(base)
		found[rel] = fileRef{Path: rel, Size: st.Size(), MTime: st.ModTime().UnixNano()}
		return filepath.Dir(base), found, nil
	}
	_, objs, err := listLocalTree(ctx, base, func(rel string) bool { return hidden(path.Base(rel)) }, false)
	for _, o := range objs {
		found[o.Path] = fileRef{Path: o.Path, Size: o.Size, MTime: o.MTime}
	}
	return base, found, err
}

// localWalker walks the local directory root (or reads the file root).
func localWalker(root string) walker {
	return func(ctx context.Context) (string, map[string]fileRef, bool, error) {
		base, found, err := walkLocal(ctx, root)
		if err != nil {
			return "", nil, false, err
		}
		st, err := os.Stat(root)
		return base, found, err == nil && !st.IsDir(), err
	}
}

// selectFiles picks the files of the configured format or glob among
// found, sorted by relative path, and tells their format. A glob applies
// to where a file lies in the directory read (logicalRel; within is
// where that directory lies under the base found is relative to).
func (s *Source) selectFiles(found map[string]fileRef, within string) ([]fileRef, string, error) {
	rels := make([]string, 0, len(found))
	for rel := range found {
		rels = append(rels, rel)
	}
	sort.Strings(rels)
	format := s.cfg.Format
	var selected []string
	formats := map[string]bool{}
	for _, rel := range rels {
		ff := formatOf(rel)
		switch {
		case s.cfg.Glob != "":
			target := logicalRel(rel, within)
			if !strings.Contains(s.cfg.Glob, "/") {
				target = path.Base(rel)
			}
			if ok, _ := path.Match(s.cfg.Glob, target); !ok {
				continue
			}
			if format == "" && ff == "" {
				return nil, "", fmt.Errorf("cannot tell the format of %s from its extension: set format", rel)
			}
		case format != "":
			if ff != format {
				continue
			}
		default:
			if ff == "" {
				continue
			}
		}
		formats[ff] = true
		selected = append(selected, rel)
	}
	if format == "" {
		var fs []string
		for f := range formats {
			fs = append(fs, f)
		}
		sort.Strings(fs)
		if len(fs) > 1 {
			return nil, "", fmt.Errorf("files of several formats (%s): set format or glob", strings.Join(fs, ", "))
		}
		if len(fs) == 1 {
			format = fs[0]
		}
	}
	refs := make([]fileRef, 0, len(selected))
	for _, rel := range selected {
		refs = append(refs, found[rel])
	}
	return refs, format, nil
}

// planGroups plans n files in order: each file that rangeOf splits (it
// returns a range size below the file's size; 0 never splits) becomes a
// partition per byte range (part), and the others go in runs of
// consecutive files [i, j) of about target bytes and at most maxFiles
// files (whole).
func planGroups(n int, sizeOf, rangeOf func(i int) int64, target int64, maxFiles int,
	whole func(i, j int, bytes int64) error, part func(i int, off, n int64) error) error {
	first, bytes := 0, int64(0)
	flush := func(next int) error {
		defer func() { first, bytes = next, 0 }()
		if next == first {
			return nil
		}
		return whole(first, next, bytes)
	}
	for i := range n {
		size := sizeOf(i)
		if r := rangeOf(i); r > 0 && size > r {
			if err := flush(i); err != nil {
				return err
			}
			for off := int64(0); off < size; off += r {
				if err := part(i, off, min(r, size-off)); err != nil {
					return err
				}
			}
			first = i + 1
			continue
		}
		if i > first && (bytes+size > target || i-first >= maxFiles) {
			if err := flush(i); err != nil {
				return err
			}
		}
		bytes += size
	}
	return flush(n)
}

// taskBounds are the bytes and the files a task takes at most, as the
// run's partitioning says or by default.
func taskBounds(p connectors.Partitioning) (int64, int) {
	target, maxFiles := p.TargetBytes, p.MaxFiles
	if target <= 0 {
		target = DefaultTargetBytes
	}
	if maxFiles <= 0 {
		maxFiles = DefaultMaxFiles
	}
	return target, maxFiles
}

// hidden reports whether a file or directory name is skipped.
func hidden(name string) bool { return strings.HasPrefix(name, "_") || strings.HasPrefix(name, ".") }

// Read reads one partition and hands its rows to emit: JSONL and CSV as Raw
// batches of about 1 MiB of canonical lines, Parquet as Arrow records of up
// to 64k rows. A file that changed since planning is a permanent error; a
// missing file a retryable one. ctx bounds the whole read.
func (s *Source) Read(ctx context.Context, p protocol.Partition, emit connectors.Emit) error {
	var spec partSpec
	if err := json.Unmarshal(p.Spec, &spec); err != nil {
		return connectors.Permanent(fmt.Errorf("read partition %s: bad spec: %w", p.Key, err))
	}
	base := spec.Base
	if base == "" {
		base = s.path()
	}
	open := func(ref fileRef, read func(f io.ReaderAt) error) error { return readFile(ctx, base, ref, read) }
	if objstore.IsURL(base) {
		if loc, err := objstore.ParseURL(base); err != nil || s.s3 == nil || loc.Bucket != s.s3.b.Name() {
			return connectors.Permanent(fmt.Errorf("read partition %s: base %s is not in the bucket of the source's path %s", p.Key, base, s.cfg.Path))
		}
		open = func(ref fileRef, read func(f io.ReaderAt) error) error { return s.s3.read(ctx, base, ref, read) }
	}
	var csvHeader []string
	for _, ref := range spec.Files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !fs.ValidPath(ref.Path) {
			return connectors.Permanent(fmt.Errorf("read partition %s: bad file path %q", p.Key, ref.Path))
		}
		var err error
		switch spec.Format {
		case "jsonl":
			err = open(ref, func(f io.ReaderAt) error { return readJSONL(ctx, f, ref, s.batchBytes, emit) })
		case "csv":
			err = open(ref, func(f io.ReaderAt) error {
				h, err := readCSV(ctx, io.NewSectionReader(f, 0, ref.Size), ref, csvHeader, s.batchBytes, emit)
				if csvHeader == nil {
					csvHeader = h
				}
				return err
			})
		case "parquet":
			err = open(ref, func(f io.ReaderAt) error { return readParquet(ctx, f, ref, s.batchRows, emit) })
		default:
			return connectors.Permanent(fmt.Errorf("read partition %s: unknown format %q", p.Key, spec.Format))
		}
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(err, ctxErr) {
				return ctxErr
			}
			return fmt.Errorf("read partition %s: %w", p.Key, err)
		}
	}
	return nil
}

// readFile opens one file of a partition, checks it is the file that was
// planned before and after read runs, and closes it.
func readFile(ctx context.Context, base string, ref fileRef, read func(f io.ReaderAt) error) error {
	f, err := os.Open(filepath.Join(base, filepath.FromSlash(ref.Path)))
	if err != nil {
		return fmt.Errorf("open %s: %w", ref.Path, err) // missing: retryable
	}
	defer f.Close()
	if err := checkUnchanged(f, ref); err != nil {
		return err
	}
	if err := read(f); err != nil {
		return err
	}
	return checkUnchanged(f, ref)
}

func checkUnchanged(f *os.File, ref fileRef) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", ref.Path, err)
	}
	if st.Size() != ref.Size || st.ModTime().UnixNano() != ref.MTime {
		return connectors.Permanent(fmt.Errorf("%s changed since the run was planned (size %d, was %d; mtime %s)",
			ref.Path, st.Size(), ref.Size, st.ModTime().UTC().Format("2006-01-02T15:04:05.999999999Z")))
	}
	return nil
}

// readJSONL emits the lines of a JSONL file, or of its byte range.
func readJSONL(ctx context.Context, f io.ReaderAt, ref fileRef, batchBytes int, emit connectors.Emit) error {
	start, end := ref.Start, ref.End
	if end == 0 {
		start, end = 0, ref.Size
	}
	var (
		buf     []byte
		rows    int64
		lineNo  int64 // 1-based number of the current line; known when start is 0
		batchAt string
	)
	position := func(off int64) string {
		if start == 0 {
			return fmt.Sprintf("%s:%d", ref.Path, lineNo)
		}
		return fmt.Sprintf("%s@%d", ref.Path, off)
	}
	flush := func() error {
		if rows == 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		b := connectors.Batch{Raw: buf, Format: connectors.FormatJSONL, Rows: rows, Position: batchAt}
		buf, rows = nil, 0
		if err := emit(ctx, b); err != nil {
			return fmt.Errorf("emit %s: %w", b.Position, err)
		}
		return nil
	}
	err := scanRange(ctx, f, ref.Size, start, end, func(line []byte, off int64) error {
		lineNo++
		line = normalizeLine(line)
		if len(line) == 0 {
			return nil
		}
		if !validJSONObject(line) {
			n := lineNo
			if start != 0 {
				var err error
				if n, err = lineNumber(f, off); err != nil {
					return err
				}
			}
			return &connectors.RowError{Location: ref.Path, Row: n, Err: errors.New("not a JSON object")}
		}
		if rows == 0 {
			batchAt = position(off)
			buf = make([]byte, 0, batchBytes+len(line)+1)
		}
		buf = append(buf, line...)
		buf = append(buf, '\n')
		rows++
		if len(buf) >= batchBytes {
			return flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}

// lineNumber returns the 1-based number of the line starting at off.
func lineNumber(f io.ReaderAt, off int64) (int64, error) {
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, off), 256<<10)
	buf := make([]byte, 256<<10)
	n := int64(1)
	for {
		k, err := r.Read(buf)
		n += int64(bytes.Count(buf[:k], []byte{'\n'}))
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return 0, err
		}
	}
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// readCSV emits the data records of a CSV file, re-encoded canonically. The
// first record is the header; it must equal want when want is not nil. It
// returns the file's header.
func readCSV(ctx context.Context, f io.Reader, ref fileRef, want []string, batchBytes int, emit connectors.Emit) ([]string, error) {
	br := bufio.NewReaderSize(f, 256<<10)
	if b, err := br.Peek(3); err == nil && bytes.Equal(b, utf8BOM) {
		br.Discard(3)
	}
	r := csv.NewReader(br)
	r.ReuseRecord = true
	rowErr := func(err error) error {
		var pe *csv.ParseError
		line := int64(0)
		if errors.As(err, &pe) {
			line = int64(pe.StartLine)
			err = pe.Err
		}
		return &connectors.RowError{Location: ref.Path, Row: line, Err: err}
	}
	rec, err := r.Read()
	if errors.Is(err, io.EOF) {
		return want, nil // an empty file has no rows
	}
	if err != nil {
		return nil, rowErr(err)
	}
	header := slices.Clone(rec)
	if want != nil && !slices.Equal(header, want) {
		return nil, &connectors.RowError{Location: ref.Path, Row: 1,
			Err: fmt.Errorf("header %q differs from the header %q of the partition's first file", header, want)}
	}
	var (
		buf     bytes.Buffer
		w       = csv.NewWriter(&buf)
		rows    int64
		batchAt string
	)
	flush := func() error {
		w.Flush()
		if rows == 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		b := connectors.Batch{Raw: bytes.Clone(buf.Bytes()), Format: connectors.FormatCSV, Columns: header, Rows: rows, Position: batchAt}
		buf.Reset()
		rows = 0
		if err := emit(ctx, b); err != nil {
			return fmt.Errorf("emit %s: %w", b.Position, err)
		}
		return nil
	}
	for n := 0; ; n++ {
		if n&1023 == 0 {
			if err := ctx.Err(); err != nil {
				return header, err
			}
		}
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return header, rowErr(err)
		}
		if rows == 0 {
			line, _ := r.FieldPos(0)
			batchAt = fmt.Sprintf("%s:%d", ref.Path, line)
		}
		if err := w.Write(rec); err != nil {
			return header, err
		}
		rows++
		if n&63 == 0 || batchBytes < 64<<10 {
			w.Flush()
		}
		if buf.Len() >= batchBytes {
			if err := flush(); err != nil {
				return header, err
			}
		}
	}
	return header, flush()
}

// readParquet emits the rows of a Parquet file as Arrow records.
func readParquet(ctx context.Context, f io.ReaderAt, ref fileRef, batchRows int64, emit connectors.Emit) error {
	if ref.Size == 0 {
		return nil
	}
	pf, err := file.NewParquetReader(io.NewSectionReader(f, 0, ref.Size)) // pf.Close leaves f open
	if err != nil {
		return &connectors.RowError{Location: ref.Path, Row: 0, Err: fmt.Errorf("open parquet: %w", err)}
	}
	defer pf.Close()
	if pf.NumRows() == 0 {
		return nil // also a file with no columns, which the sink writes for an empty task
	}
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: batchRows}, memory.DefaultAllocator)
	if err != nil {
		return &connectors.RowError{Location: ref.Path, Row: 0, Err: fmt.Errorf("open parquet: %w", err)}
	}
	rr, err := fr.GetRecordReader(ctx, nil, nil)
	if err != nil {
		return fmt.Errorf("read %s: %w", ref.Path, err)
	}
	defer rr.Release()
	row := int64(1)
	for rr.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec := rr.RecordBatch()
		rec.Retain()
		b := connectors.Batch{Record: rec, Format: connectors.FormatArrow, Rows: rec.NumRows(), Position: fmt.Sprintf("%s:%d", ref.Path, row)}
		row += rec.NumRows()
		err := emit(ctx, b)
		rec.Release()
		if err != nil {
			return fmt.Errorf("emit %s: %w", b.Position, err)
		}
	}
	if err := rr.Err(); err != nil && !errors.Is(err, io.EOF) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("read %s: %w", ref.Path, err)
	}
	return nil
}
