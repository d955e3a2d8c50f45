package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/protocol"
)

func runRollback(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("rollback", "rollback <pipeline> [--to N] --spec spec.yaml", stderr)
	var cf clientFlags
	cf.register(flags)
	to := flags.Int64("to", 0, "the kept version to expose (default: the newest kept version older than the exposed one)")
	specPath := flags.String("spec", "", "the pipeline's spec file, for its sink (the cluster's API does not return specs yet)")
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := parse(flags, args); err != nil {
		return err
	}
	if name == "" && flags.NArg() > 0 {
		name = flags.Arg(0)
	}
	if name == "" {
		return errors.New("rollback: name the pipeline: sluice rollback <pipeline> [--to N]")
	}
	toGiven := false
	flags.Visit(func(f *flag.Flag) { toGiven = toGiven || f.Name == "to" })
	if *to < 0 || (*to == 0 && toGiven) {
		return fmt.Errorf("rollback: --to %d: want a version number of at least 1", *to)
	}

	var sink protocol.Endpoint
	if *specPath != "" {
		specs, err := loadSpecs([]string{*specPath}, newRegistry(), io.Discard)
		if err != nil {
			return fmt.Errorf("rollback: %w", err)
		}
		if specs[0].Name != name {
			return fmt.Errorf("rollback: %s holds pipeline %q, not %q", *specPath, specs[0].Name, name)
		}
		sink = specs[0].Sink
	} else {
		ep, err := sinkFromCluster(ctx, &cf, name)
		if err != nil {
			return fmt.Errorf("rollback %s: %w", name, err)
		}
		sink = ep
	}
	config, err := connectors.ExpandEnv(sink.Config, os.LookupEnv)
	if err != nil {
		return fmt.Errorf("rollback %s: sink: %w", name, err)
	}

	var from, now int64
	var where string
	switch sink.Kind {
	case files.Kind:
		if err := files.ValidateSink(config); err != nil {
			return fmt.Errorf("rollback %s: sink: %w", name, err)
		}
		var c files.SinkConfig
		if err := json.Unmarshal(config, &c); err != nil {
			return fmt.Errorf("rollback %s: sink: %w", name, err)
		}
		root, err := filepath.Abs(c.Path)
		if err != nil {
			return err
		}
		from, now, err = rollbackFiles(root, *to)
		if err != nil {
			return fmt.Errorf("rollback %s: %w", name, err)
		}
		where = fmt.Sprintf("%s -> %s", filepath.Join(root, "current"), versionDir(now))
		if rows, ok := markerRows(filepath.Join(root, versionDir(now))); ok {
			where += fmt.Sprintf(" (%d rows)", rows)
		}
	case postgres.Kind:
		c, err := postgres.ParseSinkConfig(config)
		if err != nil {
			return fmt.Errorf("rollback %s: sink: %w", name, err)
		}
		var v postgres.Version
		from, v, err = rollbackPostgres(ctx, c.DSN, c.Table, *to)
		if err != nil {
			return fmt.Errorf("rollback %s: %w", name, err)
		}
		now = v.Version
		where = fmt.Sprintf("view %s -> %s (%d rows, run %s)", c.Table, v.Table, v.Rows, v.Run)
	default:
		return fmt.Errorf("rollback %s: the %q sink keeps no versions to roll back to", name, sink.Kind)
	}
	if from == now {
		fmt.Fprintf(stdout, "%s: already exposes version %d\n  %s\n", name, now, where)
		return nil
	}
	fmt.Fprintf(stdout, "%s: exposed version %d -> %d\n  %s\n", name, from, now, where)
	fmt.Fprintln(stdout, "note: the version `sluice status` shows comes from the cluster, which does not track rollbacks yet: it stays as it was until the next commit")
	return nil
}

// sinkFromCluster would read the pipeline's sink from the cluster. The
// control API returns pipeline statuses without their specs, so it can only
// check that the pipeline exists and ask for --spec.
func sinkFromCluster(ctx context.Context, cf *clientFlags, name string) (protocol.Endpoint, error) {
	nc, err := cf.connect("sluice-rollback")
	if err != nil {
		return protocol.Endpoint{}, err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	ps, err := coordinator.NewClient(nc).Pipelines(ctx)
	if err != nil {
		return protocol.Endpoint{}, err
	}
	for _, p := range ps {
		if p.Name == name {
			return protocol.Endpoint{}, fmt.Errorf("the cluster's API does not return pipeline specs yet: give the spec of %s with --spec FILE", name)
		}
	}
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name
	}
	return protocol.Endpoint{}, fmt.Errorf("no pipeline %q in the cluster (pipelines: %s)", name, dash(strings.Join(names, ", ")))
}

// rollbackPostgres points the view of a postgres sink back and returns the
// version exposed before and the one exposed now.
func rollbackPostgres(ctx context.Context, dsn, table string, to int64) (int64, postgres.Version, error) {
	before, err := postgres.Versions(ctx, dsn, table)
	if err != nil {
		return 0, postgres.Version{}, err
	}
	cur, ok := currentPG(before)
	if !ok {
		return 0, postgres.Version{}, fmt.Errorf("%s has no committed version to roll back from", table)
	}
	if to == cur.Version {
		return cur.Version, cur, nil
	}
	if err := postgres.Rollback(ctx, dsn, table, to); err != nil {
		kept := make([]int64, len(before))
		for i, v := range before {
			kept[i] = v.Version
		}
		return 0, postgres.Version{}, fmt.Errorf("%w (kept versions: %s; exposed: %d)", err, joinVersions(kept), cur.Version)
	}
	after, err := postgres.Versions(ctx, dsn, table)
	if err != nil {
		return 0, postgres.Version{}, err
	}
	now, ok := currentPG(after)
	if !ok {
		return 0, postgres.Version{}, fmt.Errorf("%s: no version is current after the rollback", table)
	}
	return cur.Version, now, nil
}

func currentPG(vs []postgres.Version) (postgres.Version, bool) {
	for _, v := range vs {
		if v.Current {
			return v, true
		}
	}
	return postgres.Version{}, false
}

// rollbackFiles points the "current" symlink of the dataset directory root
// at version to (0: the newest kept version older than the exposed one),
// atomically, and returns the versions exposed before and now. A version is
// kept when its directory v<NNNNNN> holds its _SUCCESS marker.
//
// It belongs in connectors/files as
//
//	func Rollback(root string, toVersion int64) (from, to int64, err error)
//	func Versions(root string) ([]Version, error)
//
// beside Current, sharing the sink's swapCurrent; it lives here until then.
// Like the sink's commit, it takes no lock: a commit landing at the same
// time wins or loses the swap.
func rollbackFiles(root string, to int64) (int64, int64, error) {
	curDir, err := files.Current(root)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, fmt.Errorf("%s has no committed version to roll back from (no current symlink)", root)
	}
	if err != nil {
		return 0, 0, err
	}
	cur, ok := parseVersionDir(filepath.Base(curDir))
	if !ok {
		return 0, 0, fmt.Errorf("%s/current points at %s, which is not a version directory", root, filepath.Base(curDir))
	}
	kept, err := keptVersions(root)
	if err != nil {
		return 0, 0, err
	}
	if to == 0 {
		for _, v := range kept {
			if v < cur {
				to = v
			}
		}
		if to == 0 {
			return 0, 0, fmt.Errorf("no kept version older than the exposed version %d (kept: %s)", cur, joinVersions(kept))
		}
	}
	if to == cur {
		return cur, cur, nil
	}
	if !slices.Contains(kept, to) {
		dir := filepath.Join(root, versionDir(to))
		newest := slices.Max(append(kept, cur))
		switch _, err := os.Stat(dir); {
		case err == nil:
			return 0, 0, fmt.Errorf("version %d is incomplete: %s has no _SUCCESS marker (kept: %s)", to, dir, joinVersions(kept))
		case to > newest:
			return 0, 0, fmt.Errorf("version %d was never committed (newest: %d; kept: %s)", to, newest, joinVersions(kept))
		default:
			return 0, 0, fmt.Errorf("version %d is not kept: pruned by keep_versions, or never committed (kept: %s)", to, joinVersions(kept))
		}
	}
	if err := swapCurrent(root, versionDir(to)); err != nil {
		return 0, 0, err
	}
	return cur, to, nil
}

// keptVersions lists the complete versions of a dataset, oldest first.
func keptVersions(root string) ([]int64, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("list versions: %w", err)
	}
	var vs []int64
	for _, e := range entries {
		v, ok := parseVersionDir(e.Name())
		if !ok || !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, e.Name(), "_SUCCESS")); err == nil {
			vs = append(vs, v)
		}
	}
	slices.Sort(vs)
	return vs, nil
}

// swapCurrent replaces root/current with a symlink to name: a new symlink
// renamed over the old one, so readers see one version or the other.
func swapCurrent(root, name string) error {
	tmp := filepath.Join(root, fmt.Sprintf(".current.rollback-%d.tmp", os.Getpid()))
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("swap current: %w", err)
	}
	if err := os.Symlink(name, tmp); err != nil {
		return fmt.Errorf("swap current: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(root, "current")); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("swap current: %w", err)
	}
	d, err := os.Open(root)
	if err != nil {
		return fmt.Errorf("swap current: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("swap current: sync %s: %w", root, err)
	}
	return nil
}

// versionDir and parseVersionDir follow the files sink's names: v%06d.
func versionDir(v int64) string { return fmt.Sprintf("v%06d", v) }

func parseVersionDir(name string) (int64, bool) {
	if len(name) < 7 || name[0] != 'v' {
		return 0, false
	}
	v, err := strconv.ParseInt(name[1:], 10, 64)
	if err != nil || v < 0 || versionDir(v) != name {
		return 0, false
	}
	return v, true
}

// markerRows reads the row count from a version's _SUCCESS marker.
func markerRows(dir string) (int64, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "_SUCCESS"))
	if err != nil {
		return 0, false
	}
	var m struct {
		Rows int64 `json:"rows"`
	}
	if json.Unmarshal(b, &m) != nil {
		return 0, false
	}
	return m.Rows, true
}

func joinVersions(vs []int64) string {
	if len(vs) == 0 {
		return "none"
	}
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = strconv.FormatInt(v, 10)
	}
	return strings.Join(s, ", ")
}
