package objstore

import (
	"bytes"
	"cmp"
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// maxParts is the most parts a multipart upload may have.
const maxParts = 10000

// Writer uploads one object. Bytes written are gathered into parts; the
// first full part starts a multipart upload, and parts are uploaded in the
// background, several at once, while the caller goes on writing. Close
// uploads the rest and completes the upload (an object smaller than one
// part is sent in one PutObject instead), replacing any object of the key
// atomically: nothing of the object is visible before Close returns, and
// readers see the earlier object or the whole new one. Abort, or a failed
// Close, aborts the upload: no part stays stored. A Writer is used by one
// goroutine; Interrupt may be called from any.
type Writer struct {
	b   *Bucket
	key string
	// ctx bounds the background uploads; cancel (Interrupt, Abort) ends
	// them. The writer owns it: it lives from NewWriter to Close or Abort.
	ctx    context.Context
	cancel context.CancelFunc

	buf      []byte
	partSize int
	uploadID *string
	next     int32 // number of the next part
	size     int64

	wg    sync.WaitGroup
	slots chan struct{}
	mu    sync.Mutex
	parts []types.CompletedPart
	err   error // first background error
	opts  WriteOptions

	done bool
}

// WriteOptions says what a Writer sends besides the bytes.
type WriteOptions struct {
	// ContentMD5 sends the MD5 digest of every request's bytes
	// (Content-MD5), which the store checks before it stores them: a part
	// or an object whose bytes were damaged on the way is refused, not
	// stored.
	ContentMD5 bool
}

// NewWriter starts the upload of the object key. Nothing reaches the
// store before a part is full or Close is called.
func (b *Bucket) NewWriter(key string) *Writer { return b.NewWriterWith(key, WriteOptions{}) }

// NewWriterWith starts the upload of the object key, as NewWriter, with
// the options o.
func (b *Bucket) NewWriterWith(key string, o WriteOptions) *Writer {
	ctx, cancel := context.WithCancel(context.Background())
	return &Writer{b: b, key: key, ctx: ctx, cancel: cancel, partSize: b.partSize,
		buf: b.getBuf(), next: 1, slots: make(chan struct{}, b.uploads), opts: o}
}

// contentMD5 returns the Content-MD5 of data when the writer sends it.
func (w *Writer) contentMD5(data []byte) *string {
	if !w.opts.ContentMD5 {
		return nil
	}
	sum := md5.Sum(data)
	return aws.String(base64.StdEncoding.EncodeToString(sum[:]))
}

func (b *Bucket) getBuf() []byte { return (*b.partBufs.Get().(*[]byte))[:0] }

func (b *Bucket) putBuf(buf []byte) {
	if cap(buf) == b.partSize {
		buf = buf[:0]
		b.partBufs.Put(&buf)
	}
}

// Interrupt cancels the uploads in flight: Write and Close fail from then
// on, and the caller is to Abort. It is safe to call from any goroutine
// (such as a context.AfterFunc of the caller's context).
func (w *Writer) Interrupt() { w.cancel() }

func (w *Writer) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *Writer) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
}

// Write adds p to the object. It blocks while every upload slot is busy,
// and returns the first error of a background upload.
func (w *Writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("write to a closed object writer")
	}
	n := 0
	for len(p) > 0 {
		if err := w.failure(); err != nil {
			return n, err
		}
		if err := w.ctx.Err(); err != nil {
			return n, fmt.Errorf("write %s: %w", w.b.URL(w.key), err)
		}
		k := copy(w.buf[len(w.buf):w.partSize], p)
		w.buf = w.buf[:len(w.buf)+k]
		p, n = p[k:], n+k
		if len(w.buf) == w.partSize {
			if err := w.flushPart(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// flushPart hands the full buffer to a background upload.
func (w *Writer) flushPart() error {
	if w.uploadID == nil {
		out, err := w.b.client.CreateMultipartUpload(w.ctx, &s3.CreateMultipartUploadInput{Bucket: &w.b.name, Key: &w.key})
		if err != nil {
			return fmt.Errorf("start upload of %s: %w", w.b.URL(w.key), err)
		}
		w.uploadID = out.UploadId
	}
	if w.next > maxParts {
		return fmt.Errorf("upload %s: more than %d parts", w.b.URL(w.key), maxParts)
	}
	select {
	case w.slots <- struct{}{}:
	case <-w.ctx.Done():
		return fmt.Errorf("upload %s: %w", w.b.URL(w.key), w.ctx.Err())
	}
	buf, num := w.buf, w.next
	w.next++
	w.size += int64(len(buf))
	// Parts grow as the object does, so that 10,000 parts hold terabytes.
	if num%1000 == 0 {
		w.partSize *= 2
	}
	w.buf = w.b.getBuf()
	if cap(w.buf) < w.partSize {
		w.buf = make([]byte, 0, w.partSize)
	}
	w.wg.Go(func() {
		defer func() { <-w.slots }()
		defer w.b.putBuf(buf)
		out, err := w.b.client.UploadPart(w.ctx, &s3.UploadPartInput{Bucket: &w.b.name, Key: &w.key,
			UploadId: w.uploadID, PartNumber: aws.Int32(num), Body: bytes.NewReader(buf),
			ContentLength: aws.Int64(int64(len(buf))), ContentMD5: w.contentMD5(buf)})
		if err != nil {
			w.fail(fmt.Errorf("upload part %d of %s: %w", num, w.b.URL(w.key), err))
			return
		}
		w.mu.Lock()
		w.parts = append(w.parts, types.CompletedPart{PartNumber: aws.Int32(num), ETag: out.ETag})
		w.mu.Unlock()
	})
	return nil
}

// Close uploads what is buffered, waits for every part and completes the
// upload; it returns the object's size. ctx bounds the wait: when it ends,
// the upload is aborted. After an error nothing of this writer is stored.
func (w *Writer) Close(ctx context.Context) (int64, error) {
	if w.done {
		return 0, errors.New("object writer closed twice")
	}
	w.done = true
	stop := context.AfterFunc(ctx, w.cancel)
	defer stop()
	defer w.cancel()
	if w.uploadID == nil {
		size := int64(len(w.buf))
		err := w.failure()
		if err == nil {
			err = w.b.put(w.ctx, w.key, w.buf, w.contentMD5(w.buf))
		}
		w.b.putBuf(w.buf)
		w.buf = nil
		if err != nil {
			return 0, w.ctxErr(ctx, err)
		}
		return size, nil
	}
	var err error
	if len(w.buf) > 0 {
		err = w.flushPart()
	} else {
		w.b.putBuf(w.buf)
	}
	w.buf = nil
	w.wg.Wait()
	if err == nil {
		err = w.failure()
	}
	if err == nil {
		w.mu.Lock()
		parts := w.parts
		w.mu.Unlock()
		slices.SortFunc(parts, func(a, b types.CompletedPart) int {
			return cmp.Compare(aws.ToInt32(a.PartNumber), aws.ToInt32(b.PartNumber))
		})
		_, err = w.b.client.CompleteMultipartUpload(w.ctx, &s3.CompleteMultipartUploadInput{Bucket: &w.b.name, Key: &w.key,
			UploadId: w.uploadID, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
		if err != nil {
			err = fmt.Errorf("complete upload of %s: %w", w.b.URL(w.key), err)
		}
	}
	if err != nil {
		w.b.abortUpload(ctx, w.key, w.uploadID)
		return 0, w.ctxErr(ctx, err)
	}
	return w.size, nil
}

// ctxErr returns ctx's error when ctx ended (the cause of err), else err.
func (w *Writer) ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("upload %s: %w", w.b.URL(w.key), cerr)
	}
	return err
}

// Abort stops the upload and removes its parts; nothing of this writer is
// stored, and an object of the key written before stays as it was. ctx
// bounds the abort request.
func (w *Writer) Abort(ctx context.Context) error {
	if w.done {
		return nil
	}
	w.done = true
	w.cancel()
	w.wg.Wait()
	w.b.putBuf(w.buf)
	w.buf = nil
	if w.uploadID == nil {
		return nil
	}
	_, err := w.b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &w.b.name, Key: &w.key, UploadId: w.uploadID})
	if err != nil {
		return fmt.Errorf("abort upload of %s: %w", w.b.URL(w.key), err)
	}
	return nil
}
