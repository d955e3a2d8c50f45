package iceberg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/codec"
	"github.com/apache/iceberg-go/table"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/arrowconv"
)

// Rows are converted in records of up to recordRows rows (or
// recordTextBytes of text), each written into the current row group; a row
// group ends past rowGroupBytes of Parquet.
const (
	recordRows      = 64 << 10
	recordTextBytes = 32 << 20
	rowGroupBytes   = 64 << 20
)

// taskManifest is what a closed task attempt staged: its data files, with
// their Iceberg entries (the manifest-entry encoding of iceberg-go's
// codec, for the table's schema and spec of the ids recorded), written
// last as the task's one small object. The commit reads it back.
type taskManifest struct {
	Run           string         `json:"run"`
	Task          string         `json:"task"`
	Attempt       int            `json:"attempt"`
	Rows          int64          `json:"rows"`
	Checksum      string         `json:"checksum"`
	SchemaID      int            `json:"schema_id"`
	SpecID        int            `json:"spec_id"`
	FormatVersion int            `json:"format_version"`
	Files         []manifestFile `json:"files"`
}

type manifestFile struct {
	Path  string `json:"path"`
	Size  int64  `json:"size"`
	Rows  int64  `json:"rows"`
	Entry []byte `json:"entry"`
}

// taskWriter converts one task attempt's rows into Parquet data files of
// its own (zstd, the table's schema and field ids) in the run's data
// directory; Close records them in the task's manifest.
type taskWriter struct {
	s      *Sink
	ref    connectors.TaskRef
	tbl    *table.Table
	sc     *iceberg.Schema
	as     *arrow.Schema
	st     store
	dir    string // the run's data directory
	prefix string // the attempt's file names start with it
	conv   *arrowconv.Builder
	pcfg   arrowconv.ParquetConfig
	arrp   pqarrow.ArrowWriterProperties
	mem    memory.Allocator

	file   *dataFile
	files  []manifestFile
	rows   int64
	sum    connectors.Checksum
	failed error
	ended  bool
}

// dataFile is the data file being written.
type dataFile struct {
	path string
	ow   objectWriter
	cw   *countingWriter
	pw   *pqarrow.FileWriter
	rows int64
}

type countingWriter struct {
	w objectWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (w *taskWriter) where() string {
	return fmt.Sprintf("task %s of run %s to %s", w.ref.TaskID, w.ref.RunID, w.s.cfg.Table)
}

// Write converts one batch and writes it into the current data file:
// CSV records and JSON lines by the table's column types (arrowconv),
// Arrow records whose columns are the table's by name and type.
func (w *taskWriter) Write(ctx context.Context, b connectors.Batch) error {
	if w.ended {
		return errors.New("write after close or abort")
	}
	if w.failed != nil {
		return w.failed
	}
	if err := w.write(ctx, b); err != nil {
		w.failed = err
		return err
	}
	return nil
}

func (w *taskWriter) write(ctx context.Context, b connectors.Batch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.Record != nil {
		return w.writeRecord(ctx, b.Record)
	}
	sum := &w.sum
	if b.Checksum != nil && b.Checksum.Rows == b.Rows {
		sum = nil
	}
	var n int64
	var err error
	switch b.Format {
	case connectors.FormatCSV:
		n, err = w.conv.AppendCSV(b.Raw, b.Columns, b.Position, w.rows+1, sum)
	case connectors.FormatJSONL:
		n, err = w.conv.AppendJSONL(b.Raw, b.Position, w.rows+1, sum)
	default:
		return connectors.Permanent(fmt.Errorf("%s: cannot load %s batches (CSV, JSONL or Arrow)", w.where(), b.Format))
	}
	if err != nil {
		return connectors.Permanent(fmt.Errorf("%s: %w", w.where(), err))
	}
	if n != b.Rows && b.Rows != 0 {
		return connectors.Permanent(fmt.Errorf("%s: batch at %s says %d rows, holds %d", w.where(), b.Position, b.Rows, n))
	}
	if sum == nil {
		w.sum.Merge(*b.Checksum)
	}
	w.rows += n
	if w.conv.Len() >= recordRows || w.conv.TextBytes() >= recordTextBytes {
		return w.flush(ctx)
	}
	return nil
}

// writeRecord writes an Arrow record whose columns match the table's.
func (w *taskWriter) writeRecord(ctx context.Context, rec arrow.RecordBatch) error {
	if err := w.flush(ctx); err != nil {
		return err
	}
	cols := make([]arrow.Array, w.as.NumFields())
	for i, f := range w.as.Fields() {
		idx := rec.Schema().FieldIndices(f.Name)
		if len(idx) == 0 {
			if !f.Nullable {
				return connectors.Permanent(fmt.Errorf("%s: the batch has no column %q, which %s requires", w.where(), f.Name, w.s.cfg.Table))
			}
			nulls := array.MakeArrayOfNull(w.mem, f.Type, int(rec.NumRows()))
			defer nulls.Release()
			cols[i] = nulls
			continue
		}
		c := rec.Column(idx[0])
		if !arrow.TypeEqual(c.DataType(), f.Type) {
			return connectors.Permanent(fmt.Errorf("%s: column %q is %s in the batch, %s in %s", w.where(), f.Name, c.DataType(), f.Type, w.s.cfg.Table))
		}
		if !f.Nullable && c.NullN() > 0 {
			return connectors.Permanent(fmt.Errorf("%s: column %q holds NULL, which %s does not allow", w.where(), f.Name, w.s.cfg.Table))
		}
		cols[i] = c
	}
	if n := rec.Schema().NumFields(); n > len(cols) {
		for _, f := range rec.Schema().Fields() {
			if len(w.as.FieldIndices(f.Name)) == 0 {
				return connectors.Permanent(fmt.Errorf("%s: column %q is not a column of %s", w.where(), f.Name, w.s.cfg.Table))
			}
		}
	}
	out := array.NewRecordBatch(w.as, cols, rec.NumRows())
	defer out.Release()
	addRecordChecksum(&w.sum, out)
	w.rows += rec.NumRows()
	return w.writeParquet(ctx, out)
}

// addRecordChecksum adds a checksum of each row of rec: the hash of its
// values' text, each followed by the unit separator (NULL written as
// "\x00null"), as the conformance suite hashes Arrow rows.
func addRecordChecksum(sum *connectors.Checksum, rec arrow.RecordBatch) {
	var buf []byte
	for r := 0; r < int(rec.NumRows()); r++ {
		buf = buf[:0]
		for c := 0; c < int(rec.NumCols()); c++ {
			if col := rec.Column(c); col.IsNull(r) {
				buf = append(buf, "\x00null"...)
			} else {
				buf = append(buf, col.ValueStr(r)...)
			}
			buf = append(buf, 0x1f)
		}
		sum.Add(buf)
	}
}

// flush writes the converted rows, if any.
func (w *taskWriter) flush(ctx context.Context) error {
	if w.conv.Len() == 0 {
		return nil
	}
	rec := w.conv.NewRecord()
	defer rec.Release()
	return w.writeParquet(ctx, rec)
}

// writeParquet writes a record into the current data file (opening one
// when none is), ending the row group and the file at their sizes.
func (w *taskWriter) writeParquet(ctx context.Context, rec arrow.RecordBatch) error {
	if w.file == nil {
		if err := w.openFileLike(ctx, rec); err != nil {
			return err
		}
	}
	f := w.file
	if err := f.pw.WriteBuffered(rec); err != nil {
		return fmt.Errorf("%s: write %s: %w", w.where(), f.path, err)
	}
	f.rows += rec.NumRows()
	if f.pw.RowGroupTotalCompressedBytes() >= rowGroupBytes {
		f.pw.NewBufferedRowGroup()
	}
	if f.cw.n+f.pw.RowGroupTotalCompressedBytes() >= w.s.cfg.targetFileBytes() {
		return w.closeFile()
	}
	return nil
}

// openFile starts a data file.
func (w *taskWriter) openFile(ctx context.Context) error { return w.openFileLike(ctx, nil) }

// openFileLike starts a data file whose first record is first: its
// encodings are chosen from first's values (when not nil).
func (w *taskWriter) openFileLike(ctx context.Context, first arrow.RecordBatch) error {
	path := fmt.Sprintf("%s/%s-%05d.parquet", w.dir, w.prefix, len(w.files))
	props, err := arrowconv.WriterProperties(w.as, first, w.arrp, w.pcfg)
	if err != nil {
		return fmt.Errorf("%s: %w", w.where(), err)
	}
	ow, err := w.st.create(ctx, path)
	if err != nil {
		return fmt.Errorf("%s: %w", w.where(), err)
	}
	cw := &countingWriter{w: ow}
	pw, err := pqarrow.NewFileWriter(w.as, cw, props, w.arrp)
	if err != nil {
		ow.Abort()
		return fmt.Errorf("%s: start %s: %w", w.where(), path, err)
	}
	w.file = &dataFile{path: path, ow: ow, cw: cw, pw: pw}
	return nil
}

// closeFile ends the current data file and describes it as an Iceberg
// data file (statistics from its footer).
func (w *taskWriter) closeFile() error {
	f := w.file
	w.file = nil
	if err := f.pw.Close(); err != nil {
		f.ow.Abort()
		return fmt.Errorf("%s: finish %s: %w", w.where(), f.path, err)
	}
	if err := f.ow.Close(); err != nil {
		return fmt.Errorf("%s: upload %s: %w", w.where(), f.path, err)
	}
	w.files = append(w.files, manifestFile{Path: f.path, Size: f.cw.n, Rows: f.rows})
	meta, err := f.pw.FileMetadata()
	if err != nil {
		return fmt.Errorf("%s: footer of %s: %w", w.where(), f.path, err)
	}
	md := w.tbl.Metadata()
	df, err := table.DataFileFromMetadata(table.DataFileArgs{
		Schema: w.sc, Spec: md.PartitionSpec(), Format: iceberg.ParquetFile, Metadata: meta,
		FilePath: f.path, FileSize: f.cw.n, Content: iceberg.EntryContentData,
		Properties: md.Properties(), FormatVersion: md.Version(),
	})
	if err != nil {
		return fmt.Errorf("%s: describe %s: %w", w.where(), f.path, err)
	}
	entry, err := codec.EncodeDataFile(df, md.PartitionSpec(), w.sc, md.Version())
	if err != nil {
		return fmt.Errorf("%s: encode %s: %w", w.where(), f.path, err)
	}
	w.files[len(w.files)-1].Entry = entry
	return nil
}

// Close ends the last data file and writes the task's manifest, which
// replaces the one an earlier attempt of the task wrote: the commit takes
// the data files it names. The output's Location is the manifest's path.
func (w *taskWriter) Close(ctx context.Context) (connectors.TaskOutput, error) {
	if w.ended {
		return connectors.TaskOutput{}, errors.New("close after close or abort")
	}
	w.ended = true
	defer w.conv.Release()
	if w.failed != nil {
		w.abort(ctx)
		return connectors.TaskOutput{}, fmt.Errorf("close after a failed write: %w", w.failed)
	}
	out, err := w.close(ctx)
	if err != nil {
		w.abort(ctx)
		return connectors.TaskOutput{}, err
	}
	return out, nil
}

func (w *taskWriter) close(ctx context.Context) (connectors.TaskOutput, error) {
	if err := w.flush(ctx); err != nil {
		return connectors.TaskOutput{}, err
	}
	if w.file != nil {
		if err := w.closeFile(); err != nil {
			return connectors.TaskOutput{}, err
		}
	}
	md := w.tbl.Metadata()
	m := taskManifest{
		Run: w.ref.RunID, Task: w.ref.TaskID, Attempt: w.ref.Attempt, Rows: w.rows, Checksum: w.sum.String(),
		SchemaID: w.sc.ID, SpecID: md.DefaultPartitionSpec(), FormatVersion: md.Version(), Files: w.files,
	}
	var bytes int64
	for _, f := range w.files {
		bytes += f.Size
	}
	data, err := json.Marshal(m)
	if err != nil {
		return connectors.TaskOutput{}, err
	}
	loc := manifestPath(w.dir, w.ref.TaskID)
	if err := w.st.put(loc, data); err != nil {
		return connectors.TaskOutput{}, fmt.Errorf("%s: write %s: %w", w.where(), loc, err)
	}
	return connectors.TaskOutput{Rows: w.rows, Bytes: bytes, Checksum: w.sum, Location: loc}, nil
}

// Abort discards what this attempt wrote: its data files, and the upload
// in progress. The manifest of an earlier attempt that closed stays.
func (w *taskWriter) Abort(ctx context.Context) error {
	if w.ended {
		return nil
	}
	w.ended = true
	defer w.conv.Release()
	return w.abort(ctx)
}

func (w *taskWriter) abort(ctx context.Context) error {
	if w.file != nil {
		w.file.ow.Abort()
		w.file = nil
	}
	paths := make([]string, len(w.files))
	for i, f := range w.files {
		paths[i] = f.Path
	}
	w.files = nil
	return w.st.remove(context.WithoutCancel(ctx), paths)
}

// manifestPath is where a task's manifest lies in the run's directory:
// a name starting with '_', which engines listing a directory skip.
func manifestPath(dir, taskID string) string { return dir + "/_" + sanitize(taskID) + ".task.json" }

// runDir is the data directory of a run's files.
func runDir(tbl *table.Table, runID string) string {
	root := strings.TrimRight(tbl.Location(), "/") + "/data"
	if p, ok := tbl.Properties()[table.WriteDataPathKey]; ok && p != "" {
		root = strings.TrimRight(p, "/")
	}
	return root + "/sluice-" + sanitize(runID)
}

// sanitize keeps a name to letters, digits, '-', '_' and '.', replacing
// any other byte, and appends a short hash when it had to.
func sanitize(s string) string {
	clean := true
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '_'
			clean = false
		}
	}
	if clean && s != "" && s[0] != '.' {
		return s
	}
	return string(b) + "-" + shortHash(s)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// parquetConfig returns how the data files are written: the
// compression (zstd at its fastest level by default), row groups cut by
// size rather than rows, the writer's buffers from mem.
func parquetConfig(compression string, mem memory.Allocator) arrowconv.ParquetConfig {
	cfg := arrowconv.ParquetConfig{Codec: compress.Codecs.Zstd, Level: 1, Mem: mem,
		Extra: []parquet.WriterProperty{parquet.WithMaxRowGroupLength(8 << 20), parquet.WithCreatedBy("sluice")}}
	switch compression {
	case "snappy":
		cfg.Codec, cfg.Level = compress.Codecs.Snappy, compress.DefaultCompressionLevel
	case "gzip":
		cfg.Codec, cfg.Level = compress.Codecs.Gzip, compress.DefaultCompressionLevel
	case "none":
		cfg.Codec, cfg.Level = compress.Codecs.Uncompressed, compress.DefaultCompressionLevel
	}
	return cfg
}
