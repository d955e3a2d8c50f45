package iceberg

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// # Compaction
//
// A Sink compacts its table (connectors.Compactor): the plan groups the
// current snapshot's small data files (smaller than half the target, with
// no delete file applying to them), whole and in path order, into groups
// of up to the target size of input; a group never mixes the files of two
// windows committed without a delta column (a partition-based window
// committed again replaces the files its earlier commits added, compacted
// ones included); windows by a delta column, whose rows a re-run deletes
// by value, mix freely. A task reads its
// group's files at the planned snapshot and writes their rows as data
// files of the run (as a load's task does), then reads what it wrote back
// and checks the rows' count and checksum against what it read. The
// leader commits every group in one Iceberg rewrite (a "replace"
// snapshot: readers of appended data files skip it), asserting the main
// branch; when another writer commits first, it reloads the table and
// rewrites again on top of it, keeping what that writer committed, and
// leaves out a group whose files are no longer all in the table (a load
// replaced them). Each group's rows are checked against the record counts
// the table's metadata gives its files. The snapshot keeps the version of
// the full load it compacts (sluice.version), so that rollback to that
// version exposes the compacted files; the snapshots it supersedes stay
// until a vacuum expires them.

// The summary properties of a compaction's snapshot beside the run's.
const (
	modeCompact = "compact"
	// propCompactRows and propCompactChecksum are the rewritten rows';
	// propRows and propChecksum, in a snapshot that keeps a version, are
	// the version's.
	propCompactRows     = "sluice.compacted.rows"
	propCompactChecksum = "sluice.compacted.checksum"
	// propCompactWindows maps each incremental window whose files the
	// compaction rewrote to the data files it wrote for it (JSON).
	propCompactWindows = "sluice.compacted.windows"
)

// groupSpec is the Spec of a rewrite group: whole data files of the
// snapshot planned, of one window ("" none).
type groupSpec struct {
	Snapshot int64    `json:"snapshot"`
	Window   string   `json:"window,omitempty"`
	Files    []string `json:"files"`
	// Rows are the files' record count, as the table's metadata says.
	Rows int64 `json:"rows"`
}

// validateDataset checks the dataset of a compact pipeline: a sink
// configuration.
func validateDataset(config json.RawMessage) error {
	_, err := ParseSinkConfig(config)
	return err
}

var (
	_ connectors.Compactor = (*Sink)(nil)
	_ connectors.Vacuumer  = (*Sink)(nil)
)

// Dataset names the table in its catalog.
func (s *Sink) Dataset() string {
	_, addr, err := s.cfg.catalog()
	if err != nil {
		addr = s.cfg.Catalog
	}
	return "iceberg:" + redact(addr) + "#" + s.cfg.Table
}

// fileOrigin is where a live data file comes from: the snapshot that
// added it, that snapshot's time, and the window it holds rows of.
type fileOrigin struct {
	addedBy int64
	at      time.Time
	window  string
}

// origins returns the origin of every data file of snapshot sn.
func origins(ctx context.Context, tbl *table.Table, sn *table.Snapshot) (map[string]fileOrigin, error) {
	fs, err := tbl.FS(ctx)
	if err != nil {
		return nil, err
	}
	manifests, err := sn.Manifests(fs)
	if err != nil {
		return nil, fmt.Errorf("manifests of snapshot %d: %w", sn.SnapshotID, err)
	}
	compacted := map[int64]map[string]string{} // snapshot -> file -> window
	out := map[string]fileOrigin{}
	for _, m := range manifests {
		if m.ManifestContent() != iceberg.ManifestContentData {
			continue
		}
		for e, err := range m.Entries(fs, true) {
			if err != nil {
				return nil, fmt.Errorf("manifest %s: %w", m.FilePath(), err)
			}
			o := fileOrigin{addedBy: e.SnapshotID()}
			if by := tbl.SnapshotByID(o.addedBy); by != nil {
				o.at = time.UnixMilli(by.TimestampMs)
				if by.Summary != nil {
					if by.Summary.Properties[propDelta] == "" {
						o.window = by.Summary.Properties[propWindow]
					}
					if w, ok := compacted[o.addedBy]; ok {
						o.window = w[normPath(e.DataFile().FilePath())]
					} else if w := compactedWindows(by); w != nil {
						compacted[o.addedBy] = w
						o.window = w[normPath(e.DataFile().FilePath())]
					}
				}
			}
			out[normPath(e.DataFile().FilePath())] = o
		}
	}
	return out, nil
}

// compactedWindows returns, for a compaction's snapshot, the window of
// each data file it wrote for one; nil for another snapshot.
func compactedWindows(sn *table.Snapshot) map[string]string {
	if sn.Summary == nil || sn.Summary.Properties[propMode] != modeCompact {
		return nil
	}
	out := map[string]string{}
	var byWindow map[string][]string
	if raw := sn.Summary.Properties[propCompactWindows]; raw != "" && json.Unmarshal([]byte(raw), &byWindow) == nil {
		for w, files := range byWindow {
			for _, f := range files {
				out[normPath(f)] = w
			}
		}
	}
	return out
}

// PlanCompaction groups the current snapshot's small data files (see
// Compaction). A table that does not exist, or has no snapshot, plans
// none. It only reads.
func (s *Sink) PlanCompaction(ctx context.Context, req connectors.CompactRequest) (connectors.CompactPlan, error) {
	var plan connectors.CompactPlan
	_, tbl, err := s.load(ctx)
	if err != nil || tbl == nil || tbl.CurrentSnapshot() == nil {
		return plan, err
	}
	sn := tbl.CurrentSnapshot()
	tasks, err := scanTasks(ctx, tbl, readSpec{Snapshot: sn.SnapshotID})
	if err != nil {
		return plan, fmt.Errorf("plan compaction of %s: %w", s.cfg.Table, err)
	}
	orig, err := origins(ctx, tbl, sn)
	if err != nil {
		return plan, fmt.Errorf("plan compaction of %s: %w", s.cfg.Table, err)
	}
	target := req.Settings.TargetFileBytes
	byWindow := map[string][]iceberg.DataFile{}
	newest := map[string]time.Time{}
	for _, t := range tasks {
		f := t.File
		o := orig[normPath(f.FilePath())]
		if len(t.DeleteFiles)+len(t.EqualityDeleteFiles)+len(t.DeletionVectorFiles) > 0 || f.FileSizeBytes() >= target/2 {
			continue
		}
		if !slices.ContainsFunc(byWindow[o.window], func(d iceberg.DataFile) bool { return d.FilePath() == f.FilePath() }) {
			byWindow[o.window] = append(byWindow[o.window], f)
		}
		if o.at.After(newest[o.window]) {
			newest[o.window] = o.at
		}
	}
	windows := make([]string, 0, len(byWindow))
	for w := range byWindow {
		windows = append(windows, w)
	}
	slices.Sort(windows)
	for _, w := range windows {
		files := byWindow[w]
		if len(files) < max(req.Settings.MinFiles, 2) || req.Now.Sub(newest[w]) < req.Settings.MinAge {
			continue
		}
		slices.SortFunc(files, func(a, b iceberg.DataFile) int { return strings.Compare(a.FilePath(), b.FilePath()) })
		sizes := make([]int64, len(files))
		for i, f := range files {
			sizes[i] = f.FileSizeBytes()
		}
		var packs [][]iceberg.DataFile
		for _, idx := range connectors.PackGroups(sizes, target) {
			if len(idx) < 2 {
				continue // one file alone gains nothing
			}
			p := make([]iceberg.DataFile, len(idx))
			for j, i := range idx {
				p[j] = files[i]
			}
			packs = append(packs, p)
		}
		for i, p := range packs {
			g := groupSpec{Snapshot: sn.SnapshotID, Window: w}
			var size int64
			for _, f := range p {
				g.Files = append(g.Files, f.FilePath())
				g.Rows += f.Count()
				size += f.FileSizeBytes()
			}
			spec, err := json.Marshal(g)
			if err != nil {
				return plan, err
			}
			key := s.cfg.Table
			if w != "" {
				key += " window " + w
			}
			plan.Groups = append(plan.Groups, protocol.Partition{Key: fmt.Sprintf("%s #%d/%d (%d files)", key, i+1, len(packs), len(p)),
				Spec: spec, Rows: g.Rows, Bytes: size})
			plan.Files = append(plan.Files, len(p))
		}
	}
	return plan, nil
}

// Rewrite reads a group's files at the planned snapshot and writes their
// rows as the task's data files (see Compaction), then reads them back and
// checks the count and checksum of the rows. A snapshot expired since the
// plan fails the task with a Replan error. ctx bounds the rewrite.
func (s *Sink) Rewrite(ctx context.Context, t connectors.TaskRef, group protocol.Partition) (connectors.TaskOutput, error) {
	var spec groupSpec
	if err := json.Unmarshal(group.Spec, &spec); err != nil {
		return connectors.TaskOutput{}, connectors.Permanent(fmt.Errorf("rewrite %s: bad spec: %w", group.Key, err))
	}
	_, tbl, err := s.load(ctx)
	if err != nil {
		return connectors.TaskOutput{}, err
	}
	if tbl == nil || tbl.SnapshotByID(spec.Snapshot) == nil {
		return connectors.TaskOutput{}, connectors.Replan(fmt.Errorf("rewrite %s: snapshot %d of %s is gone", group.Key, spec.Snapshot, s.cfg.Table))
	}
	tw, err := s.OpenTask(ctx, t)
	if err != nil {
		return connectors.TaskOutput{}, err
	}
	var read connectors.Checksum
	err = readFiles(ctx, tbl, group.Key, readSpec{Snapshot: spec.Snapshot, Files: spec.Files}, func(ctx context.Context, b connectors.Batch) error {
		addRecordChecksum(&read, b.Record)
		return tw.Write(ctx, b)
	})
	if err != nil {
		tw.Abort(context.WithoutCancel(ctx))
		return connectors.TaskOutput{}, fmt.Errorf("rewrite %s: %w", group.Key, err)
	}
	out, err := tw.Close(ctx)
	if err != nil {
		return out, fmt.Errorf("rewrite %s: %w", group.Key, err)
	}
	if out.Checksum != read || read.Rows != spec.Rows {
		return out, connectors.Permanent(fmt.Errorf("rewrite %s: read %d rows (checksum %s; the table's metadata says %d), wrote %d (checksum %s)",
			group.Key, read.Rows, read, spec.Rows, out.Rows, out.Checksum))
	}
	files, err := s.readTasks(ctx, tbl, connectors.CommitRequest{RunID: t.RunID, Tasks: []connectors.TaskOutput{out}})
	if err != nil {
		return out, fmt.Errorf("rewrite %s: %w", group.Key, err)
	}
	back, err := readBack(ctx, tbl, files)
	if err != nil {
		return out, fmt.Errorf("rewrite %s: read the rewrite back: %w", group.Key, err)
	}
	if back != read {
		return out, fmt.Errorf("rewrite %s: the data files written read back as %d rows, checksum %s; %d rows, checksum %s were read",
			group.Key, back.Rows, back, read.Rows, read)
	}
	return out, nil
}

// readBack reads data files (not committed yet) as the table's schema
// reads them and sums their rows.
func readBack(ctx context.Context, tbl *table.Table, files []iceberg.DataFile) (connectors.Checksum, error) {
	var sum connectors.Checksum
	if len(files) == 0 {
		return sum, nil
	}
	tasks := make([]table.FileScanTask, len(files))
	for i, f := range files {
		tasks[i] = table.FileScanTask{File: f, Start: 0, Length: f.FileSizeBytes()}
	}
	scan := tbl.Scan(table.WithArrowBatchSize(64 << 10))
	defer scan.Close()
	_, recs, err := scan.ReadTasks(ctx, tasks)
	if err != nil {
		return sum, err
	}
	for rec, err := range recs {
		if err != nil {
			return sum, err
		}
		addRecordChecksum(&sum, rec)
		rec.Release()
	}
	return sum, nil
}

// CommitCompaction commits every group it can in one rewrite of the
// table (see Compaction), trying again on the table as another writer
// left it, then deletes what the run staged and the table does not
// reference. A commit repeated after a crash finds the run's snapshot and
// only tidies.
func (s *Sink) CommitCompaction(ctx context.Context, req connectors.CompactCommit) (connectors.CompactResult, error) {
	res := connectors.CompactResult{Location: s.cfg.Table}
	l, tbl, err := s.load(ctx)
	if err != nil {
		return res, err
	}
	if tbl == nil {
		return res, connectors.Permanent(fmt.Errorf("compact %s: the table does not exist", s.cfg.Table))
	}
	type group struct {
		spec  groupSpec
		key   string
		files []iceberg.DataFile
	}
	var groups []group
	if len(runSnapshots(tbl, req.RunID)) == 0 {
		for _, g := range req.Groups {
			var spec groupSpec
			if err := json.Unmarshal(g.Group.Spec, &spec); err != nil {
				return res, connectors.Permanent(fmt.Errorf("compact %s: group %s: bad spec: %w", s.cfg.Table, g.Group.Key, err))
			}
			files, err := s.readTasks(ctx, tbl, connectors.CommitRequest{RunID: req.RunID, Tasks: []connectors.TaskOutput{g.Output}})
			if err != nil {
				return res, fmt.Errorf("compact %s: group %s: %w", s.cfg.Table, g.Group.Key, err)
			}
			if g.Output.Rows != spec.Rows {
				return res, connectors.Permanent(fmt.Errorf("compact %s: group %s rewrote %d rows; the table's metadata gives its files %d",
					s.cfg.Table, g.Group.Key, g.Output.Rows, spec.Rows))
			}
			groups = append(groups, group{spec: spec, key: g.Group.Key, files: files})
		}
	}
	var committed map[string]bool
	for attempt := 1; len(groups) > 0; attempt++ {
		if len(runSnapshots(tbl, req.RunID)) > 0 {
			break
		}
		live, err := liveFiles(ctx, tbl, nil)
		if err != nil {
			return res, err
		}
		byPath := make(map[string]iceberg.DataFile, len(live))
		for _, f := range live {
			byPath[f.FilePath()] = f
		}
		res.Skipped, res.FilesBefore, res.FilesAfter, res.Partitions = nil, 0, 0, 0
		var olds, news []iceberg.DataFile
		windows := map[string][]string{}
		var sum connectors.Checksum
		committed = map[string]bool{}
		for i, g := range groups {
			var gone []string
			var these []iceberg.DataFile
			for _, p := range g.spec.Files {
				if f, ok := byPath[p]; ok {
					these = append(these, f)
				} else {
					gone = append(gone, p)
				}
			}
			if len(gone) > 0 {
				res.Skipped = append(res.Skipped, fmt.Sprintf("%s: %d of its files are no longer in the table (replaced meanwhile)", g.key, len(gone)))
				continue
			}
			olds = append(olds, these...)
			news = append(news, g.files...)
			out := req.Groups[i].Output
			sum.Merge(out.Checksum)
			res.FilesBefore += int64(len(these))
			res.FilesAfter += int64(len(g.files))
			res.Partitions = 1
			for _, f := range g.files {
				committed[normPath(f.FilePath())] = true
				if g.spec.Window != "" {
					windows[g.spec.Window] = append(windows[g.spec.Window], f.FilePath())
				}
			}
		}
		if len(olds) == 0 {
			break
		}
		props := s.compactProps(tbl, req, sum, windows)
		base := tbl.CurrentSnapshot()
		if s.beforeRewrite != nil {
			s.beforeRewrite()
		}
		next, err := commitRewrite(ctx, tbl, olds, news, props)
		if err == nil {
			tbl = next
			break
		}
		fresh, lerr := l.load(ctx)
		if lerr != nil || fresh == nil {
			return res, fmt.Errorf("compact %s: %w", s.cfg.Table, err)
		}
		if len(runSnapshots(fresh, req.RunID)) > 0 {
			tbl = fresh
			break
		}
		if sameSnapshot(base, fresh.CurrentSnapshot()) || connectors.IsPermanent(err) {
			return res, fmt.Errorf("compact %s: %w", s.cfg.Table, err)
		}
		if attempt >= s.cfg.commitAttempts() {
			return res, fmt.Errorf("compact %s: another writer committed to the table first, %d times: %w", s.cfg.Table, attempt, err)
		}
		s.retries.Add(1)
		wait := time.Duration(50+rand.IntN(100)) * time.Millisecond << min(attempt-1, 5)
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(wait):
		}
		// Tried on the table as the wait left it: a writer that commits
		// more often than the wait would otherwise win every time.
		if again, err := l.load(ctx); err == nil && again != nil {
			fresh = again
		}
		tbl = fresh
	}
	if len(runSnapshots(tbl, req.RunID)) > 0 {
		// What the run's snapshot added stays, whichever attempt made it.
		if committed, err = runFiles(ctx, tbl, req.RunID); err != nil {
			s.log.Warn("list the files of a committed compaction", "run", req.RunID, "err", err)
			return res, nil
		}
	}
	if err := tidyRun(ctx, tbl, req.RunID, committed); err != nil {
		s.log.Warn("delete the staged files of a compaction that the table does not reference", "run", req.RunID, "err", err)
	}
	return res, nil
}

// commitRewrite commits one rewrite of olds by news on tbl as loaded,
// asserting that the main branch has not moved since.
func commitRewrite(ctx context.Context, tbl *table.Table, olds, news []iceberg.DataFile, props iceberg.Properties) (*table.Table, error) {
	txn := tbl.NewTransaction()
	if err := txn.AssertRefSnapshotID(table.MainBranch); err != nil {
		return nil, err
	}
	rw := txn.NewRewrite(props)
	for _, f := range olds {
		rw.DeleteFile(f)
	}
	for _, f := range news {
		rw.AddDataFile(f)
	}
	if err := rw.Commit(ctx); err != nil {
		return nil, err
	}
	return txn.Commit(ctx)
}

// compactProps returns the summary properties of a compaction's
// snapshot: the run's, the rewritten rows', the windows' files, and, when
// the table's current data is a full load's version, that version (with
// its rows and checksum).
func (s *Sink) compactProps(tbl *table.Table, req connectors.CompactCommit, sum connectors.Checksum, windows map[string][]string) iceberg.Properties {
	props := iceberg.Properties{
		propRun: req.RunID, propPipeline: req.Pipeline, propMode: modeCompact,
		propCompactRows: strconv.FormatInt(sum.Rows, 10), propCompactChecksum: sum.String(),
	}
	if len(windows) > 0 {
		if b, err := json.Marshal(windows); err == nil {
			props[propCompactWindows] = string(b)
		}
	}
	if cur := tbl.CurrentSnapshot(); cur != nil {
		for _, sn := range table.AncestorsOf(cur.SnapshotID, tbl.SnapshotByID) {
			if v, ok := versionOf(&sn); ok {
				props[propVersion] = strconv.FormatInt(v, 10)
				props[propRows] = sn.Summary.Properties[propRows]
				props[propChecksum] = sn.Summary.Properties[propChecksum]
				break
			}
			if sn.Summary != nil && sn.Summary.Properties[propMode] == modeAppend {
				break // appended since the version: no longer that version's data alone
			}
		}
	}
	return props
}
