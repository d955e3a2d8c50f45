package files

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/objstore"
	"github.com/sluicehq/sluice/protocol"
)

var _ connectors.UnitSource = (*Source)(nil)

// passSpec is the Spec of a partition of a passthrough run: files, or
// byte ranges of one, to copy, and names to remove.
type passSpec struct {
	// Base is the tree's root, symlinks resolved when the run was
	// planned: a local directory or an s3:// URL.
	Base   string      `json:"base"`
	Pieces []passPiece `json:"pieces,omitempty"`
	Remove []string    `json:"remove,omitempty"`
}

// passPiece is a file of a passthrough's partition as it was planned, or
// bytes [Off, Off+Len) of it.
type passPiece struct {
	passObject
	Off int64 `json:"off,omitempty"`
	Len int64 `json:"len"`
}

// PlanUnits plans a passthrough run of the tree under the source's path:
// every file (hidden ones and those starting with '_' included) but those
// an exclude glob leaves out, except the files the target holds already
// in the same version (req.Target: the same size and modification time,
// or on S3 the same ETag). Files are grouped, in path order, into
// partitions of about TargetBytes and at most MaxFiles files; a file
// larger than the range size (TargetBytes rounded down to 64 MiB, at
// least 64 MiB, at most 4 GiB) is split into byte ranges of that size,
// each a partition, which the sink reassembles. Names the target holds
// that the source no longer has (and that are not excluded), where the
// target removes them (connectors.Inventory.Removable), are planned as
// removals, up to 10,000 a partition. ctx bounds the listing.
func (s *Source) PlanUnits(ctx context.Context, req connectors.PlanRequest) (connectors.Plan, error) {
	base, objs, err := s.listTree(ctx)
	if err != nil {
		return connectors.Plan{}, err
	}
	listed := make(map[string]bool, len(objs))
	var puts []passObject
	for _, o := range objs {
		listed[o.Path] = true
		if req.Target != nil {
			if h, ok := req.Target.Lookup(o.Path); ok && h.Size == o.Size && h.Version == o.version() {
				continue
			}
		}
		puts = append(puts, o)
	}
	var removes []string
	if req.Target != nil {
		for name := range req.Target.Removable() {
			if !listed[name] && !excluded(s.cfg.Exclude, name) {
				removes = append(removes, name)
			}
		}
	}
	target, maxFiles := taskBounds(req.Partitioning)
	var parts []protocol.Partition
	add := func(key string, spec passSpec, units int, bytes int64) error {
		spec.Base = base
		raw, err := json.Marshal(spec)
		if err != nil {
			return fmt.Errorf("encode partition spec: %w", err)
		}
		parts = append(parts, protocol.Partition{Key: key, Spec: raw, Rows: int64(units), Bytes: bytes})
		return nil
	}
	for _, o := range puts {
		if rangeSize(target, o.Size) < 0 {
			return connectors.Plan{}, connectors.Permanent(fmt.Errorf("plan: %s: %d bytes is more than a passthrough splits (%d ranges of at most %d bytes)", o.Path, o.Size, maxParts, int64(maxRange)))
		}
	}
	err = planGroups(len(puts), func(i int) int64 { return puts[i].Size },
		func(i int) int64 { return rangeSize(target, puts[i].Size) }, target, maxFiles,
		func(i, j int, bytes int64) error {
			group := make([]passPiece, 0, j-i)
			for _, o := range puts[i:j] {
				group = append(group, passPiece{passObject: o, Len: o.Size})
			}
			return add(fmt.Sprintf("files[%d:%d]", i, j), passSpec{Pieces: group}, j-i, bytes)
		},
		func(i int, off, n int64) error {
			p := passPiece{passObject: puts[i], Off: off, Len: n}
			return add(fmt.Sprintf("%s@%d+%d", p.Path, off, n), passSpec{Pieces: []passPiece{p}}, 1, n)
		})
	if err != nil {
		return connectors.Plan{}, err
	}
	for i := 0; i < len(removes); i += removesPerTask {
		j := min(i+removesPerTask, len(removes))
		if err := add(fmt.Sprintf("remove[%d:%d]", i, j), passSpec{Remove: removes[i:j]}, j-i, 0); err != nil {
			return connectors.Plan{}, err
		}
	}
	return connectors.Plan{Partitions: parts}, nil
}

// rangeSize is the size of the byte ranges a file of size bytes is split
// into, for a target of target bytes a task: target rounded down to
// passBlock, within [passBlock, maxRange], grown to keep the file within
// maxParts ranges; -1 when the file is too large even then.
func rangeSize(target, size int64) int64 {
	r := min(max(passBlock, target/passBlock*passBlock), maxRange)
	if n := (size + r - 1) / r; n > maxParts {
		r = ((size+maxParts-1)/maxParts + passBlock - 1) / passBlock * passBlock
		if r > maxRange {
			return -1
		}
	}
	return r
}

// listTree lists the tree a passthrough copies: the source's path (a
// directory, or an s3:// prefix) without what exclude leaves out. It
// returns the resolved root.
func (s *Source) listTree(ctx context.Context) (string, []passObject, error) {
	skip := func(rel string) bool { return excluded(s.cfg.Exclude, rel) }
	if s.s3 != nil {
		objs, err := s.s3.listTree(ctx, skip)
		if err != nil {
			return "", nil, fmt.Errorf("list %s: %w", s.cfg.Path, err)
		}
		return s.s3.url(""), objs, nil
	}
	base, objs, err := listLocalTree(ctx, s.root, skip, false)
	if err != nil {
		return "", nil, fmt.Errorf("list %s: %w", s.cfg.Path, err)
	}
	return base, objs, nil
}

// ReadUnits reads one partition of a passthrough run: each removal as a
// unit of Remove set, each file (or range of one) as a unit whose Body
// reads its bytes, with Version, and Meta "mtime" (Unix nanoseconds) and,
// for a local file, "mode" (octal permission bits). A file that is gone
// or changed (another size or modification time, or on S3 another ETag)
// since the run was planned is left out: the target keeps what it holds,
// and the next run copies the file as it is then. A file that changes
// while it is read makes its Body fail, and so the task, whose next
// attempt leaves it out. ctx bounds the whole read.
func (s *Source) ReadUnits(ctx context.Context, p protocol.Partition, emit connectors.EmitUnit) error {
	var spec passSpec
	if err := json.Unmarshal(p.Spec, &spec); err != nil {
		return connectors.Permanent(fmt.Errorf("read partition %s: bad spec: %w", p.Key, err))
	}
	for _, name := range spec.Remove {
		if !fs.ValidPath(name) {
			return connectors.Permanent(fmt.Errorf("read partition %s: bad file path %q", p.Key, name))
		}
		if err := emit(ctx, connectors.Unit{Name: name, Remove: true, Position: "remove " + name}); err != nil {
			return err
		}
	}
	onS3 := objstore.IsURL(spec.Base)
	if onS3 {
		if loc, err := objstore.ParseURL(spec.Base); err != nil || s.s3 == nil || loc.Bucket != s.s3.b.Name() {
			return connectors.Permanent(fmt.Errorf("read partition %s: base %s is not in the bucket of the source's path %s", p.Key, spec.Base, s.cfg.Path))
		}
	}
	for _, pc := range spec.Pieces {
		if err := ctx.Err(); err != nil {
			return err
		}
		if pc.Path == "" || pc.Off < 0 || pc.Len < 0 || pc.Off+pc.Len > pc.Size {
			return connectors.Permanent(fmt.Errorf("read partition %s: bad piece %q@%d+%d of %d bytes", p.Key, pc.Path, pc.Off, pc.Len, pc.Size))
		}
		var err error
		if onS3 {
			err = s.readS3Piece(ctx, spec.Base, pc, emit)
		} else {
			err = readLocalPiece(ctx, spec.Base, pc, emit)
		}
		if err != nil {
			if cerr := ctx.Err(); cerr != nil {
				return cerr
			}
			return fmt.Errorf("read partition %s: %w", p.Key, err)
		}
	}
	return nil
}

// unitOf is the unit of piece pc, without its Body.
func unitOf(pc passPiece) connectors.Unit {
	u := connectors.Unit{Name: pc.Path, Offset: pc.Off, Length: pc.Len, Size: pc.Size, Version: pc.version(),
		Meta:     map[string]string{"mtime": strconv.FormatInt(pc.MTime, 10)},
		Position: pc.Path}
	if pc.Mode != 0 {
		u.Meta["mode"] = strconv.FormatUint(uint64(pc.Mode), 8)
	}
	if pc.Len != pc.Size {
		u.Position = fmt.Sprintf("%s@%d+%d", pc.Path, pc.Off, pc.Len)
	}
	return u
}

// readLocalPiece emits piece pc of the local tree base, unless the file
// is gone or changed since planning.
func readLocalPiece(ctx context.Context, base string, pc passPiece, emit connectors.EmitUnit) error {
	if !fs.ValidPath(pc.Path) {
		return connectors.Permanent(fmt.Errorf("bad file path %q", pc.Path))
	}
	f, err := os.Open(filepath.Join(base, filepath.FromSlash(pc.Path)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil // gone since planning
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", pc.Path, err)
	}
	defer f.Close()
	same := func() (bool, error) {
		st, err := f.Stat()
		if err != nil {
			return false, fmt.Errorf("stat %s: %w", pc.Path, err)
		}
		return st.Size() == pc.Size && st.ModTime().UnixNano() == pc.MTime, nil
	}
	if ok, err := same(); err != nil || !ok {
		return err // changed since planning: left for the next run
	}
	u := unitOf(pc)
	u.Body = &checkedBody{r: io.NewSectionReader(f, pc.Off, pc.Len), path: pc.Path, same: same}
	return emit(ctx, u)
}

// checkedBody reads a piece of a file and, at its end, checks that the
// file did not change while it was read.
type checkedBody struct {
	r    io.Reader
	path string
	same func() (bool, error)
	done bool
}

func (b *checkedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF && !b.done {
		ok, serr := b.same()
		switch {
		case serr != nil:
			return n, serr
		case !ok:
			return n, fmt.Errorf("%s changed while it was read (its next copy is the next run's)", b.path)
		}
		b.done = true
	}
	return n, err
}

// s3FirstRead is how much of an object a piece reads before it is
// emitted: a replaced object fails that read and is left out.
const s3FirstRead = 1 << 20

// readS3Piece emits piece pc of the tree base on S3, unless the object is
// gone or replaced since planning. Every read carries If-Match with the
// planned ETag.
func (s *Source) readS3Piece(ctx context.Context, base string, pc passPiece, emit connectors.EmitUnit) error {
	loc, err := objstore.ParseURL(base)
	if err != nil {
		return connectors.Permanent(err)
	}
	obj := objstore.Object{Key: loc.Join(pc.Path).Key, Size: pc.Size, ETag: `"` + pc.ETag + `"`}
	r := s.s3.b.NewReader(ctx, obj, pc.Off+pc.Len)
	defer r.Close()
	first := make([]byte, min(pc.Len, s3FirstRead))
	if len(first) > 0 {
		n, err := r.ReadAt(first, pc.Off)
		if errors.Is(err, objstore.ErrChanged) || errors.Is(err, fs.ErrNotExist) {
			return nil // replaced or gone since planning
		}
		if err != nil && !(err == io.EOF && n == len(first)) {
			return fmt.Errorf("read %s: %w", pc.Path, err)
		}
	}
	u := unitOf(pc)
	rest := int64(len(first))
	u.Body = io.MultiReader(bytes.NewReader(first), io.NewSectionReader(r, pc.Off+rest, pc.Len-rest))
	return emit(ctx, u)
}
