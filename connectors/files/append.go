package files

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sluicehq/sluice/connectors"
)

// RunDir returns the directory name of a run appended without a window
// (a run by position): "run=<run id>".
func RunDir(runID string) string { return "run=" + runID }

// parseRunDir returns the run of a directory name made by RunDir, or false.
func parseRunDir(name string) (string, bool) {
	run, ok := strings.CutPrefix(name, "run=")
	return run, ok && run != ""
}

// commitRun commits a run appended without a window (ModeAppend, a run by
// position) as the directory <path>/run=<run id>/: the task outputs are
// moved into a hidden building directory, _SUCCESS is written in it last,
// and it takes its name in one rename. Readers see the run's directory
// whole or not at all, beside every run appended before. A commit repeated
// for the same run finds its marker in place and only cleans up: the run
// is appended once.
func (s *Sink) commitRun(ctx context.Context, req connectors.CommitRequest) (connectors.CommitResult, error) {
	name := RunDir(req.RunID)
	final := filepath.Join(s.root, name)
	building := filepath.Join(s.root, "."+name+".building")
	res := connectors.CommitResult{Location: final, Marker: filepath.Join(final, SuccessFile)}
	fail := func(err error) (connectors.CommitResult, error) {
		return connectors.CommitResult{}, fmt.Errorf("commit run %s as %s: %w", req.RunID, name, err)
	}
	want, sum, err := stagedOutputs(req)
	if err != nil {
		return fail(err)
	}
	clean := func() error {
		if err := os.RemoveAll(building); err != nil {
			return err
		}
		if err := os.RemoveAll(stagingDir(s.root, req.RunID)); err != nil {
			return fmt.Errorf("remove staging: %w", err)
		}
		return nil
	}
	switch m, err := readMarker(final); {
	case err == nil && m.Run == req.RunID:
		return res, clean() // appended before
	case err == nil:
		return fail(connectors.Permanent(fmt.Errorf("%s holds run %s", final, m.Run)))
	case !errors.Is(err, fs.ErrNotExist):
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return connectors.CommitResult{}, err
	}
	if err := s.fill(ctx, building, want); err != nil {
		return fail(err)
	}
	m := marker{Run: req.RunID, Pipeline: req.Pipeline, Version: req.Version, Rows: sum.Rows, Checksum: sum.String(), Time: s.now().UTC()}
	if err := writeMarker(building, m); err != nil {
		return fail(err)
	}
	if err := os.Rename(building, final); err != nil {
		return fail(err)
	}
	if err := syncDir(s.root); err != nil {
		return fail(err)
	}
	if err := clean(); err != nil {
		return fail(err)
	}
	return res, nil
}
