package objstore

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Read-ahead of sequential reads: the first read at an offset fetches
// exactly what it asks for; each following contiguous read fetches at
// least minReadAhead, doubling up to maxReadAhead.
const (
	minReadAhead = 1 << 20
	maxReadAhead = 16 << 20
)

// Reader reads one version of an object by ranged GETs: it implements
// io.ReaderAt for random access (a Parquet footer and column chunks) and
// keeps one response streaming while reads are contiguous (a JSONL byte
// range scanned line by line), fetching ahead a little more each time.
// Every GET carries If-Match with the object's ETag, so a read of an
// object replaced since it was listed fails with an error wrapping
// ErrChanged instead of mixing two versions. ReadAt calls are serialized.
// Close releases the response being streamed.
type Reader struct {
	b     *Bucket
	ctx   context.Context // bounds every read; the reader lives within one call of its owner
	obj   Object
	until int64

	mu      sync.Mutex
	body    io.ReadCloser
	pos     int64 // offset of the next byte body gives
	end     int64 // offset where body ends
	lastEnd int64 // offset just past the previous ReadAt; -1 before any
	ahead   int64
}

var _ io.ReaderAt = (*Reader)(nil)

// NewReader returns a reader of obj (its Key, Size and ETag as listed).
// ctx bounds every read. until, when positive, is where the caller means
// to stop reading sequentially (the end of a byte range): read-ahead never
// fetches past it, so a range's reader fetches little of the next range.
func (b *Bucket) NewReader(ctx context.Context, obj Object, until int64) *Reader {
	if until <= 0 || until > obj.Size {
		until = obj.Size
	}
	return &Reader{b: b, ctx: ctx, obj: obj, until: until, lastEnd: -1}
}

// ReadAt reads len(p) bytes at off, fewer with io.EOF at the end of the
// object.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if off < 0 {
		return 0, fmt.Errorf("read %s: negative offset %d", r.b.URL(r.obj.Key), off)
	}
	if off >= r.obj.Size {
		return 0, io.EOF
	}
	want := int(min(int64(len(p)), r.obj.Size-off))
	n := 0
	for n < want {
		at := off + int64(n)
		if r.body == nil || r.pos != at || r.pos >= r.end {
			if err := r.open(at, int64(want-n), at == r.lastEnd || n > 0); err != nil {
				return n, err
			}
		}
		k, err := io.ReadFull(r.body, p[n:n+int(min(int64(want-n), r.end-r.pos))])
		n += k
		r.pos += int64(k)
		if err != nil {
			r.closeBody()
			if err == io.ErrUnexpectedEOF || err == io.EOF {
				err = fmt.Errorf("read %s at %d: response ended early: %w", r.b.URL(r.obj.Key), r.pos, io.ErrUnexpectedEOF)
			}
			if ctxErr := r.ctx.Err(); ctxErr != nil {
				err = ctxErr
			}
			return n, err
		}
	}
	r.lastEnd = off + int64(n)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// open starts a GET at off for at least need bytes; a sequential read
// fetches ahead, up to until (and past it only what is needed).
func (r *Reader) open(off, need int64, sequential bool) error {
	r.closeBody()
	length := need
	if sequential {
		r.ahead = min(max(2*r.ahead, minReadAhead), r.b.readAhead)
		if off < r.until {
			length = max(need, min(r.ahead, r.until-off))
		}
	} else {
		r.ahead = 0
	}
	end := min(off+length, r.obj.Size)
	out, err := r.b.client.GetObject(r.ctx, &s3.GetObjectInput{Bucket: &r.b.name, Key: &r.obj.Key,
		IfMatch: nonEmpty(r.obj.ETag), Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, end-1))})
	if err != nil {
		if ctxErr := r.ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		return fmt.Errorf("read %s at %d: %w", r.b.URL(r.obj.Key), off, classify(err))
	}
	r.body, r.pos, r.end = out.Body, off, end
	return nil
}

func (r *Reader) closeBody() {
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
}

// Close releases the response being read, if any.
func (r *Reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closeBody()
	return nil
}
