package objstore_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"sync"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/objstore"
	"github.com/sluicehq/sluice/objstore/s3test"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want objstore.Location
		bad  bool
	}{
		{in: "s3://bucket", want: objstore.Location{Bucket: "bucket"}},
		{in: "s3://bucket/", want: objstore.Location{Bucket: "bucket"}},
		{in: "s3://my.bucket-1/a/b/", want: objstore.Location{Bucket: "my.bucket-1", Key: "a/b"}},
		{in: "s3://bucket//a/./b", want: objstore.Location{Bucket: "bucket", Key: "a/b"}},
		{in: "s3://bucket/a/../b", bad: true},
		{in: "s3://Bucket/a", bad: true},
		{in: "s3://b/a", bad: true},
		{in: "/local/path", bad: true},
	} {
		got, err := objstore.ParseURL(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v, error %t", tc.in, got, err, tc.want, tc.bad)
		}
		if !tc.bad && got.String() != "s3://"+tc.want.Bucket+map[bool]string{true: "", false: "/" + tc.want.Key}[tc.want.Key == ""] {
			t.Errorf("%+v.String() = %q", got, got.String())
		}
	}
}

// bucket returns the test bucket with small parts and pages, and the
// test's prefix in it.
func bucket(t *testing.T) (*objstore.Bucket, string) {
	loc := s3test.Env(t)
	b := s3test.Client(t)
	objstore.Small(b, 5<<20, 7, 6<<20, 5<<20)
	return b, loc.Key + "/"
}

func randomBytes(n int, seed uint64) []byte {
	var s [32]byte
	s[0] = byte(seed)
	p := make([]byte, n)
	rand.NewChaCha8(s).Read(p)
	return p
}

// A Writer stores an object of one part with one PutObject and a larger
// one as a multipart upload, written in odd-sized pieces; the object read
// back equals what was written, whole and by ranges.
func TestWriterAndReader(t *testing.T) {
	b, prefix := bucket(t)
	ctx := t.Context()
	for _, size := range []int{0, 1000, 5 << 20, 17<<20 + 3} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			data := randomBytes(size, uint64(size))
			key := prefix + fmt.Sprintf("obj-%d", size)
			w := b.NewWriter(key)
			for rest := data; len(rest) > 0; {
				n := min(len(rest), 1+rand.IntN(3<<20))
				if _, err := w.Write(rest[:n]); err != nil {
					t.Fatal(err)
				}
				rest = rest[n:]
			}
			n, err := w.Close(ctx)
			if err != nil || n != int64(size) {
				t.Fatalf("Close = %d, %v; want %d", n, err, size)
			}
			obj, err := b.Head(ctx, key)
			if err != nil || obj.Size != int64(size) || obj.ETag == "" {
				t.Fatalf("Head = %+v, %v", obj, err)
			}
			got, err := b.Get(ctx, key)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("Get: %d bytes, %v; want the %d written", len(got), err, size)
			}
			// Sequential reads through a SectionReader, as the files source
			// scans a byte range, and random reads, as Parquet reads.
			r := b.NewReader(ctx, obj, 0)
			seq, err := io.ReadAll(io.NewSectionReader(r, 0, obj.Size))
			if err != nil || !bytes.Equal(seq, data) {
				t.Errorf("sequential read: %d bytes, %v", len(seq), err)
			}
			for range 20 {
				if size == 0 {
					break
				}
				off := rand.IntN(size)
				n := rand.IntN(size-off) + 1
				p := make([]byte, n)
				if _, err := r.ReadAt(p, int64(off)); err != nil || !bytes.Equal(p, data[off:off+n]) {
					t.Fatalf("ReadAt(%d bytes at %d): %v", n, off, err)
				}
			}
			p := make([]byte, 10)
			if k, err := r.ReadAt(p, int64(size)); k != 0 || err != io.EOF {
				t.Errorf("ReadAt past the end = %d, %v; want 0, EOF", k, err)
			}
			r.Close()
		})
	}
}

// A read of an object replaced since it was listed fails with ErrChanged
// (never mixing two versions); a missing object is fs.ErrNotExist.
func TestReaderChangedAndMissing(t *testing.T) {
	b, prefix := bucket(t)
	ctx := t.Context()
	key := prefix + "changing"
	if err := b.Put(ctx, key, []byte("first version\n")); err != nil {
		t.Fatal(err)
	}
	obj, err := b.Head(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, key, []byte("second version\n")); err != nil {
		t.Fatal(err)
	}
	r := b.NewReader(ctx, obj, 0)
	defer r.Close()
	if _, err := r.ReadAt(make([]byte, 4), 0); !errors.Is(err, objstore.ErrChanged) {
		t.Errorf("read of a replaced object = %v, want ErrChanged", err)
	}
	if _, err := b.Head(ctx, prefix+"missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Head of a missing object = %v, want fs.ErrNotExist", err)
	}
	if _, err := b.Get(ctx, prefix+"missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Get of a missing object = %v, want fs.ErrNotExist", err)
	}
	if ok, err := b.Exists(ctx, key); !ok || err != nil {
		t.Errorf("Exists = %t, %v", ok, err)
	}
}

// An aborted or interrupted multipart upload leaves no object and no
// upload in progress, and an object written before under the key stays.
func TestWriterAbort(t *testing.T) {
	b, prefix := bucket(t)
	ctx := t.Context()
	key := prefix + "kept"
	if err := b.Put(ctx, key, []byte("earlier\n")); err != nil {
		t.Fatal(err)
	}
	w := b.NewWriter(key)
	if _, err := w.Write(randomBytes(12<<20, 1)); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	w = b.NewWriter(key)
	if _, err := w.Write(randomBytes(11<<20, 2)); err != nil {
		t.Fatal(err)
	}
	w.Interrupt()
	if _, err := w.Close(ctx); err == nil {
		t.Error("Close after Interrupt succeeded")
	}
	if got, err := b.Get(ctx, key); err != nil || string(got) != "earlier\n" {
		t.Errorf("after aborted uploads the object is %q, %v; want the earlier one", got, err)
	}
	if ups := uploads(t, b, prefix); len(ups) != 0 {
		t.Errorf("uploads in progress after Abort: %q", ups)
	}
	// A writer that died mid-upload leaves its parts; AbortUploads (as
	// a sink's Abort or commit calls it) removes them.
	w = b.NewWriter(prefix + "dead")
	if _, err := w.Write(randomBytes(6<<20, 3)); err != nil {
		t.Fatal(err)
	}
	if ups := uploads(t, b, prefix); len(ups) != 1 {
		t.Fatalf("uploads in progress = %q, want the dead writer's", ups)
	}
	if err := b.AbortUploads(ctx, prefix); err != nil {
		t.Fatal(err)
	}
	if ups := uploads(t, b, prefix); len(ups) != 0 {
		t.Errorf("uploads in progress after AbortUploads: %q", ups)
	}
	w.Interrupt()
	w.Abort(ctx)
}

// Listings go past one page: 1001 objects (the S3 page is 1000) are all
// listed, in order, and so are the pages of 7 of a small bucket; ListDir
// gives one level; DeletePrefix removes them all.
func TestListPagesAndDelete(t *testing.T) {
	loc := s3test.Env(t)
	b := s3test.Client(t)
	ctx := t.Context()
	prefix := loc.Key + "/many/"
	const n = 1001
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range n {
		g.Go(func() error { return b.Put(gctx, fmt.Sprintf("%sd%d/obj-%04d", prefix, i%3, i), []byte{byte(i)}) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := b.List(ctx, prefix, func(o objstore.Object) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(keys) != n {
		t.Fatalf("listed %d objects, want %d", len(keys), n)
	}
	for i := 1; i < len(keys); i++ {
		if keys[i-1] >= keys[i] {
			t.Fatalf("listing out of order: %q before %q", keys[i-1], keys[i])
		}
	}
	small := s3test.Client(t)
	objstore.Small(small, 5<<20, 7, 6<<20, 5<<20)
	var count int
	var mu sync.Mutex
	if err := small.List(ctx, prefix+"d1/", func(objstore.Object) error { mu.Lock(); count++; mu.Unlock(); return nil }); err != nil || count != 334 {
		t.Errorf("listing in pages of 7: %d objects, %v; want 334", count, err)
	}
	if err := b.Put(ctx, prefix+"top", nil); err != nil {
		t.Fatal(err)
	}
	objs, dirs, err := small.ListDir(ctx, prefix)
	if err != nil || len(objs) != 1 || objs[0].Key != prefix+"top" || fmt.Sprint(dirs) != "[d0 d1 d2]" {
		t.Errorf("ListDir = %+v, %q, %v; want the object top and the dirs d0 d1 d2", objs, dirs, err)
	}
	if err := b.DeletePrefix(ctx, prefix); err != nil {
		t.Fatal(err)
	}
	count = 0
	if err := b.List(ctx, prefix, func(objstore.Object) error { count++; return nil }); err != nil || count != 0 {
		t.Errorf("after DeletePrefix %d objects are listed (%v)", count, err)
	}
}

// Copy copies on the server, in one request or (above the copy limit) in
// parts; a source replaced since it was listed is ErrChanged.
func TestCopy(t *testing.T) {
	b, prefix := bucket(t)
	ctx := t.Context()
	for _, size := range []int{100, 13 << 20} {
		data := randomBytes(size, 7)
		src := fmt.Sprintf("%ssrc-%d", prefix, size)
		if err := b.Put(ctx, src, data); err != nil {
			t.Fatal(err)
		}
		obj, err := b.Head(ctx, src)
		if err != nil {
			t.Fatal(err)
		}
		dst := fmt.Sprintf("%sdst/%d", prefix, size)
		if err := b.Copy(ctx, obj, dst); err != nil {
			t.Fatalf("Copy of %d bytes: %v", size, err)
		}
		if got, err := b.Get(ctx, dst); err != nil || !bytes.Equal(got, data) {
			t.Errorf("copy of %d bytes reads back %d bytes, %v", size, len(got), err)
		}
		if err := b.Put(ctx, src, []byte("replaced")); err != nil {
			t.Fatal(err)
		}
		if err := b.Copy(ctx, obj, dst+"-again"); !errors.Is(err, objstore.ErrChanged) {
			t.Errorf("Copy of a replaced %d-byte source = %v, want ErrChanged", size, err)
		}
	}
}

func uploads(t *testing.T, b *objstore.Bucket, prefix string) []string {
	t.Helper()
	keys, err := b.Uploads(t.Context(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// Compose makes one object of several, on the server, in order; its ETag
// is the one Head gives; a source replaced since it was listed fails it
// with ErrChanged and leaves no upload.
func TestCompose(t *testing.T) {
	b, prefix := bucket(t)
	ctx := t.Context()
	var srcs []objstore.Object
	var want []byte
	for i, size := range []int{5 << 20, 6 << 20, 1000} {
		data := randomBytes(size, uint64(i+10))
		key := fmt.Sprintf("%spart-%d", prefix, i)
		if err := b.Put(ctx, key, data); err != nil {
			t.Fatal(err)
		}
		obj, err := b.Head(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, obj)
		want = append(want, data...)
	}
	dst := prefix + "composed"
	etag, err := b.Compose(ctx, dst, srcs)
	if err != nil {
		t.Fatalf("Compose: %v", err)
	}
	got, err := b.Get(ctx, dst)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("composed object: %d bytes, %v; want %d", len(got), err, len(want))
	}
	if obj, err := b.Head(ctx, dst); err != nil || obj.ETag != etag {
		t.Errorf("Head ETag %q (%v), Compose gave %q", obj.ETag, err, etag)
	}
	if err := b.Put(ctx, srcs[1].Key, []byte("replaced")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Compose(ctx, prefix+"again", srcs); !errors.Is(err, objstore.ErrChanged) {
		t.Errorf("Compose of a replaced source = %v, want ErrChanged", err)
	}
	if ups := uploads(t, b, prefix); len(ups) != 0 {
		t.Errorf("uploads left: %v", ups)
	}
}

// A Writer that sends Content-MD5 stores what it was given, in one request
// or in parts; the store refuses bytes whose MD5 is not the one sent.
func TestWriterContentMD5(t *testing.T) {
	b, prefix := bucket(t)
	ctx := t.Context()
	for _, size := range []int{1000, 11 << 20} {
		data := randomBytes(size, 3)
		key := fmt.Sprintf("%smd5-%d", prefix, size)
		w := b.NewWriterWith(key, objstore.WriteOptions{ContentMD5: true})
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		if n, err := w.Close(ctx); err != nil || n != int64(size) {
			t.Fatalf("Close = %d, %v", n, err)
		}
		if got, err := b.Get(ctx, key); err != nil || !bytes.Equal(got, data) {
			t.Errorf("read back %d bytes, %v", len(got), err)
		}
	}
	wrong := "1B2M2Y8AsgTpgAmY7PhCfg==" // the MD5 of nothing
	if err := objstore.PutWithMD5(b, ctx, prefix+"damaged", []byte("not nothing"), wrong); err == nil {
		t.Errorf("a put whose bytes do not match its Content-MD5 was stored")
	}
}
