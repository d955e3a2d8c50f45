package files

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/sluicehq/sluice/connectors"
)

// encoder writes batches in one output format and sums the checksum of the
// rows it writes.
type encoder interface {
	write(b connectors.Batch) error
	// finish writes what is buffered (a Parquet footer) to the writer.
	finish() error
}

// attempt is what a task writer knows of its attempt's state: closed or
// aborted, and the first write error, after which it can only abort.
type attempt struct {
	done bool
	err  error
}

// usable returns why the attempt cannot take a batch (closing: be closed)
// now: it ended, a write failed, or ctx ended.
func (a *attempt) usable(ctx context.Context, closing bool) error {
	switch {
	case a.done && closing:
		return errors.New("task output closed twice")
	case a.done:
		return errors.New("write to a closed task output")
	case a.err != nil:
		return a.err
	}
	return ctx.Err()
}

// taskWriter writes one task attempt to a temporary file in staging.
type taskWriter struct {
	attempt
	tmp, final, location string
	dir                  string
	f                    *os.File
	bw                   *bufio.Writer
	// out, set at the first Write, writes f from a goroutine; bw then
	// writes to out instead of f.
	out *fileOut
	enc encoder
	sum connectors.Checksum
}

var _ connectors.TaskWriter = (*taskWriter)(nil)

// Write writes one batch. After an error the attempt can only be aborted.
func (w *taskWriter) Write(ctx context.Context, b connectors.Batch) error {
	if err := w.usable(ctx, false); err != nil {
		return err
	}
	if w.out == nil {
		// Nothing is written before the first batch (the CSV header comes
		// with it): from now on, bw hands its bytes to out. out buffers
		// them itself, so bw's buffer only gathers small writes.
		w.out = newFileOut(w.f)
		*w.bw = *bufio.NewWriterSize(w.out, 64<<10)
	}
	if err := w.enc.write(b); err != nil {
		w.err = fmt.Errorf("write %s: %w", w.location, err)
		return w.err
	}
	return nil
}

// Close makes the output durable and renames it over the output of any
// earlier attempt of the task.
func (w *taskWriter) Close(ctx context.Context) (connectors.TaskOutput, error) {
	if err := w.usable(ctx, true); err != nil {
		return connectors.TaskOutput{}, err
	}
	w.done = true
	err := w.enc.finish()
	if err == nil {
		err = w.bw.Flush()
	}
	if w.out != nil {
		// Every byte written, before the sync.
		if oerr := w.out.close(); err == nil {
			err = oerr
		}
	}
	if err == nil {
		err = w.f.Sync()
	}
	var size int64
	if err == nil {
		var st os.FileInfo
		if st, err = w.f.Stat(); err == nil {
			size = st.Size()
		}
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(w.tmp, w.final)
	}
	if err == nil {
		err = syncDir(w.dir)
	}
	if err != nil {
		os.Remove(w.tmp)
		return connectors.TaskOutput{}, fmt.Errorf("close %s: %w", w.location, err)
	}
	return connectors.TaskOutput{Rows: w.sum.Rows, Bytes: size, Checksum: w.sum, Location: w.location}, nil
}

// Abort removes this attempt's temporary file; a closed output of an
// earlier attempt stays.
func (w *taskWriter) Abort(context.Context) error {
	if w.done {
		return nil
	}
	w.done = true
	if w.out != nil {
		w.out.abort()
	}
	w.f.Close()
	if err := os.Remove(w.tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("abort %s: %w", w.location, err)
	}
	return nil
}

// fileOut writes a file in the background: Write copies the bytes into
// one of a few aligned buffers and returns; a goroutine writes each full
// buffer at its offset, in order, while the task goes on reading its
// source. The file is opened for direct I/O where the system allows it
// (the data goes from the buffer to the device, without being copied into
// the page cache, which on a VM costs more CPU than the rest of a
// pass-through load); where it does not, or a direct write is refused,
// writes go through the page cache. Durability is the caller's fsync, as
// before: close only guarantees that every byte was handed to the kernel.
type fileOut struct {
	f *os.File
	// cur is the buffer being filled: cap fileOutBuf, aligned.
	cur  []byte
	full chan []byte // filled buffers, to the goroutine, in file order
	free chan []byte // written buffers, back to Write
	done chan struct{}
	// direct and off are the goroutine's until done is closed, then
	// close's.
	direct bool
	off    int64
	mu     sync.Mutex
	err    error // first write error
	ended  bool
}

const (
	// fileOutBuf is the size of each buffer, and of each write.
	fileOutBuf = 1 << 20
	// fileOutBufs is how many buffers a file has: one being filled, the
	// others queued or being written.
	fileOutBufs = 3
	// directAlign is the alignment of direct writes (memory, offset and
	// size): the logical block size of any device, or a multiple of it.
	directAlign = 4096
)

// outBufs recycles fileOut buffers between tasks.
var outBufs = sync.Pool{New: func() any {
	b := make([]byte, fileOutBuf+directAlign)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) % directAlign); r != 0 {
		skip = directAlign - r
	}
	b = b[skip : skip+fileOutBuf : skip+fileOutBuf]
	return &b
}}

func getOutBuf() []byte { return (*outBufs.Get().(*[]byte))[:0] }

func putOutBuf(b []byte) { b = b[:0]; outBufs.Put(&b) }

func newFileOut(f *os.File) *fileOut {
	o := &fileOut{
		f:    f,
		cur:  getOutBuf(),
		full: make(chan []byte, fileOutBufs-1),
		free: make(chan []byte, fileOutBufs),
		done: make(chan struct{}),
	}
	for range fileOutBufs - 1 {
		o.free <- getOutBuf()
	}
	o.direct = setDirect(f, true) == nil
	go o.run()
	return o
}

func (o *fileOut) run() {
	defer close(o.done)
	for b := range o.full {
		if o.error() == nil {
			if err := o.writeAt(b); err != nil {
				o.mu.Lock()
				o.err = err
				o.mu.Unlock()
			}
		}
		o.free <- b
	}
}

func (o *fileOut) error() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// writeAt writes b at o.off, directly when b, its address and o.off are
// aligned, else (or when the direct write is refused) through the page
// cache, and moves o.off past it.
func (o *fileOut) writeAt(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	aligned := len(b)%directAlign == 0 && o.off%directAlign == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(b)))%directAlign == 0
	if o.direct && !aligned {
		if err := setDirect(o.f, false); err != nil {
			return err
		}
		o.direct = false
	}
	_, err := o.f.WriteAt(b, o.off)
	if err != nil && o.direct && errors.Is(err, syscall.EINVAL) {
		// Direct I/O refused (the file system's alignment, or no support):
		// write the same bytes at the same place through the page cache.
		if err = setDirect(o.f, false); err == nil {
			o.direct = false
			_, err = o.f.WriteAt(b, o.off)
		}
	}
	if err != nil {
		return err
	}
	o.off += int64(len(b))
	return nil
}

// Write copies p into the buffers; it blocks while every buffer is queued.
// It returns the first error of an earlier background write.
func (o *fileOut) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if err := o.error(); err != nil {
			return n, err
		}
		k := copy(o.cur[len(o.cur):cap(o.cur)], p)
		o.cur = o.cur[:len(o.cur)+k]
		p = p[k:]
		n += k
		if len(o.cur) == cap(o.cur) {
			o.full <- o.cur
			o.cur = <-o.free
			o.cur = o.cur[:0]
		}
	}
	return n, nil
}

// close writes what is queued and buffered, and waits until it is written:
// the aligned part of the last buffer directly, the rest through the page
// cache (direct I/O off from then on).
func (o *fileOut) close() error {
	if o.ended {
		return errors.New("file output closed twice")
	}
	o.ended = true
	close(o.full)
	<-o.done
	err := o.err
	if err == nil {
		last := o.cur
		if head := len(last) / directAlign * directAlign; head > 0 {
			err = o.writeAt(last[:head])
			last = last[head:]
		}
		if err == nil {
			err = o.writeAt(last)
		}
	}
	o.release()
	return err
}

// abort stops the background writes and waits for them to end.
func (o *fileOut) abort() {
	if o.ended {
		return
	}
	o.ended = true
	close(o.full)
	<-o.done
	o.release()
}

func (o *fileOut) release() {
	putOutBuf(o.cur)
	o.cur = nil
	for range fileOutBufs - 1 {
		putOutBuf(<-o.free)
	}
}

// syncDir fsyncs a directory, making the entries created or renamed in it
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

func newEncoder(format string, w *bufio.Writer, sum *connectors.Checksum) encoder {
	switch format {
	case "csv":
		return &csvEncoder{w: w, sum: sum}
	case "parquet":
		return &parquetEncoder{w: w, sum: sum}
	}
	return &jsonlEncoder{w: w, sum: sum}
}

// jsonlEncoder writes JSONL: JSONL bytes pass through; CSV records become
// objects of string values; Arrow rows are rendered canonically.
type jsonlEncoder struct {
	w       *bufio.Writer
	sum     *connectors.Checksum
	scratch []byte
}

func (e *jsonlEncoder) line(l []byte) error {
	e.sum.Add(l)
	if _, err := e.w.Write(l); err != nil {
		return err
	}
	return e.w.WriteByte('\n')
}

func (e *jsonlEncoder) write(b connectors.Batch) error {
	switch {
	case b.Record != nil:
		r := newRowRenderer(b.Record)
		for i := 0; i < int(b.Record.NumRows()); i++ {
			e.scratch = r.appendRow(e.scratch[:0], i)
			if err := e.line(e.scratch); err != nil {
				return err
			}
		}
		return nil
	case b.Format == connectors.FormatJSONL:
		// Straight through: each non-blank line is one row. A batch whose
		// lines are canonical already (a files source's) is written in one
		// piece once its rows are summed.
		if canonicalJSONL(b.Raw, e.sum) {
			_, err := e.w.Write(b.Raw)
			return err
		}
		return forEachLine(b.Raw, func(_ int, line []byte) error { return e.line(line) })
	case b.Format == connectors.FormatCSV:
		keys := make([][]byte, len(b.Columns))
		for i, c := range b.Columns {
			if i > 0 {
				keys[i] = append(keys[i], ',')
			}
			keys[i] = append(appendJSONString(keys[i], c), ':')
		}
		return forEachCSV(b, func(_ int, rec []string) error {
			e.scratch = append(e.scratch[:0], '{')
			for i, s := range rec {
				e.scratch = appendJSONString(append(e.scratch, keys[i]...), s)
			}
			e.scratch = append(e.scratch, '}')
			return e.line(e.scratch)
		})
	}
	return fmt.Errorf("cannot write %s batches as jsonl", b.Format)
}

func (e *jsonlEncoder) finish() error { return nil }

// canonicalJSONL reports whether every line of raw is canonical (no blank
// line, no surrounding blanks, no CR) and raw ends with a newline, and
// then only adds each line to sum: raw is then exactly the lines the
// encoder would write one by one.
func canonicalJSONL(raw []byte, sum *connectors.Checksum) bool {
	if len(raw) == 0 || raw[len(raw)-1] != '\n' {
		return false
	}
	var batch connectors.Checksum
	for rest := raw; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		line := rest[:i]
		rest = rest[i+1:]
		if len(line) == 0 || len(normalizeLine(line)) != len(line) {
			return false
		}
		batch.Add(line)
	}
	sum.Merge(batch)
	return true
}

// csvEncoder writes CSV with a header line per file: CSV bytes with the
// same columns pass through; JSONL objects and Arrow rows are encoded with
// encoding/csv, nulls as empty fields and non-string values as their JSON
// text.
type csvEncoder struct {
	w       *bufio.Writer
	sum     *connectors.Checksum
	columns []string
	index   map[string]int
	buf     bytes.Buffer
	cw      *csv.Writer
	fields  []string
	scratch []byte
}

func (e *csvEncoder) start(columns []string) error {
	if e.columns != nil {
		if !slices.Equal(columns, e.columns) {
			return fmt.Errorf("columns %q differ from the task's first batch %q", columns, e.columns)
		}
		return nil
	}
	e.columns = slices.Clone(columns)
	e.index = map[string]int{}
	for i, c := range e.columns {
		e.index[c] = i
	}
	e.cw = csv.NewWriter(&e.buf)
	e.fields = make([]string, len(columns))
	if err := e.cw.Write(e.columns); err != nil {
		return err
	}
	e.cw.Flush()
	_, err := e.w.Write(e.buf.Bytes())
	e.buf.Reset()
	return err
}

// record encodes e.fields as one record.
func (e *csvEncoder) record() error {
	if err := e.cw.Write(e.fields); err != nil {
		return err
	}
	e.cw.Flush()
	if err := e.cw.Error(); err != nil {
		return err
	}
	e.sum.Add(bytes.TrimSuffix(e.buf.Bytes(), []byte{'\n'}))
	_, err := e.w.Write(e.buf.Bytes())
	e.buf.Reset()
	return err
}

func (e *csvEncoder) write(b connectors.Batch) error {
	switch {
	case b.Record != nil:
		sc := b.Record.Schema()
		names := make([]string, sc.NumFields())
		renders := make([]valueRenderer, sc.NumFields())
		for i, f := range sc.Fields() {
			names[i] = f.Name
			renders[i] = newValueRenderer(f, b.Record.Column(i))
		}
		if err := e.start(names); err != nil {
			return err
		}
		for r := 0; r < int(b.Record.NumRows()); r++ {
			for c := range names {
				e.fields[c], e.scratch = csvText(renders[c], b.Record.Column(c), r, e.scratch)
			}
			if err := e.record(); err != nil {
				return err
			}
		}
		return nil
	case b.Format == connectors.FormatCSV:
		if err := e.start(b.Columns); err != nil {
			return err
		}
		// Straight through; the source wrote canonical records. A source
		// that summed them while splitting them saves a scan.
		if b.Checksum != nil && b.Checksum.Rows == b.Rows {
			e.sum.Merge(*b.Checksum)
		} else if err := forEachCSVRecord(b.Raw, func(rec []byte) error {
			e.sum.Add(rec)
			return nil
		}); err != nil {
			return err
		}
		if _, err := e.w.Write(b.Raw); err != nil {
			return err
		}
		if len(b.Raw) > 0 && b.Raw[len(b.Raw)-1] != '\n' {
			return e.w.WriteByte('\n')
		}
		return nil
	case b.Format == connectors.FormatJSONL:
		return forEachLine(b.Raw, func(n int, line []byte) error {
			ms, err := parseObject(line)
			if err != nil {
				return &connectors.RowError{Location: b.Position, Row: int64(n), Err: err}
			}
			if e.columns == nil {
				keys := make([]string, len(ms))
				for i, m := range ms {
					keys[i] = m.key
				}
				if err := e.start(keys); err != nil {
					return err
				}
			}
			clear(e.fields)
			for _, m := range ms {
				i, ok := e.index[m.key]
				if !ok {
					return &connectors.RowError{Location: b.Position, Row: int64(n), Field: m.key,
						Err: fmt.Errorf("field is not a column of the CSV header %q", e.columns)}
				}
				e.fields[i] = jsonFieldText(m.val)
			}
			return e.record()
		})
	}
	return fmt.Errorf("cannot write %s batches as csv", b.Format)
}

// jsonFieldText is the CSV text of a JSON value: a string's contents, empty
// for null, the JSON text of anything else.
func jsonFieldText(raw []byte) string {
	switch raw[0] {
	case 'n':
		return ""
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err == nil {
			return s
		}
	}
	return string(raw)
}

func (e *csvEncoder) finish() error { return nil }

// parquetEncoder writes Parquet (zstd) through pqarrow. Arrow records are
// written as they are; JSONL and CSV bytes are decoded with a schema
// inferred from the task's first batch. The checksum is over each row
// rendered as a canonical JSONL line.
type parquetEncoder struct {
	w       *bufio.Writer
	sum     *connectors.Checksum
	fw      *pqarrow.FileWriter
	schema  *arrow.Schema
	dec     *rowDecoder
	scratch []byte
}

func parquetProps() (*parquet.WriterProperties, pqarrow.ArrowWriterProperties) {
	return parquet.NewWriterProperties(
			parquet.WithCompression(compress.Codecs.Zstd),
			parquet.WithMaxRowGroupLength(1<<20),
		),
		pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema())
}

func (e *parquetEncoder) open(sc *arrow.Schema) error {
	props, aprops := parquetProps()
	fw, err := pqarrow.NewFileWriter(sc, e.w, props, aprops)
	if err != nil {
		return fmt.Errorf("start parquet file: %w", err)
	}
	e.fw, e.schema = fw, sc
	return nil
}

func (e *parquetEncoder) write(b connectors.Batch) error {
	rec := b.Record
	if rec == nil {
		if e.dec == nil {
			d, err := newRowDecoder(b)
			if err != nil {
				return err
			}
			e.dec = d
		}
		var err error
		if rec, err = e.dec.decode(b); err != nil {
			return err
		}
		defer rec.Release()
	}
	if e.fw == nil {
		if err := e.open(rec.Schema()); err != nil {
			return err
		}
	}
	if !rec.Schema().Equal(e.schema) {
		return fmt.Errorf("batch at %s has schema %s, the task started with %s", b.Position, rec.Schema(), e.schema)
	}
	r := newRowRenderer(rec)
	for i := 0; i < int(rec.NumRows()); i++ {
		e.scratch = r.appendRow(e.scratch[:0], i)
		e.sum.Add(e.scratch)
	}
	return e.fw.WriteBuffered(rec)
}

func (e *parquetEncoder) finish() error {
	if e.fw == nil {
		// No rows: a valid Parquet file with no columns.
		if err := e.open(arrow.NewSchema(nil, nil)); err != nil {
			return err
		}
	}
	return e.fw.Close()
}

// taskFileName returns the final name of a task's output.
func taskFileName(task, format string) string { return "part-" + task + "." + format }

// tmpFileName returns the temporary name of one attempt's output.
func tmpFileName(t connectors.TaskRef) string {
	return fmt.Sprintf(".part-%s.%d.tmp", t.TaskID, t.Attempt)
}

func stagingDir(root, run string) string { return filepath.Join(root, "_staging", run) }
