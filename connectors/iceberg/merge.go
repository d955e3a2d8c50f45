package iceberg

import (
	"context"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/sluicehq/sluice/connectors"
)

// # Merge by key
//
// A window merged by key (CommitRequest.Merge) is committed copy-on-write,
// as one overwrite snapshot: the commit reads the run's rows and keeps,
// for each key, the one with the greatest delta value (the later one of a
// tie); it then reads the table's live data files, and each file holding
// a key of the window whose row is not newer than the window's is
// rewritten without the rows of those keys. The snapshot removes those
// files and adds their rewrites and the window's winning rows that are not
// delete markers: the run's own files where all their rows win, rewrites
// of them otherwise. A key whose row in the table is newer keeps it. The
// rewrites are written as the run's files ("_merge" task), so Abort and
// the commit's tidying treat them as the run's. The window's keys are held
// in memory during the commit (a key's text and its delta value each);
// the table's files are read whole, one at a time.

// mergeTask is the task id under which a merge commit writes its rewrites.
const mergeTask = "_merge"

// winner is the row of a key that the window offers.
type winner struct {
	file, rec, row int // where the row lies among the run's files
	delta          int64
	deleted        bool
	lost           bool // the table's row of the key is newer
}

// mergeCols locates a merge's columns in a record.
type mergeCols struct {
	key            []int
	delta, deleted int // deleted -1: none
}

func mergeColumns(sc *arrow.Schema, req connectors.CommitRequest) (mergeCols, error) {
	find := func(name string) (int, error) {
		idx := sc.FieldIndices(name)
		if len(idx) == 0 {
			return 0, connectors.Permanent(fmt.Errorf("merge by key: the table has no column %q", name))
		}
		return idx[0], nil
	}
	var mc mergeCols
	var err error
	for _, k := range req.Merge.Key {
		i, err := find(k)
		if err != nil {
			return mc, err
		}
		mc.key = append(mc.key, i)
	}
	if mc.delta, err = find(req.DeltaColumn); err != nil {
		return mc, err
	}
	mc.deleted = -1
	if req.Merge.Deleted != "" {
		if mc.deleted, err = find(req.Merge.Deleted); err != nil {
			return mc, err
		}
	}
	return mc, nil
}

// keyOf renders row r's key as text, NULL apart from every value.
func (mc mergeCols) keyOf(rec arrow.RecordBatch, r int, buf []byte) []byte {
	buf = buf[:0]
	for _, c := range mc.key {
		if col := rec.Column(c); col.IsNull(r) {
			buf = append(buf, "\x00null"...)
		} else {
			buf = append(buf, col.ValueStr(r)...)
		}
		buf = append(buf, 0x1f)
	}
	return buf
}

// deltaOf returns row r's delta value as an ordered integer.
func (mc mergeCols) deltaOf(rec arrow.RecordBatch, r int) (int64, error) {
	col := rec.Column(mc.delta)
	if col.IsNull(r) {
		return 0, connectors.Permanent(fmt.Errorf("merge by key: a row has no delta value"))
	}
	switch a := col.(type) {
	case *array.Timestamp:
		return int64(a.Value(r)), nil
	case *array.Date32:
		return int64(a.Value(r)), nil
	case *array.Date64:
		return int64(a.Value(r)), nil
	case *array.Int64:
		return a.Value(r), nil
	case *array.Int32:
		return int64(a.Value(r)), nil
	case *array.Int16:
		return int64(a.Value(r)), nil
	}
	return 0, connectors.Permanent(fmt.Errorf("merge by key: a delta column of type %s cannot order versions", col.DataType()))
}

// deletedOf tells whether row r is a delete marker.
func (mc mergeCols) deletedOf(rec arrow.RecordBatch, r int) bool {
	if mc.deleted < 0 {
		return false
	}
	col := rec.Column(mc.deleted)
	if col.IsNull(r) {
		return false
	}
	if b, ok := col.(*array.Boolean); ok {
		return b.Value(r)
	}
	switch strings.ToLower(col.ValueStr(r)) {
	case "t", "true", "1":
		return true
	}
	return false
}

// readFile calls fn with each record of a data file, as the table's
// schema reads it (deletes applied when task carries them).
func readFile(ctx context.Context, tbl *table.Table, task table.FileScanTask, fn func(arrow.RecordBatch) error) error {
	scan := tbl.Scan(table.WithArrowBatchSize(64 << 10))
	defer scan.Close()
	_, recs, err := scan.ReadTasks(ctx, []table.FileScanTask{task})
	if err != nil {
		return err
	}
	for rec, err := range recs {
		if err != nil {
			return err
		}
		err = fn(rec)
		rec.Release()
		if err != nil {
			return err
		}
	}
	return nil
}

// mergeFiles works out the copy-on-write merge of the run's files into tbl
// as loaded (see Merge by key): the table's files to remove, the files to
// add (run files kept whole, and the rewrites), and the table's rows the
// merge removes for delete markers.
func (s *Sink) mergeFiles(ctx context.Context, tbl *table.Table, req connectors.CommitRequest, files []iceberg.DataFile) (olds, news []iceberg.DataFile, deleted int64, err error) {
	as, err := arrowSchema(tbl.Schema())
	if err != nil {
		return nil, nil, 0, connectors.Permanent(err)
	}
	mc, err := mergeColumns(as, req)
	if err != nil {
		return nil, nil, 0, err
	}
	fileTask := func(f iceberg.DataFile) table.FileScanTask {
		return table.FileScanTask{File: f, Start: 0, Length: f.FileSizeBytes()}
	}
	// The window's winning row of each key.
	win := map[string]*winner{}
	var buf []byte
	for fi, f := range files {
		ri := 0
		err := readFile(ctx, tbl, fileTask(f), func(rec arrow.RecordBatch) error {
			for r := range int(rec.NumRows()) {
				d, err := mc.deltaOf(rec, r)
				if err != nil {
					return err
				}
				buf = mc.keyOf(rec, r, buf)
				if w := win[string(buf)]; w == nil || d >= w.delta {
					win[string(buf)] = &winner{file: fi, rec: ri, row: r, delta: d, deleted: mc.deletedOf(rec, r)}
				}
			}
			ri++
			return nil
		})
		if err != nil {
			return nil, nil, 0, fmt.Errorf("merge by key: read the run's file %s: %w", f.FilePath(), err)
		}
	}
	var out *taskWriter
	write := func(rec arrow.RecordBatch, keep []bool) error {
		mask := array.NewBooleanBuilder(s.mem)
		defer mask.Release()
		mask.AppendValues(keep, nil)
		m := mask.NewArray()
		defer m.Release()
		kept, err := compute.FilterRecordBatch(ctx, rec, m, compute.DefaultFilterOptions())
		if err != nil {
			return err
		}
		defer kept.Release()
		if kept.NumRows() == 0 {
			return nil
		}
		if out == nil {
			w, err := s.OpenTask(ctx, connectors.TaskRef{RunID: req.RunID, TaskID: mergeTask, Attempt: 1, Pipeline: req.Pipeline})
			if err != nil {
				return err
			}
			out = w.(*taskWriter)
		}
		return out.Write(ctx, connectors.Batch{Record: kept, Rows: kept.NumRows()})
	}
	defer func() {
		if out != nil && err != nil {
			out.Abort(context.WithoutCancel(ctx))
		}
	}()
	// rewrite writes the rows of a file that keep keeps.
	rewrite := func(task table.FileScanTask, keep func(rec arrow.RecordBatch, ri, r int) (bool, error)) error {
		ri := 0
		return readFile(ctx, tbl, task, func(rec arrow.RecordBatch) error {
			mask := make([]bool, rec.NumRows())
			for r := range mask {
				k, err := keep(rec, ri, r)
				if err != nil {
					return err
				}
				mask[r] = k
			}
			ri++
			return write(rec, mask)
		})
	}
	// The table's files: each holding a key the window replaces is
	// rewritten without it. A first read finds the keys, a second one
	// writes what stays.
	if len(win) > 0 && tbl.CurrentSnapshot() != nil {
		scan := tbl.Scan()
		tasks, err := scan.PlanFiles(ctx)
		scan.Close()
		if err != nil {
			return nil, nil, 0, fmt.Errorf("merge by key: plan the table's files: %w", err)
		}
		replaced := func(rec arrow.RecordBatch, r int) (*winner, bool, error) {
			w := win[string(mc.keyOf(rec, r, buf))]
			if w == nil {
				return nil, false, nil
			}
			d, err := mc.deltaOf(rec, r)
			return w, err == nil && d <= w.delta, err
		}
		for _, task := range tasks {
			drop := false
			err := readFile(ctx, tbl, task, func(rec arrow.RecordBatch) error {
				for r := range int(rec.NumRows()) {
					w, repl, err := replaced(rec, r)
					switch {
					case err != nil:
						return err
					case repl:
						drop = true
						if w.deleted {
							deleted++
						}
					case w != nil:
						w.lost = true // the table's row is newer
					}
				}
				return nil
			})
			if err == nil && drop {
				olds = append(olds, task.File)
				err = rewrite(task, func(rec arrow.RecordBatch, _, r int) (bool, error) {
					_, repl, err := replaced(rec, r)
					return !repl, err
				})
			}
			if err != nil {
				return nil, nil, 0, fmt.Errorf("merge by key: rewrite %s: %w", task.File.FilePath(), err)
			}
		}
	}
	// The window's rows: a file whose rows all win is added as it is.
	for fi, f := range files {
		keep := func(rec arrow.RecordBatch, ri, r int) (bool, error) {
			w := win[string(mc.keyOf(rec, r, buf))]
			return w.file == fi && w.rec == ri && w.row == r && !w.deleted && !w.lost, nil
		}
		whole, ri := true, 0
		err := readFile(ctx, tbl, fileTask(f), func(rec arrow.RecordBatch) error {
			for r := range int(rec.NumRows()) {
				k, _ := keep(rec, ri, r)
				whole = whole && k
			}
			ri++
			return nil
		})
		switch {
		case err != nil:
		case whole:
			news = append(news, f)
		default:
			err = rewrite(fileTask(f), keep)
		}
		if err != nil {
			return nil, nil, 0, fmt.Errorf("merge by key: the run's file %s: %w", f.FilePath(), err)
		}
	}
	if out != nil {
		o, err := out.Close(ctx)
		out = nil
		if err != nil {
			return nil, nil, 0, fmt.Errorf("merge by key: close the rewrites: %w", err)
		}
		written, err := s.readTasks(ctx, tbl, connectors.CommitRequest{RunID: req.RunID, Tasks: []connectors.TaskOutput{o}})
		if err != nil {
			return nil, nil, 0, err
		}
		news = append(news, written...)
	}
	return olds, news, deleted, nil
}
