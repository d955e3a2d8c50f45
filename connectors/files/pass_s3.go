package files

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/objstore"
)

// s3Pass is a passthrough's target and state in one bucket: staged
// objects are copied into place on the server.
type s3Pass struct {
	target *s3Root
	state  *s3Root
}

// stagedKey is the key of a unit staged on S3: a whole file under
// objects/, a range under parts/<path>/<offset>.
func (p *s3Pass) stagedKey(run, name string, off int64, whole bool) string {
	if whole {
		return p.state.key(path.Join(passStagingRel(run), "objects", name))
	}
	return p.state.key(path.Join(passStagingRel(run), "parts", name, fmt.Sprintf("%020d", off)))
}

func (p *s3Pass) listTarget(ctx context.Context) ([]passObject, error) {
	return p.target.listTree(ctx, nil)
}

// stage uploads the unit to its staged key, every request carrying the
// MD5 of its bytes, which the store checks.
func (p *s3Pass) stage(ctx context.Context, run string, _ connectors.TaskRef, u connectors.Unit, buf []byte) ([]string, error) {
	w := p.state.b.NewWriterWith(p.stagedKey(run, u.Name, u.Offset, u.Offset == 0 && u.Length == u.Size), objstore.WriteOptions{ContentMD5: true})
	stop := context.AfterFunc(ctx, w.Interrupt)
	defer stop()
	blocks, n, err := copyHashed(ctx, w, u.Body, u.Offset, buf)
	if err == nil && n != u.Length {
		err = fmt.Errorf("%s: the source gave %d bytes, want %d", u.Position, n, u.Length)
	}
	if err != nil {
		if aerr := w.Abort(context.WithoutCancel(ctx)); aerr != nil {
			err = errors.Join(err, aerr)
		}
		return nil, err
	}
	size, err := w.Close(ctx)
	if err != nil {
		return nil, err
	}
	if size != n {
		return nil, fmt.Errorf("%s: uploaded %d bytes, want %d", u.Position, size, n)
	}
	return blocks, nil
}

// reuse takes nothing an earlier attempt staged on S3: a retried task
// uploads its files again.
func (p *s3Pass) reuse(context.Context, string, connectors.Unit, []byte) ([]string, bool, error) {
	return nil, false, nil
}

// place copies a staged file into place on the server, or makes a split
// file of its staged ranges (a multipart upload of server-side copies).
func (p *s3Pass) place(ctx context.Context, run string, pl placement) (string, error) {
	dst := p.target.key(pl.Path)
	var etag string
	var err error
	if pl.Offs == nil {
		etag, err = p.state.b.CopyETag(ctx, objstore.Object{Key: p.stagedKey(run, pl.Path, 0, true), Size: pl.Size}, dst)
	} else {
		srcs := make([]objstore.Object, len(pl.Offs))
		for i, off := range pl.Offs {
			end := pl.Size
			if i+1 < len(pl.Offs) {
				end = pl.Offs[i+1]
			}
			srcs[i] = objstore.Object{Key: p.stagedKey(run, pl.Path, off, false), Size: end - off}
		}
		etag, err = p.state.b.Compose(ctx, dst, srcs)
	}
	if errors.Is(err, fs.ErrNotExist) {
		// Staged no more: put in place by an earlier commit?
		o, herr := p.target.b.Head(ctx, dst)
		if herr != nil || o.Size != pl.Size {
			return "", fmt.Errorf("its staging is missing: %w", err)
		}
		etag, err = o.ETag, nil
	}
	if err != nil {
		return "", err
	}
	return passObject{ETag: trimETag(etag)}.version(), nil
}

func (p *s3Pass) flush(context.Context) error { return nil }

func (p *s3Pass) remove(ctx context.Context, name string) error {
	return p.target.b.Delete(ctx, p.target.key(name))
}

func (p *s3Pass) read(ctx context.Context, rel string) ([]byte, error) {
	return p.state.b.Get(ctx, p.state.key(rel))
}

func (p *s3Pass) write(ctx context.Context, rel string, data []byte) error {
	return p.state.b.Put(ctx, p.state.key(rel), data)
}

func (p *s3Pass) delete(ctx context.Context, rel string) error {
	return p.state.b.Delete(ctx, p.state.key(rel))
}

func (p *s3Pass) names(ctx context.Context, rel string) ([]string, error) {
	objs, _, err := p.state.b.ListDir(ctx, p.state.dir(rel))
	if err != nil {
		return nil, err
	}
	out := make([]string, len(objs))
	for i, o := range objs {
		out[i] = path.Base(o.Key)
	}
	return out, nil
}

func (p *s3Pass) clean(ctx context.Context, run string) error {
	return p.state.b.DeletePrefix(ctx, p.state.dir(passStagingRel(run)))
}

func (p *s3Pass) placeConcurrency() int { return copyConcurrency }
