package files

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/arrowconv"
	"github.com/sluicehq/sluice/protocol"
)

// encoder writes batches in one output format and sums the checksum of the
// rows it writes.
type encoder interface {
	write(b connectors.Batch) error
	// finish writes what is buffered (a Parquet footer) to the writer.
	finish() error
	// release frees what the encoder holds; it is called once, last.
	release()
}

// newEncoder returns the encoder of a task's output in format. typed is
// the Arrow schema of the run's typed columns (typedSchema), nil when the
// source described none: JSONL and Parquet outputs then convert the rows
// by these types, CSV ignores them.
func newEncoder(format string, w *bufio.Writer, sum *connectors.Checksum, typed *arrow.Schema, mem memory.Allocator) (encoder, error) {
	switch format {
	case "csv":
		return &csvEncoder{w: w, sum: sum}, nil
	case "parquet":
		e := &parquetEncoder{w: w, sum: sum, mem: mem, typed: typed}
		if typed != nil {
			conv, err := arrowconv.NewBuilder(mem, typed)
			if err != nil {
				return nil, err
			}
			e.conv = conv
		}
		return e, nil
	}
	e := &jsonlEncoder{w: w, sum: sum}
	if typed != nil {
		lines, err := arrowconv.NewLines(typed)
		if err != nil {
			return nil, err
		}
		e.lines = lines
	}
	return e, nil
}

// typedSchema returns the Arrow schema that typed outputs of a run with
// schema sc have (nil when sc is nil): the columns as arrowconv.Field
// maps them, except the decimals that have no fixed-size form (a bare
// numeric, or more than 38 digits), which stay strings holding every
// digit.
func typedSchema(sc *connectors.Schema) (*arrow.Schema, error) {
	if sc == nil {
		return nil, nil
	}
	cols := slices.Clone(sc.Columns)
	for i := range cols {
		cols[i] = exactColumn(cols[i])
	}
	return arrowconv.Schema(&connectors.Schema{Columns: cols})
}

// exactColumn maps a decimal without a fixed-size form to a string.
func exactColumn(c connectors.Column) connectors.Column {
	switch {
	case c.Type == protocol.TypeDecimal && (c.Precision == 0 || c.Precision > arrowconv.MaxDecimalPrecision):
		c.Type, c.Precision, c.Scale = protocol.TypeString, 0, 0
	case c.Type == protocol.TypeList && c.Elem != nil:
		e := exactColumn(*c.Elem)
		c.Elem = &e
	}
	return c
}

// checkRows refuses a batch whose rows differ from the rows it says.
func checkRows(b connectors.Batch, n int64) error {
	if b.Rows != 0 && n != b.Rows {
		return connectors.Permanent(fmt.Errorf("batch at %s says %d rows, holds %d", b.Position, b.Rows, n))
	}
	return nil
}

// jsonlEncoder writes JSONL: JSONL bytes pass through; CSV records become
// typed lines (lines set) or objects of string values; Arrow rows are
// rendered in their JSON forms.
type jsonlEncoder struct {
	w       *bufio.Writer
	sum     *connectors.Checksum
	lines   *arrowconv.Lines
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
		r := arrowconv.NewRowRenderer(b.Record)
		for i := 0; i < int(b.Record.NumRows()); i++ {
			e.scratch = r.AppendRow(e.scratch[:0], i)
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
	case b.Format == connectors.FormatCSV && e.lines != nil:
		var n int64
		var err error
		e.scratch, n, err = e.lines.AppendCSV(e.scratch[:0], b.Raw, b.Columns, b.Position, 1, e.sum)
		if err != nil {
			return err
		}
		if err := checkRows(b, n); err != nil {
			return err
		}
		_, err = e.w.Write(e.scratch)
		return err
	case b.Format == connectors.FormatCSV:
		keys := make([][]byte, len(b.Columns))
		for i, c := range b.Columns {
			if i > 0 {
				keys[i] = append(keys[i], ',')
			}
			keys[i] = append(arrowconv.AppendJSONString(keys[i], c), ':')
		}
		return forEachCSV(b, func(_ int, rec []string) error {
			e.scratch = append(e.scratch[:0], '{')
			for i, s := range rec {
				e.scratch = arrowconv.AppendJSONString(append(e.scratch, keys[i]...), s)
			}
			e.scratch = append(e.scratch, '}')
			return e.line(e.scratch)
		})
	}
	return fmt.Errorf("cannot write %s batches as jsonl", b.Format)
}

func (e *jsonlEncoder) finish() error { return nil }

func (e *jsonlEncoder) release() {}

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
		renders := make([]arrowconv.ValueRenderer, sc.NumFields())
		for i, f := range sc.Fields() {
			names[i] = f.Name
			renders[i] = arrowconv.NewValueRenderer(f, b.Record.Column(i))
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

func (e *csvEncoder) release() {}

// Typed rows are converted into records of up to recordRows rows (or
// recordTextBytes of text) before they are written.
const (
	recordRows      = 64 << 10
	recordTextBytes = 32 << 20
)

// parquetEncoder writes Parquet (zstd) through pqarrow. Arrow records are
// written as they are. CSV and JSONL bytes are converted by the run's
// typed schema when there is one (conv), else decoded with a schema
// inferred from the task's first batch. The checksum is over each row
// rendered as a JSON line, the line a typed JSONL output of the row holds.
type parquetEncoder struct {
	w       *bufio.Writer
	sum     *connectors.Checksum
	mem     memory.Allocator
	fw      *pqarrow.FileWriter
	schema  *arrow.Schema
	typed   *arrow.Schema
	conv    *arrowconv.Builder
	dec     *rowDecoder
	scratch []byte
}

// ParquetProperties returns the properties the sink writes a Parquet file
// with whose first record is first (zstd level 1, row groups of up to 1M
// rows, an encoding per column chosen by arrowconv.WriterProperties, the
// Arrow schema stored), buffers from mem (nil: Go's allocator): for a
// benchmark that writes as the sink does.
func ParquetProperties(first arrow.RecordBatch, mem memory.Allocator) (*parquet.WriterProperties, pqarrow.ArrowWriterProperties, error) {
	opts := []pqarrow.WriterOption{pqarrow.WithStoreSchema()}
	if mem != nil {
		opts = append(opts, pqarrow.WithAllocator(mem))
	}
	arrp := pqarrow.NewArrowWriterProperties(opts...)
	props, err := arrowconv.WriterProperties(first.Schema(), first, arrp, arrowconv.ParquetConfig{
		Codec: compress.Codecs.Zstd, Level: 1, Mem: mem,
		Extra: []parquet.WriterProperty{parquet.WithMaxRowGroupLength(1 << 20)},
	})
	return props, arrp, err
}

func (e *parquetEncoder) open(first arrow.RecordBatch) error {
	sc := first.Schema()
	props, arrp, err := ParquetProperties(first, e.mem)
	if err != nil {
		return fmt.Errorf("start parquet file: %w", err)
	}
	fw, err := pqarrow.NewFileWriter(sc, e.w, props, arrp)
	if err != nil {
		return fmt.Errorf("start parquet file: %w", err)
	}
	e.fw, e.schema = fw, sc
	return nil
}

func (e *parquetEncoder) write(b connectors.Batch) error {
	switch {
	case b.Record != nil:
		if err := e.flush(); err != nil {
			return err
		}
		return e.writeRecord(b.Record, b.Position)
	case e.conv != nil:
		var n int64
		var err error
		switch b.Format {
		case connectors.FormatCSV:
			n, err = e.conv.AppendCSV(b.Raw, b.Columns, b.Position, 1, nil)
		case connectors.FormatJSONL:
			n, err = e.conv.AppendJSONL(b.Raw, b.Position, 1, nil)
		default:
			return fmt.Errorf("cannot write %s batches as parquet", b.Format)
		}
		if err != nil {
			return err
		}
		if err := checkRows(b, n); err != nil {
			return err
		}
		if e.conv.Len() >= recordRows || e.conv.TextBytes() >= recordTextBytes {
			return e.flush()
		}
		return nil
	}
	if e.dec == nil {
		d, err := newRowDecoder(b)
		if err != nil {
			return err
		}
		e.dec = d
	}
	rec, err := e.dec.decode(b)
	if err != nil {
		return err
	}
	defer rec.Release()
	return e.writeRecord(rec, b.Position)
}

// flush writes the rows converted so far, if any.
func (e *parquetEncoder) flush() error {
	if e.conv == nil || e.conv.Len() == 0 {
		return nil
	}
	rec := e.conv.NewRecord()
	defer rec.Release()
	return e.writeRecord(rec, "")
}

// writeRecord sums and writes one record; position says where it came
// from.
func (e *parquetEncoder) writeRecord(rec arrow.RecordBatch, position string) error {
	if e.fw == nil {
		if err := e.open(rec); err != nil {
			return err
		}
	}
	if !rec.Schema().Equal(e.schema) {
		return fmt.Errorf("batch at %s has schema %s, the task started with %s", position, rec.Schema(), e.schema)
	}
	r := arrowconv.NewRowRenderer(rec)
	for i := 0; i < int(rec.NumRows()); i++ {
		e.scratch = r.AppendRow(e.scratch[:0], i)
		e.sum.Add(e.scratch)
	}
	return e.fw.WriteBuffered(rec)
}

func (e *parquetEncoder) finish() error {
	if err := e.flush(); err != nil {
		return err
	}
	if e.fw == nil {
		// No rows: a valid Parquet file of the typed schema, or with no
		// columns.
		sc := e.typed
		if sc == nil {
			sc = arrow.NewSchema(nil, nil)
		}
		rec := emptyRecord(sc, e.mem)
		defer rec.Release()
		if err := e.open(rec); err != nil {
			return err
		}
	}
	return e.fw.Close()
}

func (e *parquetEncoder) release() {
	if e.conv != nil {
		e.conv.Release()
		e.conv = nil
	}
}
