package iceberg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	icebergio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/io/gocloud/blobfs"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"golang.org/x/sync/errgroup"
)

// S3 uploads: parts of 8 MiB, four in flight while the writer goes on (an
// object smaller than a part is one PUT).
const (
	uploadPartSize    = 8 << 20
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
	if cl, bucket, key, ok := s.s3(path); ok {
		return newS3Writer(ctx, cl, bucket, key), nil
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

// s3 returns the S3 client of an S3 warehouse's FileIO, and the bucket
// and key of location in it.
func (s store) s3(location string) (cl *s3.Client, bucket, key string, ok bool) {
	b, isBlob := s.fs.(*blobfs.FileIO)
	if !isBlob || !b.Bucket.As(&cl) {
		return nil, "", "", false
	}
	u, err := url.Parse(location)
	if err != nil || u.Host == "" {
		return nil, "", "", false
	}
	return cl, u.Host, strings.TrimPrefix(u.Path, "/"), true
}

// s3Writer uploads an object as it is written: parts of uploadPartSize,
// uploadConcurrency of them in flight while the writer goes on (a Write
// waits when they all are), completed by Close; an object smaller than a
// part is one PUT at Close. Abort aborts the upload.
type s3Writer struct {
	ctx    context.Context
	cancel context.CancelFunc
	cl     *s3.Client
	bucket string
	key    string
	g      *errgroup.Group
	gctx   context.Context

	buf   []byte
	id    *string // the multipart upload, once started
	parts []types.CompletedPart

	mu   sync.Mutex // guards the ETags of parts and free
	free [][]byte   // part buffers whose upload ended
}

func newS3Writer(ctx context.Context, cl *s3.Client, bucket, key string) *s3Writer {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	g, gctx := errgroup.WithContext(wctx)
	g.SetLimit(uploadConcurrency)
	return &s3Writer{ctx: wctx, cancel: cancel, cl: cl, bucket: bucket, key: key, g: g, gctx: gctx,
		buf: make([]byte, 0, uploadPartSize)}
}

func (w *s3Writer) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), uploadPartSize-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p, n = p[k:], n+k
		if len(w.buf) == uploadPartSize {
			if err := w.sendPart(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// sendPart starts the upload of the buffered part, once one of the
// uploads in flight has ended when they all are.
func (w *s3Writer) sendPart() error {
	if w.gctx.Err() != nil {
		return w.g.Wait()
	}
	if w.id == nil {
		out, err := w.cl.CreateMultipartUpload(w.ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(w.bucket), Key: aws.String(w.key)})
		if err != nil {
			return fmt.Errorf("start the upload of %s: %w", w.key, err)
		}
		w.id = out.UploadId
	}
	body, num := w.buf, int32(len(w.parts)+1)
	w.mu.Lock()
	w.parts = append(w.parts, types.CompletedPart{PartNumber: aws.Int32(num)})
	w.mu.Unlock()
	w.g.Go(func() error {
		out, err := w.cl.UploadPart(w.gctx, &s3.UploadPartInput{Bucket: aws.String(w.bucket), Key: aws.String(w.key),
			UploadId: w.id, PartNumber: aws.Int32(num), Body: bytes.NewReader(body)})
		w.mu.Lock()
		defer w.mu.Unlock()
		w.free = append(w.free, body[:0])
		if err != nil {
			return fmt.Errorf("upload part %d of %s: %w", num, w.key, err)
		}
		w.parts[num-1].ETag = out.ETag
		return nil
	})
	w.mu.Lock()
	if n := len(w.free); n > 0 {
		w.buf, w.free = w.free[n-1], w.free[:n-1]
	} else {
		w.buf = make([]byte, 0, uploadPartSize)
	}
	w.mu.Unlock()
	return nil
}

func (w *s3Writer) Close() error {
	defer w.cancel()
	if w.id == nil {
		_, err := w.cl.PutObject(w.ctx, &s3.PutObjectInput{Bucket: aws.String(w.bucket), Key: aws.String(w.key), Body: bytes.NewReader(w.buf)})
		if err != nil {
			return fmt.Errorf("upload %s: %w", w.key, err)
		}
		return nil
	}
	if len(w.buf) > 0 {
		if err := w.sendPart(); err != nil {
			w.Abort()
			return err
		}
	}
	if err := w.g.Wait(); err != nil {
		w.Abort()
		return err
	}
	_, err := w.cl.CompleteMultipartUpload(w.ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(w.bucket), Key: aws.String(w.key),
		UploadId: w.id, MultipartUpload: &types.CompletedMultipartUpload{Parts: w.parts}})
	if err != nil {
		return fmt.Errorf("complete the upload of %s: %w", w.key, err)
	}
	return nil
}

func (w *s3Writer) Abort() error {
	w.cancel()
	w.g.Wait()
	if w.id == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := w.cl.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(w.bucket), Key: aws.String(w.key), UploadId: w.id})
	w.id = nil
	return err
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
	cl, bucket, key, ok := s.s3(prefix)
	if !ok {
		return nil
	}
	key += "/"
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
// in parts of 8 MiB, four in flight, while r is read in 1 MiB pieces;
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
