package iceberg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	icebergio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/io/gocloud/blobfs"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"
)

// S3 uploads: parts of 16 MiB, four at a time, while the writer goes on
// (an object up to 16 MiB is one PUT).
const (
	uploadPartSize    = 16 << 20
	uploadConcurrency = 4
)

// store reads and writes the objects of a table's warehouse through the
// table's FileIO: files on a local disk, or objects of an S3 bucket.
type store struct{ fs icebergio.IO }

// objectWriter writes one object; Abort discards it (an S3 upload is
// aborted, a local file removed).
type objectWriter interface {
	Write(p []byte) (int, error)
	Close() error
	Abort() error
}

// create starts writing the object at path, replacing any.
func (s store) create(ctx context.Context, path string) (objectWriter, error) {
	if b, ok := s.fs.(*blobfs.FileIO); ok {
		// Cancelling the writer's context aborts the upload.
		wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		w, err := b.NewWriter(wctx, path, true, &blob.WriterOptions{BufferSize: uploadPartSize, MaxConcurrency: uploadConcurrency})
		if err != nil {
			cancel()
			return nil, fmt.Errorf("create %s: %w", path, err)
		}
		return &blobWriter{w: w, cancel: cancel}, nil
	}
	wf, ok := s.fs.(icebergio.WriteFileIO)
	if !ok {
		return nil, fmt.Errorf("create %s: the warehouse's storage cannot be written", path)
	}
	f, err := wf.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	return &localWriter{f: f, fs: s.fs, path: path}, nil
}

type blobWriter struct {
	w      *blobfs.Writer
	cancel context.CancelFunc
}

func (w *blobWriter) Write(p []byte) (int, error) { return w.w.Write(p) }

func (w *blobWriter) Close() error {
	defer w.cancel()
	return w.w.Close()
}

func (w *blobWriter) Abort() error {
	w.cancel()
	w.w.Close() // fails: the context is cancelled, and the upload aborted
	return nil
}

type localWriter struct {
	f    icebergio.FileWriter
	fs   icebergio.IO
	path string
}

func (w *localWriter) Write(p []byte) (int, error) { return w.f.Write(p) }

func (w *localWriter) Close() error {
	if f, ok := w.f.(*os.File); ok {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	return w.f.Close()
}

func (w *localWriter) Abort() error {
	w.f.Close()
	if err := w.fs.Remove(w.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// put writes a small object at path whole: a reader sees the old one or
// the new one (a PUT on S3; a rename over it on a local disk).
func (s store) put(path string, data []byte) error {
	if _, ok := s.fs.(*blobfs.FileIO); !ok {
		if p, ok := localPath(path); ok {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			tmp := p + ".tmp"
			if err := os.WriteFile(tmp, data, 0o644); err != nil {
				return err
			}
			return os.Rename(tmp, p)
		}
	}
	wf, ok := s.fs.(icebergio.WriteFileIO)
	if !ok {
		return fmt.Errorf("write %s: the warehouse's storage cannot be written", path)
	}
	return wf.WriteFile(path, data)
}

// read reads a small object whole.
func (s store) read(path string) ([]byte, error) {
	if r, ok := s.fs.(icebergio.ReadFileIO); ok {
		return r.ReadFile(path)
	}
	f, err := s.fs.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, st.Size())
	_, err = f.ReadAt(buf, 0)
	return buf, err
}

// list returns the objects under the directory prefix (no trailing
// slash), recursively; none when it does not exist.
func (s store) list(prefix string) ([]string, error) {
	l, ok := s.fs.(icebergio.ListableIO)
	if !ok {
		return nil, fmt.Errorf("list %s: the warehouse's storage cannot be listed", prefix)
	}
	var out []string
	err := l.WalkDir(prefix, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fs.SkipDir
			}
			return err
		}
		if !d.IsDir() {
			out = append(out, path)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	if _, local := s.fs.(icebergio.LocalFS); local && strings.HasPrefix(prefix, "file://") {
		for i, p := range out {
			out[i] = "file://" + p
		}
	}
	return out, nil
}

// remove deletes objects; a missing one is no error.
func (s store) remove(ctx context.Context, paths []string) error {
	if len(paths) == 0 {
		return nil
	}
	if b, ok := s.fs.(icebergio.BulkRemovableIO); ok {
		_, err := b.DeleteFiles(ctx, paths)
		return err
	}
	var errs []error
	for _, p := range paths {
		if err := s.fs.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// abortUploads aborts the multipart uploads in progress under the
// directory prefix of an S3 warehouse: those of attempts that died
// uploading (their objects never appear, but the parts stay stored until
// aborted). A local warehouse has none.
func (s store) abortUploads(ctx context.Context, prefix string) error {
	b, ok := s.fs.(*blobfs.FileIO)
	if !ok {
		return nil
	}
	var cl *s3.Client
	if !b.Bucket.As(&cl) {
		return nil
	}
	u, err := url.Parse(prefix)
	if err != nil {
		return err
	}
	bucket, key := u.Host, strings.TrimPrefix(u.Path, "/")+"/"
	var errs []error
	in := &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket), Prefix: aws.String(key)}
	for {
		out, err := cl.ListMultipartUploads(ctx, in)
		if err != nil {
			return fmt.Errorf("list uploads under %s: %w", prefix, err)
		}
		for _, up := range out.Uploads {
			if _, err := cl.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(bucket), Key: up.Key, UploadId: up.UploadId}); err != nil {
				errs = append(errs, fmt.Errorf("abort upload of %s: %w", aws.ToString(up.Key), err))
			}
		}
		if !aws.ToBool(out.IsTruncated) {
			return errors.Join(errs...)
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}

// localPath returns the local path of a warehouse location.
func localPath(loc string) (string, bool) {
	switch {
	case strings.HasPrefix(loc, "file://"):
		return strings.TrimPrefix(loc, "file://"), true
	case filepath.IsAbs(loc):
		return loc, true
	}
	return "", false
}

// Upload writes what r holds as the object at location (s3://bucket/key,
// or a local path) the way a task writes its data files: on S3 an upload
// in parts of 16 MiB, four at a time, while r is read in 1 MiB pieces;
// cfg gives the S3 settings. It returns the bytes written. The benchmark
// compares it with a bare upload.
func Upload(ctx context.Context, cfg Config, location string, r io.Reader) (int64, error) {
	fs, err := icebergio.LoadFS(ctx, cfg.s3Props(), location)
	if err != nil {
		return 0, fmt.Errorf("upload %s: %w", location, err)
	}
	w, err := store{fs: fs}.create(ctx, location)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, rerr := r.Read(buf)
		if k > 0 {
			if _, err := w.Write(buf[:k]); err != nil {
				w.Abort()
				return n, fmt.Errorf("upload %s: %w", location, err)
			}
			n += int64(k)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			w.Abort()
			return n, fmt.Errorf("upload %s: %w", location, rerr)
		}
	}
	if err := w.Close(); err != nil {
		return n, fmt.Errorf("upload %s: %w", location, err)
	}
	return n, nil
}
