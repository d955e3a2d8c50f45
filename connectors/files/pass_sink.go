package files

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/objstore"
)

var (
	_ connectors.UnitSink    = (*Sink)(nil)
	_ connectors.Inventoried = (*Sink)(nil)
)

// A passthrough sink writes files into the target tree in place, as the
// source has them, and keeps its state beside it (state_dir, by default
// the hidden directory .<target name>.sluice next to the target):
//
//	<state>/staging/<run>/objects/<path>     files staged by the tasks (and
//	                                         on a file system the ranges of
//	                                         a split file, in one file)
//	<state>/staging/<run>/parts/<path>/<off> on S3, the ranges of a split file
//	<state>/staging/<run>/tasks/<task>.json  what each task staged
//	<state>/manifests/<run>.jsonl            what the target holds after
//	                                         a committed run
//
// A task stages each file, or range of one, whole: on a file system it
// writes a temporary file (a range into the file shared by the ranges),
// syncs it, reads it back and compares the block digests of what it read
// with those of what the source gave; on S3 every request carries the
// bytes' MD5 (Content-MD5), which the store checks. A retried task takes
// the whole files an earlier attempt staged on a file system as they are,
// once they read back to the same size. The commit puts each file into
// place whole: a rename on a file system (a split file once all its
// ranges are staged), on S3 a server-side copy, or for a split file a
// multipart upload whose parts are server-side copies of its ranges;
// nothing partial is ever in the target. With mirror it then removes the
// files the source no longer has, writes the manifest of what the target
// holds (each file's size, the source's version it was copied from, its
// checksum and its version in the target), and removes the run's staging.
// A commit repeated after a crash puts nothing twice: a staged file that
// is gone was put in place; a manifest that is written means the commit
// was done. The manifest is what the next run's plan compares the source
// with (Inventory), together with a listing of the target: a file changed
// or removed in the target since is copied again.

// watermarkPrefix starts the watermark of a passthrough into a files
// sink: "manifest:<run>" names the manifest the run's commit wrote.
const watermarkPrefix = "manifest:"

// heldEntry is one file of a manifest.
type heldEntry struct {
	Path string `json:"p"`
	Size int64  `json:"s"`
	// Version is the source's version the file was copied from.
	Version string `json:"v"`
	// Sum is the file's checksum (see passBlock).
	Sum string `json:"c"`
	// Target is the file's version in the target once put in place.
	Target string `json:"t"`
}

// stagedUnit is what a task staged of one unit, or a removal.
type stagedUnit struct {
	Path    string `json:"p"`
	Remove  bool   `json:"rm,omitempty"`
	Off     int64  `json:"off,omitempty"`
	Len     int64  `json:"len,omitempty"`
	Size    int64  `json:"s,omitempty"`
	Version string `json:"v,omitempty"`
	MTime   int64  `json:"m,omitempty"`
	Mode    uint32 `json:"mode,omitempty"`
	// Blocks are the digests of the unit's blocks (see passBlock).
	Blocks []string `json:"b,omitempty"`
}

// whole reports whether the unit is a whole file.
func (u stagedUnit) whole() bool { return u.Off == 0 && u.Len == u.Size }

// placement is a file the commit puts in place: staged whole, or in the
// ranges starting at Offs.
type placement struct {
	stagedUnit
	Offs []int64
}

// passStore is where a passthrough sink's target and state are: a file
// system or a bucket. Its methods are safe for concurrent use.
type passStore interface {
	// listTarget lists the files of the target, with their versions
	// there.
	listTarget(ctx context.Context) ([]passObject, error)
	// stage stages unit u of a task attempt, verified, and returns the
	// digests of its blocks.
	stage(ctx context.Context, run string, ref connectors.TaskRef, u connectors.Unit, buf []byte) ([]string, error)
	// reuse returns the digests of a whole file u an earlier attempt of
	// the run staged, or false.
	reuse(ctx context.Context, run string, u connectors.Unit, buf []byte) ([]string, bool, error)
	// place puts a staged file in place in the target and returns its
	// version there. A file whose staging is gone and that the target
	// holds at its size was put in place before.
	place(ctx context.Context, run string, p placement) (string, error)
	// flush makes the placements done so far durable.
	flush(ctx context.Context) error
	// remove removes a file from the target; a missing one is no error.
	remove(ctx context.Context, name string) error
	// read, write and delete handle the small files of the state (rel
	// is slash-separated, under the state root); read's error wraps
	// fs.ErrNotExist for a missing one, write writes whole or nothing.
	read(ctx context.Context, rel string) ([]byte, error)
	write(ctx context.Context, rel string, data []byte) error
	delete(ctx context.Context, rel string) error
	// names lists the names of the files in the state directory rel.
	names(ctx context.Context, rel string) ([]string, error)
	// clean removes the staging of a run.
	clean(ctx context.Context, run string) error
	// placeConcurrency is how many files a commit puts in place at once.
	placeConcurrency() int
}

// passStore returns the store of the sink's target and state.
func (s *Sink) passStore() (passStore, error) {
	state, err := stateRoot(s.cfg)
	if err != nil {
		return nil, err
	}
	if s.s3 != nil {
		loc, err := objstore.ParseURL(state)
		if err != nil {
			return nil, err
		}
		return &s3Pass{target: s.s3, state: &s3Root{b: s.s3.b, prefix: loc.Key}}, nil
	}
	return &localPass{root: s.root, state: state}, nil
}

// stagingRel is the state-relative directory of a run's staging.
func passStagingRel(run string) string { return path.Join("staging", run) }

// manifestRel is the state-relative path of the manifest a watermark
// names.
func manifestRel(watermark string) (string, error) {
	run, ok := strings.CutPrefix(watermark, watermarkPrefix)
	if !ok || checkName("run", run) != nil {
		return "", connectors.Permanent(fmt.Errorf("watermark %q is not one of a files passthrough (%s<run>): was the pipeline's sink another before?", watermark, watermarkPrefix))
	}
	return path.Join("manifests", run+".jsonl"), nil
}

// readManifestOf reads the manifest a watermark names ("": none).
func readManifestOf(ctx context.Context, st passStore, watermark string) (map[string]heldEntry, error) {
	out := map[string]heldEntry{}
	if watermark == "" {
		return out, nil
	}
	rel, err := manifestRel(watermark)
	if err != nil {
		return nil, err
	}
	data, err := st.read(ctx, rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, connectors.Permanent(fmt.Errorf("the manifest %s of the watermark %s is missing (was state_dir changed or cleaned?)", rel, watermark))
	}
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", rel, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e heldEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, connectors.Permanent(fmt.Errorf("manifest %s: %w", rel, err))
		}
		out[e.Path] = e
	}
	return out, sc.Err()
}

// passInventory is what a files target holds (connectors.Inventory).
type passInventory struct {
	held   map[string]connectors.Held
	names  []string // sorted
	mirror bool
}

func (inv *passInventory) Lookup(name string) (connectors.Held, bool) {
	h, ok := inv.held[name]
	return h, ok
}

func (inv *passInventory) Removable() iter.Seq[string] {
	return func(yield func(string) bool) {
		if !inv.mirror {
			return
		}
		for _, n := range inv.names {
			if !yield(n) {
				return
			}
		}
	}
}

// Inventory lists the target and reads the manifest req.Watermark names:
// a file of the target holds the source's version the manifest recorded
// when it is still the file the manifest recorded (same size, same
// version in the target), and no known version otherwise. With mirror,
// every file of the target is removable.
func (s *Sink) Inventory(ctx context.Context, req connectors.InventoryRequest) (connectors.Inventory, string, error) {
	st, err := s.passStore()
	if err != nil {
		return nil, "", connectors.Permanent(err)
	}
	if err := checkName("run", req.RunID); err != nil {
		return nil, "", err
	}
	entries, err := readManifestOf(ctx, st, req.Watermark)
	if err != nil {
		return nil, "", err
	}
	objs, err := st.listTarget(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("list the target %s: %w", s.cfg.Path, err)
	}
	inv := &passInventory{held: make(map[string]connectors.Held, len(objs)), mirror: s.cfg.Mirror}
	for _, o := range objs {
		h := connectors.Held{Size: o.Size}
		if e, ok := entries[o.Path]; ok && e.Size == o.Size && e.Target == o.version() {
			h.Version = e.Version
		}
		inv.held[o.Path] = h
		inv.names = append(inv.names, o.Path)
	}
	return inv, watermarkPrefix + req.RunID, nil
}

// OpenUnits starts the output of one task attempt of a passthrough run:
// its units are staged under the run's staging as they come (see
// passStore.stage), and Close records them in the task's record.
func (s *Sink) OpenUnits(ctx context.Context, t connectors.TaskRef) (connectors.UnitWriter, error) {
	if err := checkName("run", t.RunID); err != nil {
		return nil, err
	}
	if err := checkName("task", t.TaskID); err != nil {
		return nil, err
	}
	st, err := s.passStore()
	if err != nil {
		return nil, connectors.Permanent(err)
	}
	return &passWriter{st: st, ref: t, buf: make([]byte, 1<<20)}, nil
}

// passWriter stages the units of one task attempt.
type passWriter struct {
	st    passStore
	ref   connectors.TaskRef
	buf   []byte
	units []stagedUnit
	bytes int64
	sum   connectors.Checksum
	ended bool
}

func (w *passWriter) WriteUnit(ctx context.Context, u connectors.Unit) error {
	if w.ended {
		return errors.New("write after close or abort")
	}
	if !fs.ValidPath(u.Name) || u.Name == "." {
		return connectors.Permanent(fmt.Errorf("unit %q: not a relative file path", u.Name))
	}
	if u.Remove {
		w.units = append(w.units, stagedUnit{Path: u.Name, Remove: true})
		w.sum.Add([]byte("remove\x00" + u.Name))
		return nil
	}
	if u.Offset < 0 || u.Length < 0 || u.Offset+u.Length > u.Size || u.Offset%passBlock != 0 {
		return connectors.Permanent(fmt.Errorf("unit %s: bytes %d+%d of %d are not a range a passthrough stages (ranges start on %d bytes)", u.Position, u.Offset, u.Length, u.Size, int64(passBlock)))
	}
	su := stagedUnit{Path: u.Name, Off: u.Offset, Len: u.Length, Size: u.Size, Version: u.Version}
	if m, ok := u.Meta["mtime"]; ok {
		su.MTime, _ = strconv.ParseInt(m, 10, 64)
	}
	if m, ok := u.Meta["mode"]; ok {
		mode, _ := strconv.ParseUint(m, 8, 32)
		su.Mode = uint32(mode) & 0o7777
	}
	var blocks []string
	reused := false
	if su.whole() && w.ref.Attempt > 1 {
		var err error
		if blocks, reused, err = w.st.reuse(ctx, w.ref.RunID, u, w.buf); err != nil {
			return err
		}
	}
	if !reused { // else staged by an earlier attempt: the source's bytes are not read
		var err error
		if blocks, err = w.st.stage(ctx, w.ref.RunID, w.ref, u, w.buf); err != nil {
			return err
		}
	}
	su.Blocks = blocks
	w.units = append(w.units, su)
	w.bytes += su.Len
	w.sum.Add([]byte(su.Path + "\x00" + strconv.FormatInt(su.Off, 10) + "\x00" + strings.Join(blocks, ",")))
	return nil
}

// taskRecordRel is the state-relative path of a task's record.
func taskRecordRel(run, task string) string {
	return path.Join(passStagingRel(run), "tasks", task+".json")
}

// Close writes the task's record (what it staged, for the commit) and
// reports it: Rows counts the units, Bytes their bytes, Location is the
// record.
func (w *passWriter) Close(ctx context.Context) (connectors.TaskOutput, error) {
	if w.ended {
		return connectors.TaskOutput{}, errors.New("close after close or abort")
	}
	w.ended = true
	data, err := json.Marshal(w.units)
	if err != nil {
		return connectors.TaskOutput{}, err
	}
	rel := taskRecordRel(w.ref.RunID, w.ref.TaskID)
	if err := w.st.write(ctx, rel, data); err != nil {
		return connectors.TaskOutput{}, fmt.Errorf("record task %s: %w", w.ref.TaskID, err)
	}
	return connectors.TaskOutput{Rows: w.sum.Rows, Bytes: w.bytes, Checksum: w.sum, Location: rel}, nil
}

// Abort leaves what the attempt staged: a retry takes the whole files it
// staged as they are, and the run's commit or abort removes the rest.
func (w *passWriter) Abort(context.Context) error {
	w.ended = true
	return nil
}

// CommitUnits commits a passthrough run (see the comment at the top of
// this file): it puts every staged file in place, removes (with mirror)
// what the source no longer has, writes the manifest req.Watermark names
// and removes the run's staging. A file whose ranges are not all staged
// (one changed while the run read it) is left as the target has it, for
// the next run.
func (s *Sink) CommitUnits(ctx context.Context, req connectors.CommitRequest) (connectors.CommitResult, error) {
	res := connectors.CommitResult{Location: s.cfg.Path}
	st, err := s.passStore()
	if err != nil {
		return res, connectors.Permanent(err)
	}
	if err := checkName("run", req.RunID); err != nil {
		return res, err
	}
	rel, err := manifestRel(req.Watermark)
	if err != nil {
		return res, err
	}
	if _, err := st.read(ctx, rel); err == nil {
		// Committed before: only the clean-up may be left.
		return res, s.finishCommit(ctx, st, req, rel)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return res, fmt.Errorf("commit run %s: %w", req.RunID, err)
	}
	entries, err := readManifestOf(ctx, st, req.Since)
	if err != nil {
		return res, fmt.Errorf("commit run %s: %w", req.RunID, err)
	}
	places, removes, err := s.readTaskRecords(ctx, st, req)
	if err != nil {
		return res, fmt.Errorf("commit run %s: %w", req.RunID, err)
	}
	if s.cfg.Mirror {
		for _, name := range removes {
			if err := st.remove(ctx, name); err != nil {
				return res, fmt.Errorf("commit run %s: remove %s: %w", req.RunID, name, err)
			}
			delete(entries, name)
		}
	}
	placed := make([]heldEntry, len(places))
	err = forEach(ctx, st.placeConcurrency(), len(places), func(ctx context.Context, i int) error {
		p := places[i]
		blocks := p.Blocks
		sum, err := fileSum(blocks)
		if err != nil {
			return fmt.Errorf("%s: %w", p.Path, err)
		}
		target, err := st.place(ctx, req.RunID, p)
		if err != nil {
			return fmt.Errorf("put %s in place: %w", p.Path, err)
		}
		placed[i] = heldEntry{Path: p.Path, Size: p.Size, Version: p.Version, Sum: sum, Target: target}
		return nil
	})
	if err == nil {
		err = st.flush(ctx)
	}
	if err != nil {
		return res, fmt.Errorf("commit run %s: %w", req.RunID, err)
	}
	for _, e := range placed {
		entries[e.Path] = e
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var data []byte
	for _, n := range names {
		line, err := json.Marshal(entries[n])
		if err != nil {
			return res, err
		}
		data = append(append(data, line...), '\n')
	}
	if err := st.write(ctx, rel, data); err != nil {
		return res, fmt.Errorf("commit run %s: write manifest: %w", req.RunID, err)
	}
	return res, s.finishCommit(ctx, st, req, rel)
}

// finishCommit removes the run's staging and the manifests neither it
// nor the run it started from (req.Since) wrote.
func (s *Sink) finishCommit(ctx context.Context, st passStore, req connectors.CommitRequest, rel string) error {
	if err := st.clean(ctx, req.RunID); err != nil {
		return fmt.Errorf("commit run %s: remove staging: %w", req.RunID, err)
	}
	keep := map[string]bool{path.Base(rel): true}
	if since, err := manifestRel(req.Since); err == nil {
		keep[path.Base(since)] = true
	}
	names, err := st.names(ctx, "manifests")
	if err != nil {
		return fmt.Errorf("commit run %s: list manifests: %w", req.RunID, err)
	}
	for _, n := range names {
		if !keep[n] {
			if err := st.delete(ctx, path.Join("manifests", n)); err != nil {
				return fmt.Errorf("commit run %s: remove manifest %s: %w", req.RunID, n, err)
			}
		}
	}
	return nil
}

// readTaskRecords reads the records of the run's tasks: the files to put
// in place, by path (a split file once, with the offsets of its ranges,
// when they cover it), and the names to remove.
func (s *Sink) readTaskRecords(ctx context.Context, st passStore, req connectors.CommitRequest) ([]placement, []string, error) {
	prefix := path.Join(passStagingRel(req.RunID), "tasks") + "/"
	ranges := map[string][]stagedUnit{}
	var places []placement
	var removes []string
	for _, t := range req.Tasks {
		if t.Rows == 0 && t.Location == "" {
			continue
		}
		if !strings.HasPrefix(t.Location, prefix) || strings.Contains(strings.TrimPrefix(t.Location, prefix), "/") {
			return nil, nil, connectors.Permanent(fmt.Errorf("task output %q is not a record of the run's tasks", t.Location))
		}
		data, err := st.read(ctx, t.Location)
		if err != nil {
			return nil, nil, fmt.Errorf("read task record: %w", err)
		}
		var units []stagedUnit
		if err := json.Unmarshal(data, &units); err != nil {
			return nil, nil, connectors.Permanent(fmt.Errorf("task record %s: %w", t.Location, err))
		}
		for _, u := range units {
			switch {
			case u.Remove:
				removes = append(removes, u.Path)
			case u.whole():
				places = append(places, placement{stagedUnit: u})
			default:
				ranges[u.Path] = append(ranges[u.Path], u)
			}
		}
	}
	for _, rs := range ranges {
		slices.SortFunc(rs, func(a, b stagedUnit) int { return cmp.Compare(a.Off, b.Off) })
		p := placement{stagedUnit: rs[0]}
		p.Off, p.Len, p.Blocks = 0, 0, nil
		whole := true
		for _, r := range rs {
			if r.Off != p.Len || r.Size != p.Size || r.Version != p.Version {
				whole = false
				break
			}
			p.Offs = append(p.Offs, r.Off)
			p.Blocks = append(p.Blocks, r.Blocks...)
			p.Len += r.Len
		}
		if whole && p.Len == p.Size {
			places = append(places, p)
		}
	}
	slices.SortFunc(places, func(a, b placement) int { return strings.Compare(a.Path, b.Path) })
	sort.Strings(removes)
	return places, removes, nil
}

// AbortUnits removes the staging of a passthrough run; the target stays
// as it is.
func (s *Sink) AbortUnits(ctx context.Context, runID string) error {
	if err := checkName("run", runID); err != nil {
		return err
	}
	st, err := s.passStore()
	if err != nil {
		return connectors.Permanent(err)
	}
	return st.clean(ctx, runID)
}

// forEach calls fn for 0..n-1, at most limit at once, and returns the
// first error; the others' ctx is then cancelled.
func forEach(ctx context.Context, limit, n int, fn func(ctx context.Context, i int) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(limit, 1))
	for i := range n {
		g.Go(func() error { return fn(gctx, i) })
	}
	return g.Wait()
}
