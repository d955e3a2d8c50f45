package files

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// windowTime is how a window bound is written in a directory name: UTC,
// basic ISO 8601, fractional seconds only when present.
const windowTime = "20060102T150405.999999999Z"

// WindowDir returns the directory name of an incremental window:
// "window=<from>_<to>", such as window=20260101T000000Z_20260101T010000Z,
// or window=1000000_2000000 for a window of integer values.
func WindowDir(w connectors.Window) string {
	if w.Values {
		return "window=" + strconv.FormatInt(w.Lo, 10) + "_" + strconv.FormatInt(w.Hi, 10)
	}
	return "window=" + w.From.UTC().Format(windowTime) + "_" + w.To.UTC().Format(windowTime)
}

// parseWindowDir returns the window of a directory name, or false.
func parseWindowDir(name string) (connectors.Window, bool) {
	rest, ok := strings.CutPrefix(name, "window=")
	if !ok {
		return connectors.Window{}, false
	}
	a, b, ok := strings.Cut(rest, "_")
	if !ok {
		return connectors.Window{}, false
	}
	from, err1 := time.Parse(windowTime, a)
	to, err2 := time.Parse(windowTime, b)
	if err1 == nil && err2 == nil && from.Before(to) {
		return connectors.Window{From: from, To: to}, true
	}
	lo, err1 := strconv.ParseInt(a, 10, 64)
	hi, err2 := strconv.ParseInt(b, 10, 64)
	if err1 == nil && err2 == nil && lo < hi {
		return protocol.ValueWindow(lo, hi), true
	}
	return connectors.Window{}, false
}

// commitWindow commits an incremental run (ModeAppend) as the directory
// <path>/window=<from>_<to>/: the task outputs are moved into a hidden
// building directory, _SUCCESS is written in it last, and it takes the
// window's name in one rename, or, when the window was committed before
// (a re-run, a backfill with --replace), in one atomic exchange with the
// earlier directory (renameat2 RENAME_EXCHANGE on Linux), which is then
// removed. Readers see the earlier directory or the new one, whole. Window
// directories lying wholly inside the new window are removed after it is
// in place; one that overlaps it partially fails the commit before
// anything changes, since its rows cannot be split. A commit repeated for
// the same run finds its marker in place and only cleans up.
//
// A run without a window (a run by position) is appended as a directory
// of its own (commitRun).
func (s *Sink) commitWindow(ctx context.Context, req connectors.CommitRequest) (connectors.CommitResult, error) {
	if req.Window == nil {
		return s.commitRun(ctx, req)
	}
	if req.Window.Empty() {
		return connectors.CommitResult{}, connectors.Permanent(fmt.Errorf("commit run %s: an append commit needs a non-empty window", req.RunID))
	}
	w := *req.Window
	name := WindowDir(w)
	final := filepath.Join(s.root, name)
	building := filepath.Join(s.root, "."+name+"."+req.RunID+".building")
	markerPath := filepath.Join(final, "_SUCCESS")
	res := connectors.CommitResult{Location: final, Marker: markerPath}
	fail := func(err error) (connectors.CommitResult, error) {
		return connectors.CommitResult{}, fmt.Errorf("commit run %s as %s: %w", req.RunID, name, err)
	}
	want, sum, err := stagedOutputs(req)
	if err != nil {
		return fail(err)
	}
	if m, err := readMarker(final); err == nil && m.Run == req.RunID {
		return res, s.cleanWindow(req.RunID, building, w, name)
	}
	entries, err := os.ReadDir(s.root)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fail(err)
	}
	for _, e := range entries {
		o, ok := parseWindowDir(e.Name())
		if !ok || e.Name() == name || !o.Overlaps(w) {
			continue
		}
		if !w.Covers(o) {
			return fail(connectors.Permanent(fmt.Errorf("committed window %s overlaps %s partially: its rows cannot be replaced exactly", e.Name(), name)))
		}
	}
	if err := ctx.Err(); err != nil {
		return connectors.CommitResult{}, err
	}
	if err := s.fill(ctx, building, want); err != nil {
		return fail(err)
	}
	m := marker{Run: req.RunID, Pipeline: req.Pipeline, Version: req.Version, Rows: sum.Rows, Checksum: sum.String(), Time: s.now().UTC(), Window: &w}
	if err := writeMarker(building, m); err != nil {
		return fail(err)
	}
	if _, err := os.Stat(final); err == nil {
		// building then holds the earlier directory; cleanWindow removes it.
		if err := exchange(building, final); err != nil {
			return fail(fmt.Errorf("replace the earlier directory: %w", err))
		}
	} else if errors.Is(err, fs.ErrNotExist) {
		if err := os.Rename(building, final); err != nil {
			return fail(err)
		}
	} else {
		return fail(err)
	}
	if err := syncDir(s.root); err != nil {
		return fail(err)
	}
	if err := s.cleanWindow(req.RunID, building, w, name); err != nil {
		return fail(err)
	}
	return res, nil
}

// cleanWindow removes what a committed window leaves behind: the earlier
// directory of the window, the window directories inside it, and the
// run's staging directory.
func (s *Sink) cleanWindow(runID, building string, w connectors.Window, name string) error {
	if err := os.RemoveAll(building); err != nil {
		return err
	}
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return err
	}
	for _, e := range entries {
		o, ok := parseWindowDir(e.Name())
		if ok && e.Name() != name && w.Covers(o) {
			if err := os.RemoveAll(filepath.Join(s.root, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := os.RemoveAll(stagingDir(s.root, runID)); err != nil {
		return fmt.Errorf("remove staging: %w", err)
	}
	return nil
}

// readMarker reads the _SUCCESS marker of a directory.
func readMarker(dir string) (marker, error) {
	var m marker
	data, err := os.ReadFile(filepath.Join(dir, "_SUCCESS"))
	if err != nil {
		return m, err
	}
	err = json.Unmarshal(data, &m)
	return m, err
}
