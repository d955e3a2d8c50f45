package iceberg

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/codec"
	"github.com/apache/iceberg-go/table"

	"github.com/sluicehq/sluice/connectors"
)

// The snapshot summary properties a commit writes: which run made the
// snapshot (a repeated commit finds it), its pipeline, its version (full
// loads), its mode, window, rows and checksum.
const (
	propRun      = "sluice.run"
	propPipeline = "sluice.pipeline"
	propVersion  = "sluice.version"
	propMode     = "sluice.mode"
	propWindow   = "sluice.window"
	propRows     = "sluice.rows"
	propChecksum = "sluice.checksum"
	// propDelta is the delta column a window was committed by: its rows
	// are told apart by their values, so a compaction may mix them with
	// other windows' (a window without one is replaced by its files).
	propDelta = "sluice.delta_column"
	// propDeleted counts the table's rows a merge removed for delete
	// markers.
	propDeleted = "sluice.deleted"
)

const (
	modeReplace = "replace"
	modeAppend  = "append"
)

// Commit publishes a run as one Iceberg transaction on the table's main
// branch: a full load (ModeReplace) as an overwrite snapshot whose data
// files are exactly the run's; a run by position (ModeAppend without a
// window) as an append of its files; an incremental run (ModeAppend) deletes the
// rows of its window (by the delta column: files wholly inside are
// dropped, files partly inside rewritten without those rows) and appends
// the run's files, or, without a delta column, replaces the files an
// earlier commit of the same window added. A commit that another writer
// beats is reloaded and tried again, up to commit_attempts times. A
// commit repeated after a crash finds the snapshot its run made (by the
// sluice.run summary property) and changes nothing more. Afterwards the
// run's staged objects that the table does not reference are deleted,
// and a full load expires the versions beyond keep_versions.
func (s *Sink) Commit(ctx context.Context, req connectors.CommitRequest) (connectors.CommitResult, error) {
	res := connectors.CommitResult{Location: s.cfg.Table}
	if req.Mode == connectors.ModeReplace && req.Version <= 0 {
		return res, connectors.Permanent(fmt.Errorf("commit run %s to %s: version %d is not positive", req.RunID, s.cfg.Table, req.Version))
	}
	if err := s.commit(ctx, req); err != nil {
		return res, fmt.Errorf("commit run %s to %s: %w", req.RunID, s.cfg.Table, err)
	}
	return res, nil
}

func (s *Sink) commit(ctx context.Context, req connectors.CommitRequest) error {
	l, tbl, err := s.load(ctx)
	if err != nil {
		return err
	}
	if tbl == nil {
		if tbl, err = s.prepare(ctx, req.Schema); err != nil {
			return err
		}
	}
	if len(runSnapshots(tbl, req.RunID)) > 0 {
		return s.afterCommit(ctx, tbl, req, nil)
	}
	files, err := s.readTasks(ctx, tbl, req)
	if err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		base := tbl.CurrentSnapshot()
		next, added, err := s.commitOnce(ctx, tbl, req, files)
		if err == nil {
			return s.afterCommit(ctx, next, req, added)
		}
		// Whether the commit lost a race, failed, or succeeded without
		// saying so, the table tells.
		fresh, lerr := l.load(ctx)
		if lerr != nil || fresh == nil {
			return err
		}
		if len(runSnapshots(fresh, req.RunID)) > 0 {
			return s.afterCommit(ctx, fresh, req, nil)
		}
		if now := fresh.CurrentSnapshot(); sameSnapshot(base, now) || connectors.IsPermanent(err) {
			return err
		}
		if attempt >= s.cfg.commitAttempts() {
			return fmt.Errorf("another writer committed to the table first, %d times: %w", attempt, err)
		}
		s.retries.Add(1)
		wait := time.Duration(50+rand.IntN(100)) * time.Millisecond << min(attempt-1, 5)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		// Tried on the table as the wait left it: a writer that commits
		// more often than the wait would otherwise win every time.
		if again, err := l.load(ctx); err == nil && again != nil {
			fresh = again
		}
		tbl = fresh
	}
}

func sameSnapshot(a, b *table.Snapshot) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.SnapshotID == b.SnapshotID
}

// commitOnce tries the run's transaction on tbl as loaded, asserting that
// the main branch has not moved since. It returns the data files the
// snapshot added.
func (s *Sink) commitOnce(ctx context.Context, tbl *table.Table, req connectors.CommitRequest, files []iceberg.DataFile) (*table.Table, []iceberg.DataFile, error) {
	txn := tbl.NewTransaction()
	if err := txn.AssertRefSnapshotID(table.MainBranch); err != nil {
		return nil, nil, err
	}
	props := snapshotProps(req)
	var err error
	switch {
	case req.Mode == connectors.ModeReplace:
		var current []iceberg.DataFile
		if current, err = liveFiles(ctx, tbl, nil); err != nil {
			return nil, nil, err
		}
		if len(files) == 0 {
			// A full load of no rows is still a version: one empty file.
			var f iceberg.DataFile
			if f, err = s.emptyFile(ctx, tbl, req.RunID); err != nil {
				return nil, nil, err
			}
			files = []iceberg.DataFile{f}
		}
		if len(current) == 0 {
			err = txn.AddDataFiles(ctx, files, props)
		} else {
			err = txn.ReplaceDataFilesWithDataFiles(ctx, current, files, props)
		}
	case req.Merge != nil:
		if req.DeltaColumn == "" {
			return nil, nil, connectors.Permanent(fmt.Errorf("a merge by key needs a delta column"))
		}
		var olds []iceberg.DataFile
		var deleted int64
		if olds, files, deleted, err = s.mergeFiles(ctx, tbl, req, files); err != nil {
			return nil, nil, err
		}
		props[propDeleted] = strconv.FormatInt(deleted, 10)
		if len(olds) > 0 || len(files) > 0 {
			err = txn.ReplaceDataFilesWithDataFiles(ctx, olds, files, props)
		}
	case req.Window == nil:
		// A run by position (incremental.by): its files are appended to
		// the table's; a run that read nothing changes nothing.
		if len(files) == 0 {
			return tbl, files, nil
		}
		err = txn.AddDataFiles(ctx, files, props)
	case req.DeltaColumn != "":
		var filter iceberg.BooleanExpression
		if filter, err = windowFilter(tbl.Schema(), req.DeltaColumn, *req.Window); err != nil {
			return nil, nil, err
		}
		if err = txn.Delete(ctx, filter, props); err == nil && len(files) > 0 {
			err = txn.AddDataFiles(ctx, files, props)
		}
	default:
		var old []iceberg.DataFile
		if old, err = windowFiles(ctx, tbl, props[propWindow]); err != nil {
			return nil, nil, err
		}
		switch {
		case len(old) > 0:
			err = txn.ReplaceDataFilesWithDataFiles(ctx, old, files, props)
		case len(files) > 0:
			err = txn.AddDataFiles(ctx, files, props)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	next, err := txn.Commit(ctx)
	return next, files, err
}

func snapshotProps(req connectors.CommitRequest) iceberg.Properties {
	var sum connectors.Checksum
	for _, t := range req.Tasks {
		sum.Merge(t.Checksum)
	}
	props := iceberg.Properties{
		propRun: req.RunID, propPipeline: req.Pipeline,
		propRows: strconv.FormatInt(sum.Rows, 10), propChecksum: sum.String(),
		propMode: modeReplace,
	}
	if req.Mode == connectors.ModeAppend {
		props[propMode] = modeAppend
		switch {
		case req.Window == nil:
		case req.Window.Values:
			props[propWindow] = strconv.FormatInt(req.Window.Lo, 10) + "/" + strconv.FormatInt(req.Window.Hi, 10)
		default:
			props[propWindow] = req.Window.From.UTC().Format(time.RFC3339Nano) + "/" + req.Window.To.UTC().Format(time.RFC3339Nano)
		}
		if req.DeltaColumn != "" {
			props[propDelta] = req.DeltaColumn
		}
	} else {
		props[propVersion] = strconv.FormatInt(req.Version, 10)
	}
	return props
}

// windowFilter selects the rows of a window by the delta column, a date
// or a timestamp, or an integer for a window of values.
func windowFilter(sc *iceberg.Schema, col string, w connectors.Window) (iceberg.BooleanExpression, error) {
	f, ok := sc.FindFieldByName(col)
	if !ok {
		return nil, connectors.Permanent(fmt.Errorf("the table has no delta column %q", col))
	}
	ref := iceberg.Reference(col)
	if w.Values {
		switch f.Type.(type) {
		case iceberg.Int64Type:
			return iceberg.NewAnd(iceberg.GreaterThanEqual(ref, w.Lo), iceberg.LessThan(ref, w.Hi)), nil
		case iceberg.Int32Type:
			// Bounds beyond int32 are clamped: every value lies inside them.
			lo, hi := max(w.Lo, math.MinInt32), min(w.Hi, math.MaxInt32+1)
			if lo >= hi {
				return iceberg.AlwaysFalse{}, nil
			}
			ge := iceberg.BooleanExpression(iceberg.GreaterThanEqual(ref, int32(lo)))
			if lo == math.MinInt32 {
				ge = iceberg.AlwaysTrue{}
			}
			if hi == math.MaxInt32+1 {
				return ge, nil
			}
			return iceberg.NewAnd(ge, iceberg.LessThan(ref, int32(hi))), nil
		}
		return nil, connectors.Permanent(fmt.Errorf("delta column %q is %s: a window of integer values needs an int or long column", col, f.Type))
	}
	switch f.Type.(type) {
	case iceberg.TimestampType, iceberg.TimestampTzType:
		return iceberg.NewAnd(
			iceberg.GreaterThanEqual(ref, iceberg.Timestamp(w.From.UnixMicro())),
			iceberg.LessThan(ref, iceberg.Timestamp(w.To.UnixMicro()))), nil
	case iceberg.DateType:
		// A date d (midnight UTC) lies in [from, to) when
		// ceilDay(from) <= d < ceilDay(to).
		return iceberg.NewAnd(
			iceberg.GreaterThanEqual(ref, ceilDay(w.From)),
			iceberg.LessThan(ref, ceilDay(w.To))), nil
	}
	return nil, connectors.Permanent(fmt.Errorf("delta column %q is %s: a window needs a date or timestamp column", col, f.Type))
}

// ceilDay returns the first date whose midnight (UTC) is at or after t.
func ceilDay(t time.Time) iceberg.Date {
	sec := t.Unix()
	d := sec / 86400
	if sec%86400 < 0 {
		d-- // floor towards minus infinity
	}
	if sec-d*86400 > 0 || t.Nanosecond() > 0 {
		d++
	}
	return iceberg.Date(d)
}

// readTasks reads the manifests of the run's tasks and returns their data
// files, checked against what the tasks reported.
func (s *Sink) readTasks(ctx context.Context, tbl *table.Table, req connectors.CommitRequest) ([]iceberg.DataFile, error) {
	fs, err := tbl.FS(ctx)
	if err != nil {
		return nil, err
	}
	st := store{fs: fs}
	md := tbl.Metadata()
	var files []iceberg.DataFile
	for _, t := range req.Tasks {
		if t.Location == "" {
			if t.Rows == 0 {
				continue
			}
			return nil, connectors.Permanent(fmt.Errorf("a task output of %d rows without a location", t.Rows))
		}
		data, err := st.read(t.Location)
		if err != nil {
			return nil, fmt.Errorf("read task manifest %s: %w", t.Location, err)
		}
		var m taskManifest
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, connectors.Permanent(fmt.Errorf("task manifest %s: %w", t.Location, err))
		}
		if m.Run != req.RunID || m.Rows != t.Rows || m.Checksum != t.Checksum.String() {
			return nil, connectors.Permanent(fmt.Errorf("task manifest %s holds run %s, %d rows, checksum %s; the task reported run %s, %d rows, checksum %s",
				t.Location, m.Run, m.Rows, m.Checksum, req.RunID, t.Rows, t.Checksum))
		}
		sc := schemaByID(md, m.SchemaID)
		spec := md.PartitionSpecByID(m.SpecID)
		if sc == nil || spec == nil {
			return nil, connectors.Permanent(fmt.Errorf("task manifest %s: the table has no schema %d or partition spec %d", t.Location, m.SchemaID, m.SpecID))
		}
		var rows int64
		for _, f := range m.Files {
			df, err := codec.DecodeDataFile(f.Entry, *spec, sc, m.FormatVersion)
			if err != nil {
				return nil, connectors.Permanent(fmt.Errorf("task manifest %s: file %s: %w", t.Location, f.Path, err))
			}
			files = append(files, df)
			rows += df.Count()
		}
		if rows != m.Rows {
			return nil, connectors.Permanent(fmt.Errorf("task manifest %s: its files hold %d rows, the task %d", t.Location, rows, m.Rows))
		}
	}
	return files, nil
}

func schemaByID(md table.Metadata, id int) *iceberg.Schema {
	for _, sc := range md.Schemas() {
		if sc.ID == id {
			return sc
		}
	}
	return nil
}

// afterCommit tidies the run's data directory (deleting what the table
// does not reference: attempts that lost, manifests, uploads left by
// attempts that died) and, after a full load, expires the versions beyond
// keep_versions. files are the run's committed files; nil after a commit
// found done, when they are read from the run's snapshots. The commit
// stands whatever happens here: a failure is logged, and the next commit
// (or Abort) tidies again.
func (s *Sink) afterCommit(ctx context.Context, tbl *table.Table, req connectors.CommitRequest, files []iceberg.DataFile) error {
	var keep map[string]bool
	if files != nil {
		keep = make(map[string]bool, len(files))
		for _, f := range files {
			keep[normPath(f.FilePath())] = true
		}
	} else {
		var err error
		if keep, err = runFiles(ctx, tbl, req.RunID); err != nil {
			s.log.Warn("list the files of a committed run", "run", req.RunID, "err", err)
			return nil
		}
	}
	if req.Mode == connectors.ModeReplace {
		var err error
		if tbl, err = s.prune(ctx, tbl); err != nil {
			s.log.Warn("expire versions", "keep_versions", s.cfg.keepVersions(), "err", err)
		}
	}
	if err := tidyRun(ctx, tbl, req.RunID, keep); err != nil {
		s.log.Warn("delete the staged files of a committed run that the table does not reference", "run", req.RunID, "err", err)
	}
	return nil
}

// runSnapshots returns the snapshots a run made.
func runSnapshots(tbl *table.Table, runID string) []table.Snapshot {
	var out []table.Snapshot
	for _, sn := range tbl.Metadata().Snapshots() {
		if sn.Summary != nil && sn.Summary.Properties[propRun] == runID {
			out = append(out, sn)
		}
	}
	return out
}

// liveFiles returns the data files of the current snapshot; keep, when
// not nil, selects by the snapshot that added the file.
func liveFiles(ctx context.Context, tbl *table.Table, keep func(addedBy int64) bool) ([]iceberg.DataFile, error) {
	sn := tbl.CurrentSnapshot()
	if sn == nil {
		return nil, nil
	}
	return snapshotFiles(ctx, tbl, sn, keep)
}

func snapshotFiles(ctx context.Context, tbl *table.Table, sn *table.Snapshot, keep func(addedBy int64) bool) ([]iceberg.DataFile, error) {
	fs, err := tbl.FS(ctx)
	if err != nil {
		return nil, err
	}
	manifests, err := sn.Manifests(fs)
	if err != nil {
		return nil, fmt.Errorf("manifests of snapshot %d: %w", sn.SnapshotID, err)
	}
	var out []iceberg.DataFile
	for _, m := range manifests {
		if m.ManifestContent() != iceberg.ManifestContentData {
			continue
		}
		for e, err := range m.Entries(fs, true) {
			if err != nil {
				return nil, fmt.Errorf("manifest %s: %w", m.FilePath(), err)
			}
			if keep == nil || keep(e.SnapshotID()) {
				out = append(out, e.DataFile())
			}
		}
	}
	return out, nil
}

// windowFiles returns the live data files that commits of a window
// added, and those a compaction wrote for it.
func windowFiles(ctx context.Context, tbl *table.Table, window string) ([]iceberg.DataFile, error) {
	ids := map[int64]bool{}
	compacted := map[string]bool{}
	for _, sn := range tbl.Metadata().Snapshots() {
		if sn.Summary != nil && sn.Summary.Properties[propWindow] == window {
			ids[sn.SnapshotID] = true
		}
		for f, w := range compactedWindows(&sn) {
			if w == window {
				ids[sn.SnapshotID] = true
				compacted[f] = true
			}
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	files, err := liveFiles(ctx, tbl, func(id int64) bool { return ids[id] })
	if err != nil || len(compacted) == 0 {
		return files, err
	}
	// A compaction's snapshot added the files of other windows too.
	orig, err := origins(ctx, tbl, tbl.CurrentSnapshot())
	if err != nil {
		return nil, err
	}
	out := files[:0]
	for _, f := range files {
		p := normPath(f.FilePath())
		by := tbl.SnapshotByID(orig[p].addedBy)
		if compacted[p] || by == nil || by.Summary == nil || by.Summary.Properties[propMode] != modeCompact {
			out = append(out, f)
		}
	}
	return out, nil
}

// runFiles returns the paths of the data files a run's snapshots added.
func runFiles(ctx context.Context, tbl *table.Table, runID string) (map[string]bool, error) {
	keep := map[string]bool{}
	for _, sn := range runSnapshots(tbl, runID) {
		files, err := snapshotFiles(ctx, tbl, &sn, func(id int64) bool { return id == sn.SnapshotID })
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			keep[normPath(f.FilePath())] = true
		}
	}
	return keep, nil
}

// emptyFile writes a data file of no rows for a full load of none.
func (s *Sink) emptyFile(ctx context.Context, tbl *table.Table, runID string) (iceberg.DataFile, error) {
	w, err := s.OpenTask(ctx, connectors.TaskRef{RunID: runID, TaskID: "empty", Attempt: 1})
	if err != nil {
		return nil, err
	}
	tw := w.(*taskWriter)
	defer tw.conv.Release()
	tw.ended = true
	if err := tw.openFile(ctx); err != nil {
		return nil, err
	}
	if err := tw.closeFile(); err != nil {
		return nil, err
	}
	md := tbl.Metadata()
	return codec.DecodeDataFile(tw.files[0].Entry, md.PartitionSpec(), tw.sc, md.Version())
}

// normPath drops the file:// scheme of a local location.
func normPath(p string) string { return strings.TrimPrefix(p, "file://") }
