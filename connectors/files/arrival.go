package files

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/objstore"
)

// ByModified is how a spec names the position of a files source read by
// arrival: incremental: {by: modified}. Each run loads the files that are
// new or changed (another size, modification time or S3 ETag) since the last
// committed run, every file once per change.
const ByModified = "modified"

// maxFilesPerRun bounds the files one run by arrival plans: the oldest
// first (by modification time, then path); the others wait for the next
// run.
const maxFilesPerRun = 100_000

// checkByModified refuses to read by arrival a configuration laid out by
// time partitions, which is read by windows. An invalid configuration is
// left to the validator.
func checkByModified(raw json.RawMessage) error {
	c, err := parseSourceConfig(raw)
	if err == nil && c.Layout != "" {
		return errors.New("a files source laid out by time partitions (layout) is read by windows, one partition per run: leave layout out to read files by arrival")
	}
	return nil
}

// The position of a files source read by arrival is a manifest: the path,
// size and modification time of every file the committed runs loaded that
// the directory still holds. It grows with the directory, so it is kept
// beside the data, not in Raft: a file of its own per manifest, named by
// its content (_manifest-<sha256 prefix>.jsonl, one JSON object per file,
// sorted by path), written once at planning in the pipeline's directory
// under the manifest directory (manifest_dir, <path>/_sluice/manifests by
// default). The watermark names it ("files:<count>@<sha256 prefix>"), so
// the position moves only with the Raft entry that commits the run; a
// failed run's manifest is never named and is removed by the next plan,
// which keeps only the committed one and its own.

// manifestEntry is one file of a manifest. On S3 it holds the object's
// ETag too: a modification time there counts whole seconds, so an object
// rewritten within the second at the same size differs only by its ETag.
type manifestEntry struct {
	Path  string `json:"p"`
	Size  int64  `json:"s"`
	MTime int64  `json:"m"`
	ETag  string `json:"e,omitempty"`
}

func entryOf(f fileRef) manifestEntry {
	return manifestEntry{Path: f.Path, Size: f.Size, MTime: f.MTime, ETag: f.ETag}
}

const manifestPrefix, manifestExt = "_manifest-", ".jsonl"

// manifestStore keeps the manifests of one pipeline.
type manifestStore interface {
	read(ctx context.Context, name string) ([]byte, error)
	// write stores data under name, durably, whole or not at all.
	write(ctx context.Context, name string, data []byte) error
	names(ctx context.Context) ([]string, error)
	remove(ctx context.Context, name string) error
}

// localManifests keeps manifests in a local directory.
type localManifests struct{ dir string }

func (m localManifests) read(_ context.Context, name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(m.dir, name))
}

func (m localManifests) write(_ context.Context, name string, data []byte) error {
	if err := os.MkdirAll(m.dir, 0o755); err != nil {
		return err
	}
	var suffix [6]byte
	rand.Read(suffix[:])
	tmp := filepath.Join(m.dir, ".tmp-"+name+"-"+hex.EncodeToString(suffix[:]))
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(m.dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(m.dir)
}

func (m localManifests) names(context.Context) ([]string, error) {
	es, err := os.ReadDir(m.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	var out []string
	for _, e := range es {
		if strings.HasPrefix(e.Name(), manifestPrefix) || strings.HasPrefix(e.Name(), ".tmp-") {
			out = append(out, e.Name())
		}
	}
	return out, err
}

func (m localManifests) remove(_ context.Context, name string) error {
	if err := os.Remove(filepath.Join(m.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// s3Manifests keeps manifests under a prefix (ending in '/') of a
// bucket. A PUT replaces an object whole, so a manifest is written in one.
type s3Manifests struct {
	b      *objstore.Bucket
	prefix string
}

func (m s3Manifests) read(ctx context.Context, name string) ([]byte, error) {
	return m.b.Get(ctx, m.prefix+name)
}

func (m s3Manifests) write(ctx context.Context, name string, data []byte) error {
	return m.b.Put(ctx, m.prefix+name, data)
}

func (m s3Manifests) names(ctx context.Context) ([]string, error) {
	objs, _, err := m.b.ListDir(ctx, m.prefix)
	var out []string
	for _, o := range objs {
		if name := strings.TrimPrefix(o.Key, m.prefix); strings.HasPrefix(name, manifestPrefix) {
			out = append(out, name)
		}
	}
	return out, err
}

func (m s3Manifests) remove(ctx context.Context, name string) error {
	return m.b.Delete(ctx, m.prefix+name)
}

// manifests returns the store of the manifests of pipeline, for a source
// whose listing resolved to base: a local directory, or a prefix of the
// source's bucket (manifest_dir may name another prefix of that bucket,
// or a local directory).
func (s *Source) manifests(base, pipeline string) (manifestStore, error) {
	if err := checkName("pipeline", pipeline); err != nil {
		return nil, err
	}
	dir := s.cfg.ManifestDir
	if dir == "" {
		dir = joinPath(base, "_sluice/manifests")
	}
	if !objstore.IsURL(dir) {
		return localManifests{dir: filepath.Join(dir, pipeline)}, nil
	}
	loc, err := objstore.ParseURL(dir)
	if err != nil {
		return nil, connectors.Permanent(fmt.Errorf("manifest_dir: %w", err))
	}
	if s.s3 == nil || loc.Bucket != s.s3.b.Name() {
		return nil, connectors.Permanent(fmt.Errorf("manifest_dir %s: manifests on S3 are kept in the bucket of the source's path", dir))
	}
	return s3Manifests{b: s.s3.b, prefix: loc.Join(pipeline).Key + "/"}, nil
}

// parseArrivalWatermark returns the manifest name and file count a
// watermark names.
func parseArrivalWatermark(wm string) (name string, files int, err error) {
	n, hash, ok := strings.Cut(strings.TrimPrefix(wm, "files:"), "@")
	files, cerr := strconv.Atoi(n)
	if !ok || !strings.HasPrefix(wm, "files:") || cerr != nil || len(hash) != 16 {
		return "", 0, connectors.Permanent(fmt.Errorf("watermark %q is not a manifest of a files source read by arrival (files:<count>@<hash>): was the pipeline read another way before?", wm))
	}
	return manifestPrefix + hash + manifestExt, files, nil
}

// readManifest reads the manifest a watermark names ("": none yet).
func readManifest(ctx context.Context, store manifestStore, wm string) (map[string]manifestEntry, string, error) {
	out := map[string]manifestEntry{}
	if wm == "" {
		return out, "", nil
	}
	name, n, err := parseArrivalWatermark(wm)
	if err != nil {
		return nil, "", err
	}
	data, err := store.read(ctx, name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", connectors.Permanent(fmt.Errorf("the manifest %s of the watermark %s is missing (was manifest_dir changed or cleaned?)", name, wm))
	}
	if err != nil {
		return nil, "", fmt.Errorf("read manifest %s: %w", name, err)
	}
	if manifestName(data) != name {
		return nil, "", connectors.Permanent(fmt.Errorf("the manifest %s of the watermark %s does not hold what it was written with", name, wm))
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e manifestEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, "", connectors.Permanent(fmt.Errorf("manifest %s: %w", name, err))
		}
		out[e.Path] = e
	}
	if len(out) != n {
		return nil, "", connectors.Permanent(fmt.Errorf("the manifest %s holds %d files, its watermark says %d", name, len(out), n))
	}
	return out, name, sc.Err()
}

// manifestName is the name of a manifest holding data.
func manifestName(data []byte) string {
	h := sha256.Sum256(data)
	return manifestPrefix + hex.EncodeToString(h[:8]) + manifestExt
}

// arrivals picks, among the files a run by arrival lists, those new or
// changed since the manifest its watermark names: at most maxFilesPerRun,
// oldest first. It writes the manifest of the position the run reaches
// (the files still listed, those picked as they are now, the others as
// the old manifest knew them) and returns the picked files, in the order
// they arrived, and the watermark naming it; an unchanged position keeps
// the watermark. Manifests of the pipeline other than these two are
// removed.
func (s *Source) arrivals(ctx context.Context, req connectors.PlanRequest, base string, files []fileRef) ([]fileRef, string, error) {
	if err := s.notCompacted(ctx, base); err != nil {
		return nil, "", err
	}
	store, err := s.manifests(base, req.Pipeline)
	if err != nil {
		return nil, "", err
	}
	old, oldName, err := readManifest(ctx, store, req.Watermark)
	if err != nil {
		return nil, "", fmt.Errorf("plan files by arrival: %w", err)
	}
	var fresh []fileRef
	for _, f := range files {
		if e, ok := old[f.Path]; !ok || e != entryOf(f) {
			fresh = append(fresh, f)
		}
	}
	slices.SortFunc(fresh, func(a, b fileRef) int {
		return cmp.Or(cmp.Compare(a.MTime, b.MTime), strings.Compare(a.Path, b.Path))
	})
	limit := maxFilesPerRun
	if s.filesPerRun > 0 {
		limit = s.filesPerRun
	}
	fresh = fresh[:min(len(fresh), limit)]
	picked := map[string]bool{}
	for _, f := range fresh {
		picked[f.Path] = true
	}
	var data []byte
	n := 0
	for _, f := range files { // sorted by path
		e, ok := old[f.Path]
		if picked[f.Path] {
			e, ok = entryOf(f), true
		}
		if !ok {
			continue // new, and left for the next run
		}
		line, err := json.Marshal(e)
		if err != nil {
			return nil, "", err
		}
		data = append(append(data, line...), '\n')
		n++
	}
	name := manifestName(data)
	wm := fmt.Sprintf("files:%d@%s", n, strings.TrimSuffix(strings.TrimPrefix(name, manifestPrefix), manifestExt))
	if name == oldName {
		return fresh, req.Watermark, nil
	}
	if err := store.write(ctx, name, data); err != nil {
		return nil, "", fmt.Errorf("plan files by arrival: write manifest: %w", err)
	}
	names, err := store.names(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("plan files by arrival: list manifests: %w", err)
	}
	for _, other := range names {
		if other != name && other != oldName {
			if err := store.remove(ctx, other); err != nil {
				return nil, "", fmt.Errorf("plan files by arrival: remove manifest: %w", err)
			}
		}
	}
	return fresh, wm, nil
}

// notCompacted refuses to read by arrival a dataset that a compaction
// rewrites (a switch manifest at base or above it): a rewrite's files are
// new files to a run by arrival, and hold the rows of files it loaded
// already, which it would load again.
func (s *Source) notCompacted(ctx context.Context, base string) error {
	open := treeAt(localTreeAt)
	if s.s3 != nil {
		open = s3TreeAt(s.s3)
	}
	root, _, _, m, err := findSwitch(ctx, open, base)
	if err != nil {
		return fmt.Errorf("plan files by arrival: %w", err)
	}
	if m != nil {
		return connectors.Permanent(fmt.Errorf("plan files by arrival: %s is a dataset a compaction rewrites (%s, run %s): its rewrites would be new files to a run by arrival, holding rows loaded before; load it by windows (a source layout) or by its writer's runs, or do not compact it",
			root, joinPath(root, switchFile), m.Run))
	}
	return nil
}
