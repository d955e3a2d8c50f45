package files

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/objstore"
	"github.com/sluicehq/sluice/protocol"
)

// groupManifest is what a rewrite task staged: its output files, each
// read back and checked, written last as the task's one small file in the
// run's staging (_<task>.group.json); another attempt replaces it.
type groupManifest struct {
	Run      string       `json:"run"`
	Task     string       `json:"task"`
	Attempt  int          `json:"attempt"`
	Rows     int64        `json:"rows"`
	Checksum string       `json:"checksum"`
	Files    []stagedFile `json:"files"`
}

// stagedFile is one output file of a rewrite task.
type stagedFile struct {
	// Name is the file's name in the run's staging directory.
	Name     string `json:"name"`
	Rows     int64  `json:"rows"`
	Checksum string `json:"checksum"`
	Bytes    int64  `json:"bytes"`
}

// groupManifestName names a rewrite task's manifest in the run's staging.
func groupManifestName(task string) string { return "_" + task + ".group.json" }

// Rewrite rewrites one group: it reads the group's files as the source
// reads them and writes their rows, in their format, to the run's staging
// as the task's output files (Parquet: one file per schema, since files
// written by different tasks may differ), reads each file back and
// checks its rows' count and checksum, and writes the task's manifest.
// A group file that changed or went since the plan fails the task with a
// Replan error. ctx bounds the rewrite.
func (s *Sink) Rewrite(ctx context.Context, t connectors.TaskRef, group protocol.Partition) (connectors.TaskOutput, error) {
	var out connectors.TaskOutput
	if err := checkName("run", t.RunID); err != nil {
		return out, err
	}
	if err := checkName("task", t.TaskID); err != nil {
		return out, err
	}
	var spec groupSpec
	if err := json.Unmarshal(group.Spec, &spec); err != nil {
		return out, connectors.Permanent(fmt.Errorf("rewrite group %s: bad spec: %w", group.Key, err))
	}
	if err := checkFormat(spec.Format); err != nil || spec.Format == "" {
		return out, connectors.Permanent(fmt.Errorf("rewrite group %s: unknown format %q", group.Key, spec.Format))
	}
	if s.s3 == nil {
		for _, f := range spec.Files {
			st, err := os.Stat(filepath.Join(s.root, filepath.FromSlash(f.Path)))
			if err != nil || st.Size() != f.Size || st.ModTime().UnixNano() != f.MTime {
				return out, connectors.Replan(fmt.Errorf("rewrite group %s: %s changed or went since the plan", group.Key, f.Path))
			}
		}
	}
	target := *s
	target.cfg.Format = spec.Format
	src := &Source{cfg: SourceConfig{Path: s.cfg.Path, Format: spec.Format, S3: s.cfg.S3}, root: s.root, s3: s.s3,
		batchBytes: rawBatchBytes, batchRows: parquetBatchRows}
	pspec, err := json.Marshal(partSpec{Format: spec.Format, Base: s.base(), Files: spec.Files})
	if err != nil {
		return out, err
	}
	w := &groupWriter{s: &target, ref: t}
	var read int64
	var typed connectors.Checksum // of the Arrow rows read (Parquet)
	err = src.Read(ctx, protocol.Partition{Key: group.Key, Spec: pspec}, func(ctx context.Context, b connectors.Batch) error {
		read += b.Rows
		if b.Record != nil {
			addTypedRows(&typed, b.Record)
		}
		return w.write(ctx, b)
	})
	if err != nil {
		w.abort(ctx)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, objstore.ErrChanged) {
			return out, connectors.Replan(fmt.Errorf("rewrite group %s: %w", group.Key, err))
		}
		return out, fmt.Errorf("rewrite group %s: %w", group.Key, err)
	}
	outs, err := w.close(ctx)
	if err != nil {
		return out, fmt.Errorf("rewrite group %s: %w", group.Key, err)
	}
	m := groupManifest{Run: t.RunID, Task: t.TaskID, Attempt: t.Attempt}
	var sum, back connectors.Checksum
	for _, o := range outs {
		// Read back: JSONL and CSV by their lines' checksum, Parquet by
		// each row's typed values (rendering every row again as the
		// checksum's JSON would cost as much as the rewrite).
		got, err := s.stagedChecksum(ctx, o.Location, spec.Format)
		if err != nil {
			return out, fmt.Errorf("rewrite group %s: read back %s: %w", group.Key, o.Location, err)
		}
		if want := o.Checksum; spec.Format == "parquet" && got.Rows != want.Rows || spec.Format != "parquet" && got != want {
			return out, fmt.Errorf("rewrite group %s: %s reads back as %d rows, checksum %s; %d rows, checksum %s were written",
				group.Key, o.Location, got.Rows, got, o.Checksum.Rows, o.Checksum)
		}
		back.Merge(got)
		sum.Merge(o.Checksum)
		m.Files = append(m.Files, stagedFile{Name: path.Base(o.Location), Rows: o.Rows, Checksum: o.Checksum.String(), Bytes: o.Bytes})
		out.Bytes += o.Bytes
	}
	if sum.Rows != read {
		return out, connectors.Permanent(fmt.Errorf("rewrite group %s: %d rows read, %d written", group.Key, read, sum.Rows))
	}
	if spec.Format == "parquet" && back != typed {
		return out, fmt.Errorf("rewrite group %s: the files written read back as %d rows (typed checksum %s); %d rows (typed checksum %s) were read",
			group.Key, back.Rows, back, typed.Rows, typed)
	}
	m.Rows, m.Checksum = sum.Rows, sum.String()
	loc, err := s.writeManifest(ctx, t, m)
	if err != nil {
		return out, fmt.Errorf("rewrite group %s: %w", group.Key, err)
	}
	out.Rows, out.Checksum, out.Location = sum.Rows, sum, loc
	return out, nil
}

// groupWriter writes a group's rows as task outputs of the sink, one
// after another: a new one where the Arrow schema changes.
type groupWriter struct {
	s      *Sink
	ref    connectors.TaskRef
	tw     connectors.TaskWriter
	schema *arrow.Schema
	outs   []connectors.TaskOutput
}

func (w *groupWriter) write(ctx context.Context, b connectors.Batch) error {
	if w.tw != nil && b.Record != nil && w.schema != nil && !b.Record.Schema().Equal(w.schema) {
		if err := w.finish(ctx); err != nil {
			return err
		}
	}
	if w.tw == nil {
		ref := w.ref
		ref.TaskID = fmt.Sprintf("%s-%d", w.ref.TaskID, len(w.outs))
		tw, err := w.s.OpenTask(ctx, ref)
		if err != nil {
			return err
		}
		w.tw, w.schema = tw, nil
		if b.Record != nil {
			w.schema = b.Record.Schema()
		}
	}
	return w.tw.Write(ctx, b)
}

func (w *groupWriter) finish(ctx context.Context) error {
	o, err := w.tw.Close(ctx)
	w.tw = nil
	if err != nil {
		return err
	}
	w.outs = append(w.outs, o)
	return nil
}

func (w *groupWriter) close(ctx context.Context) ([]connectors.TaskOutput, error) {
	if w.tw != nil {
		if err := w.finish(ctx); err != nil {
			return nil, err
		}
	}
	return w.outs, nil
}

func (w *groupWriter) abort(ctx context.Context) {
	if w.tw != nil {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortWait)
		defer cancel()
		w.tw.Abort(actx)
		w.tw = nil
	}
}

// abortWait bounds the abort of a rewrite's output after a failure.
const abortWait = 30 * time.Second

// stagedChecksum reads a staged file (a location relative to the dataset)
// back and sums its rows: for JSONL and CSV their canonical checksum, for
// Parquet their typed checksum (addTypedRows).
func (s *Sink) stagedChecksum(ctx context.Context, loc, format string) (connectors.Checksum, error) {
	read := func(f io.ReaderAt, size int64) (connectors.Checksum, error) {
		if format != "parquet" {
			return readerChecksum(f, size, format)
		}
		var sum connectors.Checksum
		err := readParquet(ctx, f, fileRef{Path: loc, Size: size}, parquetBatchRows, func(_ context.Context, b connectors.Batch) error {
			addTypedRows(&sum, b.Record)
			return nil
		})
		return sum, err
	}
	if s.s3 == nil {
		f, err := os.Open(filepath.Join(s.root, filepath.FromSlash(loc)))
		if err != nil {
			return connectors.Checksum{}, err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return connectors.Checksum{}, err
		}
		return read(f, st.Size())
	}
	obj, err := s.s3.b.Head(ctx, s.s3.key(loc))
	if err != nil {
		return connectors.Checksum{}, err
	}
	var sum connectors.Checksum
	err = s.s3.read(ctx, s.base(), fileRef{Path: loc, Size: obj.Size, ETag: obj.ETag}, func(f io.ReaderAt) error {
		var err error
		sum, err = read(f, obj.Size)
		return err
	})
	return sum, err
}

// addTypedRows adds to sum each row of rec by its typed values: a null
// flag, then the value's bytes (integers and floats by their bits,
// strings and bytes with their length, other types by their text), so
// that a Parquet file read back can be checked against the rows written
// into it without rendering them.
func addTypedRows(sum *connectors.Checksum, rec arrow.RecordBatch) {
	cols := rec.Columns()
	var buf []byte
	for r := 0; r < int(rec.NumRows()); r++ {
		buf = buf[:0]
		for _, c := range cols {
			buf = appendTyped(buf, c, r)
		}
		sum.Add(buf)
	}
}

func appendTyped(buf []byte, c arrow.Array, r int) []byte {
	if c.IsNull(r) {
		return append(buf, 0)
	}
	buf = append(buf, 1)
	le := binary.LittleEndian
	switch a := c.(type) {
	case *array.Int64:
		return le.AppendUint64(buf, uint64(a.Value(r)))
	case *array.Int32:
		return le.AppendUint32(buf, uint32(a.Value(r)))
	case *array.Int16:
		return le.AppendUint16(buf, uint16(a.Value(r)))
	case *array.Int8:
		return append(buf, byte(a.Value(r)))
	case *array.Uint64:
		return le.AppendUint64(buf, a.Value(r))
	case *array.Float64:
		return le.AppendUint64(buf, math.Float64bits(a.Value(r)))
	case *array.Float32:
		return le.AppendUint32(buf, math.Float32bits(a.Value(r)))
	case *array.Boolean:
		if a.Value(r) {
			return append(buf, 1)
		}
		return append(buf, 0)
	case *array.Timestamp:
		return le.AppendUint64(buf, uint64(a.Value(r)))
	case *array.Date32:
		return le.AppendUint32(buf, uint32(a.Value(r)))
	case *array.String:
		return append(le.AppendUint32(buf, uint32(a.ValueLen(r))), a.Value(r)...)
	case *array.Binary:
		return append(le.AppendUint32(buf, uint32(a.ValueLen(r))), a.Value(r)...)
	}
	s := c.ValueStr(r)
	return append(le.AppendUint32(buf, uint32(len(s))), s...)
}

// writeManifest writes a rewrite task's manifest, replacing an earlier
// attempt's, and returns its location.
func (s *Sink) writeManifest(ctx context.Context, t connectors.TaskRef, m groupManifest) (string, error) {
	data, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	rel := path.Join(stagingRel(t.RunID), groupManifestName(t.TaskID))
	if s.s3 != nil {
		if err := s.s3.b.Put(ctx, s.s3.key(rel), data); err != nil {
			return "", fmt.Errorf("write manifest: %w", err)
		}
		return rel, nil
	}
	dir := stagingDir(s.root, t.RunID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("write manifest: %w", err)
	}
	if err := writeAtomic(dir, groupManifestName(t.TaskID), data); err != nil {
		return "", fmt.Errorf("write manifest: %w", err)
	}
	return rel, nil
}

// readManifest reads the manifest a rewrite task's output names and checks
// it against what the task reported.
func (s *Sink) readManifest(ctx context.Context, runID string, out connectors.TaskOutput) (groupManifest, error) {
	var m groupManifest
	if out.Location != path.Join(stagingRel(runID), path.Base(out.Location)) {
		return m, connectors.Permanent(fmt.Errorf("group output %q is not in the run's staging", out.Location))
	}
	var data []byte
	var err error
	if s.s3 != nil {
		data, err = s.s3.b.Get(ctx, s.s3.key(out.Location))
	} else {
		data, err = os.ReadFile(filepath.Join(s.root, filepath.FromSlash(out.Location)))
	}
	if err != nil {
		return m, fmt.Errorf("read group manifest: %w", err)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, connectors.Permanent(fmt.Errorf("group manifest %s: %w", out.Location, err))
	}
	if m.Run != runID || m.Rows != out.Rows || m.Checksum != out.Checksum.String() {
		return m, connectors.Permanent(fmt.Errorf("group manifest %s holds run %s, %d rows, checksum %s; the task reported run %s, %d rows, checksum %s",
			out.Location, m.Run, m.Rows, m.Checksum, runID, out.Rows, out.Checksum))
	}
	return m, nil
}

// outputName is the name a staged output of group g takes in the
// rewrite: unique to the run, so that it never takes the name of a file it
// replaces. In a change log's hour it starts as the group's first file
// does, part-<seq> (of the applier's part, or of an earlier rewrite), so
// that the hour's files in name order still hold its events in stream
// order: the group's files are contiguous in name order, and a late
// event's part (a later sequence) sorts after them.
func outputName(runID, staged string, g groupSpec) string {
	name := "part-" + runID + "-" + staged[len("part-"):]
	if g.Kind != unitHour || len(g.Files) == 0 {
		return name
	}
	if seq, ok := partSeq(path.Base(g.Files[0].Path)); ok {
		return "part-" + seq + "-" + name[len("part-"):]
	}
	return name
}

// partSeq returns the sequence that starts the name of a change log's
// part, part-<20 digits>.jsonl or a rewrite's part-<20 digits>-...
func partSeq(name string) (string, bool) {
	const n = len("part-") + 20
	if len(name) <= n || !strings.HasPrefix(name, "part-") || name[n] != '.' && name[n] != '-' {
		return "", false
	}
	seq := name[len("part-"):n]
	for _, c := range seq {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return seq, true
}
