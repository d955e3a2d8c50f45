package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"golang.org/x/sync/errgroup"
)

// ErrChanged is wrapped by the error of a read whose object no longer has
// the ETag it was opened with: it was replaced since.
var ErrChanged = errors.New("object changed")

// Defaults of a Bucket.
const (
	// DefaultPartSize is the size of the parts of a multipart upload (and
	// the size under which a Writer sends one PutObject instead).
	DefaultPartSize = 8 << 20
	// DefaultUploads is how many parts of one Writer are uploaded at once.
	DefaultUploads = 4
	// maxCopy is the largest object CopyObject copies; larger ones are
	// copied in parts (UploadPartCopy).
	maxCopy = 5 << 30
	// copyPartSize is the size of the parts of a multipart copy.
	copyPartSize = 512 << 20
	// deleteBatch is the most keys one DeleteObjects request takes.
	deleteBatch = 1000
	// abortTimeout bounds the abort of a failed multipart upload.
	abortTimeout = 30 * time.Second
)

// Bucket reads and writes the objects of one bucket. It is safe for
// concurrent use.
type Bucket struct {
	client *s3.Client
	name   string
	// transport carries the client's requests; nil for a client made
	// elsewhere.
	transport *http.Transport
	// Tunables; tests make them small.
	partSize  int
	uploads   int
	pageSize  int32
	maxCopy   int64
	copyPart  int64
	partBufs  sync.Pool
	readAhead int64
}

func newBucket(client *s3.Client, name string) *Bucket {
	b := &Bucket{client: client, name: name, partSize: DefaultPartSize, uploads: DefaultUploads,
		maxCopy: maxCopy, copyPart: copyPartSize, readAhead: maxReadAhead}
	b.partBufs.New = func() any { buf := make([]byte, 0, b.partSize); return &buf }
	return b
}

// Close releases the idle connections of the client; requests made later
// open new ones.
func (b *Bucket) Close() error {
	if b.transport != nil {
		b.transport.CloseIdleConnections()
	}
	return nil
}

// Name returns the bucket's name.
func (b *Bucket) Name() string { return b.name }

// URL returns the s3:// URL of key in the bucket.
func (b *Bucket) URL(key string) string { return Location{Bucket: b.name, Key: key}.String() }

// Object describes one object.
type Object struct {
	Key     string
	Size    int64
	ModTime time.Time
	// ETag identifies the object's content (quoted, as the store sends
	// it); a replaced object has another.
	ETag string
}

// classify wraps err with fs.ErrNotExist for a missing object or bucket
// and with ErrChanged for a failed If-Match precondition.
func classify(err error) error {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		switch re.HTTPStatusCode() {
		case http.StatusNotFound:
			return fmt.Errorf("%w (%w)", fs.ErrNotExist, err)
		case http.StatusPreconditionFailed:
			return fmt.Errorf("%w (%w)", ErrChanged, err)
		}
	}
	var nsk *types.NoSuchKey
	if errors.As(err, &nsk) {
		return fmt.Errorf("%w (%w)", fs.ErrNotExist, err)
	}
	return err
}

// Head returns what describes the object key; an error wrapping
// fs.ErrNotExist when there is none.
func (b *Bucket) Head(ctx context.Context, key string) (Object, error) {
	out, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.name, Key: &key})
	if err != nil {
		return Object{}, fmt.Errorf("head %s: %w", b.URL(key), classify(err))
	}
	return Object{Key: key, Size: aws.ToInt64(out.ContentLength), ModTime: aws.ToTime(out.LastModified), ETag: aws.ToString(out.ETag)}, nil
}

// Exists reports whether the object key exists.
func (b *Bucket) Exists(ctx context.Context, key string) (bool, error) {
	_, err := b.Head(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// Get returns the whole content of a small object (a marker, a pointer);
// an error wrapping fs.ErrNotExist when there is none.
func (b *Bucket) Get(ctx context.Context, key string) ([]byte, error) {
	out, err := b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.name, Key: &key})
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", b.URL(key), classify(err))
	}
	defer out.Body.Close()
	data, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", b.URL(key), err)
	}
	return data, nil
}

// Put writes data as the object key in one request, replacing any object
// of that key atomically: readers see the old content or the new one.
func (b *Bucket) Put(ctx context.Context, key string, data []byte) error {
	return b.put(ctx, key, data, nil)
}

// put writes data as the object key, with Content-MD5 when md5 is set.
func (b *Bucket) put(ctx context.Context, key string, data []byte, md5 *string) error {
	_, err := b.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &b.name, Key: &key, ContentMD5: md5,
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data)))})
	if err != nil {
		return fmt.Errorf("put %s: %w", b.URL(key), err)
	}
	return nil
}

// List calls fn for every object whose key starts with prefix, in key
// order, a page of up to 1000 at a time. Keys ending in '/' (directory
// markers some stores keep) are skipped. An error from fn stops the
// listing and is returned.
func (b *Bucket) List(ctx context.Context, prefix string, fn func(Object) error) error {
	_, err := b.list(ctx, prefix, "", fn)
	return err
}

// ListDir lists one level under prefix, which should end in '/' (or be
// empty): the objects directly in it and the names of the prefixes one
// level down (without prefix and without their trailing '/'), both in key
// order.
func (b *Bucket) ListDir(ctx context.Context, prefix string) (objects []Object, dirs []string, err error) {
	dirs, err = b.list(ctx, prefix, "/", func(o Object) error {
		objects = append(objects, o)
		return nil
	})
	return objects, dirs, err
}

func (b *Bucket) list(ctx context.Context, prefix, delimiter string, fn func(Object) error) ([]string, error) {
	in := &s3.ListObjectsV2Input{Bucket: &b.name, Prefix: &prefix}
	if delimiter != "" {
		in.Delimiter = &delimiter
	}
	if b.pageSize > 0 {
		in.MaxKeys = aws.Int32(b.pageSize)
	}
	var dirs []string
	p := s3.NewListObjectsV2Paginator(b.client, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", b.URL(prefix), classify(err))
		}
		for _, cp := range page.CommonPrefixes {
			d := strings.TrimSuffix(strings.TrimPrefix(aws.ToString(cp.Prefix), prefix), "/")
			if d != "" {
				dirs = append(dirs, d)
			}
		}
		for _, o := range page.Contents {
			key := aws.ToString(o.Key)
			if strings.HasSuffix(key, "/") {
				continue
			}
			if err := fn(Object{Key: key, Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified), ETag: aws.ToString(o.ETag)}); err != nil {
				return nil, err
			}
		}
	}
	return dirs, nil
}

// HasObjects reports whether some object's key starts with prefix (a
// "directory" exists), in one request.
func (b *Bucket) HasObjects(ctx context.Context, prefix string) (bool, error) {
	out, err := b.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &b.name, Prefix: &prefix, MaxKeys: aws.Int32(2)})
	if err != nil {
		return false, fmt.Errorf("list %s: %w", b.URL(prefix), classify(err))
	}
	for _, o := range out.Contents {
		if !strings.HasSuffix(aws.ToString(o.Key), "/") {
			return true, nil
		}
	}
	return len(out.Contents) > 0 && aws.ToBool(out.IsTruncated), nil
}

// Delete removes the objects keys, up to 1000 a request; a missing object
// is no error.
func (b *Bucket) Delete(ctx context.Context, keys ...string) error {
	for len(keys) > 0 {
		n := min(len(keys), deleteBatch)
		ids := make([]types.ObjectIdentifier, n)
		for i, k := range keys[:n] {
			ids[i] = types.ObjectIdentifier{Key: aws.String(k)}
		}
		out, err := b.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: &b.name,
			Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)}})
		if err != nil {
			return fmt.Errorf("delete %d objects under %s: %w", n, b.URL(""), err)
		}
		for _, e := range out.Errors {
			if aws.ToString(e.Code) == "NoSuchKey" {
				continue
			}
			return fmt.Errorf("delete %s: %s: %s", b.URL(aws.ToString(e.Key)), aws.ToString(e.Code), aws.ToString(e.Message))
		}
		keys = keys[n:]
	}
	return nil
}

// DeletePrefix removes every object whose key starts with prefix, and
// aborts the multipart uploads in progress under it.
func (b *Bucket) DeletePrefix(ctx context.Context, prefix string) error {
	if err := b.AbortUploads(ctx, prefix); err != nil {
		return err
	}
	var keys []string
	if err := b.List(ctx, prefix, func(o Object) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		return err
	}
	return b.Delete(ctx, keys...)
}

// AbortUploads aborts every multipart upload in progress whose key starts
// with prefix: what a writer that died (a killed worker) left uploaded.
func (b *Bucket) AbortUploads(ctx context.Context, prefix string) error {
	return b.eachUpload(ctx, prefix, func(u types.MultipartUpload) error {
		_, err := b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &b.name, Key: u.Key, UploadId: u.UploadId})
		if err != nil && !errors.Is(classify(err), fs.ErrNotExist) {
			return fmt.Errorf("abort upload of %s: %w", b.URL(aws.ToString(u.Key)), err)
		}
		return nil
	})
}

// Uploads lists the keys of the multipart uploads in progress whose key
// starts with prefix, in key order (a key once per upload).
func (b *Bucket) Uploads(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	err := b.eachUpload(ctx, prefix, func(u types.MultipartUpload) error {
		keys = append(keys, aws.ToString(u.Key))
		return nil
	})
	return keys, err
}

func (b *Bucket) eachUpload(ctx context.Context, prefix string, fn func(types.MultipartUpload) error) error {
	in := &s3.ListMultipartUploadsInput{Bucket: &b.name, Prefix: &prefix}
	for {
		out, err := b.client.ListMultipartUploads(ctx, in)
		if err != nil {
			return fmt.Errorf("list uploads under %s: %w", b.URL(prefix), classify(err))
		}
		for _, u := range out.Uploads {
			if err := fn(u); err != nil {
				return err
			}
		}
		if !aws.ToBool(out.IsTruncated) {
			return nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}

// copySource is the x-amz-copy-source of key: bucket/key, URL-escaped.
func (b *Bucket) copySource(key string) *string {
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return aws.String(b.name + "/" + strings.Join(segs, "/"))
}

// Copy copies the object src (of size bytes and ETag etag, which it must
// still have: else an error wrapping ErrChanged) to dst inside the
// bucket, on the server: the bytes do not pass through this process.
// Objects above 5 GiB are copied in parts, several at once.
func (b *Bucket) Copy(ctx context.Context, src Object, dst string) error {
	_, err := b.CopyETag(ctx, src, dst)
	return err
}

// CopyETag copies as Copy does and returns the ETag of the copy.
func (b *Bucket) CopyETag(ctx context.Context, src Object, dst string) (string, error) {
	if src.Size <= b.maxCopy {
		out, err := b.client.CopyObject(ctx, &s3.CopyObjectInput{Bucket: &b.name, Key: &dst,
			CopySource: b.copySource(src.Key), CopySourceIfMatch: nonEmpty(src.ETag)})
		if err != nil {
			return "", fmt.Errorf("copy %s to %s: %w", b.URL(src.Key), b.URL(dst), classify(err))
		}
		etag := ""
		if out.CopyObjectResult != nil {
			etag = aws.ToString(out.CopyObjectResult.ETag)
		}
		return etag, nil
	}
	// Part copies check If-Match, but a store may check the range first.
	if cur, err := b.Head(ctx, src.Key); err != nil {
		return "", fmt.Errorf("copy %s: %w", b.URL(src.Key), err)
	} else if src.ETag != "" && cur.ETag != src.ETag {
		return "", fmt.Errorf("copy %s: %w (ETag %s, listed as %s)", b.URL(src.Key), ErrChanged, cur.ETag, src.ETag)
	}
	var ranges []copyRange
	for lo := int64(0); lo < src.Size; lo += b.copyPart {
		ranges = append(ranges, copyRange{src: src, lo: lo, hi: min(lo+b.copyPart, src.Size) - 1})
	}
	etag, err := b.copyParts(ctx, dst, ranges)
	if err != nil {
		return "", fmt.Errorf("copy %s to %s in %d parts: %w", b.URL(src.Key), b.URL(dst), len(ranges), err)
	}
	return etag, nil
}

// Compose makes the object dst of the objects srcs one after the other, on
// the server (a multipart upload whose parts are copies of srcs, each of
// which must still have its ETag, and all but the last at least 5 MiB),
// and returns its ETag. dst appears whole when the upload completes.
func (b *Bucket) Compose(ctx context.Context, dst string, srcs []Object) (string, error) {
	ranges := make([]copyRange, len(srcs))
	for i, o := range srcs {
		ranges[i] = copyRange{src: o, lo: -1}
	}
	etag, err := b.copyParts(ctx, dst, ranges)
	if err != nil {
		return "", fmt.Errorf("compose %s of %d objects: %w", b.URL(dst), len(srcs), err)
	}
	return etag, nil
}

// copyRange is bytes lo to hi (inclusive) of an object, or all of it when
// lo is negative.
type copyRange struct {
	src    Object
	lo, hi int64
}

// copyParts makes dst of the ranges, one part each, copied on the server
// several at once, and returns its ETag; a failed copy aborts the upload.
func (b *Bucket) copyParts(ctx context.Context, dst string, ranges []copyRange) (string, error) {
	up, err := b.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &b.name, Key: &dst})
	if err != nil {
		return "", err
	}
	parts := make([]types.CompletedPart, len(ranges))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(b.uploads)
	for i, r := range ranges {
		g.Go(func() error {
			in := &s3.UploadPartCopyInput{Bucket: &b.name, Key: &dst,
				UploadId: up.UploadId, PartNumber: aws.Int32(int32(i + 1)),
				CopySource: b.copySource(r.src.Key), CopySourceIfMatch: nonEmpty(r.src.ETag)}
			if r.lo >= 0 {
				in.CopySourceRange = aws.String(fmt.Sprintf("bytes=%d-%d", r.lo, r.hi))
			}
			out, err := b.client.UploadPartCopy(gctx, in)
			if err != nil {
				return classify(err)
			}
			parts[i] = types.CompletedPart{PartNumber: aws.Int32(int32(i + 1)), ETag: out.CopyPartResult.ETag}
			return nil
		})
	}
	err = g.Wait()
	var out *s3.CompleteMultipartUploadOutput
	if err == nil {
		out, err = b.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &b.name, Key: &dst,
			UploadId: up.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
	}
	if err != nil {
		b.abortUpload(ctx, dst, up.UploadId)
		return "", err
	}
	return aws.ToString(out.ETag), nil
}

// abortUpload aborts a multipart upload, best effort, also when ctx has
// ended (a cancelled upload still leaves its parts to abort).
func (b *Bucket) abortUpload(ctx context.Context, key string, id *string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &b.name, Key: &key, UploadId: id})
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// CreateBucket creates the bucket; one that exists and is the caller's is
// no error.
func (b *Bucket) CreateBucket(ctx context.Context) error {
	_, err := b.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &b.name})
	var owned *types.BucketAlreadyOwnedByYou
	if err != nil && !errors.As(err, &owned) {
		return fmt.Errorf("create bucket %s: %w", b.name, err)
	}
	return nil
}
