package files

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"unsafe"

	"github.com/sluicehq/sluice/connectors"
)

// attempt is what a task writer knows of its attempt's state: closed or
// aborted, and the first write error, after which it can only abort.
type attempt struct {
	done bool
	err  error
}

// usable returns why the attempt cannot take a batch (closing: be closed)
// now: it ended, a write failed, or ctx ended.
func (a *attempt) usable(ctx context.Context, closing bool) error {
	switch {
	case a.done && closing:
		return errors.New("task output closed twice")
	case a.done:
		return errors.New("write to a closed task output")
	case a.err != nil:
		return a.err
	}
	return ctx.Err()
}

// taskWriter writes one task attempt to a temporary file in staging.
type taskWriter struct {
	attempt
	tmp, final, location string
	dir                  string
	f                    *os.File
	bw                   *bufio.Writer
	// out, set at the first Write, writes f from a goroutine; bw then
	// writes to out instead of f.
	out *fileOut
	enc encoder
	sum connectors.Checksum
}

var _ connectors.TaskWriter = (*taskWriter)(nil)

// Write writes one batch. After an error the attempt can only be aborted.
func (w *taskWriter) Write(ctx context.Context, b connectors.Batch) error {
	if err := w.usable(ctx, false); err != nil {
		return err
	}
	if w.out == nil {
		// Nothing is written before the first batch (the CSV header comes
		// with it): from now on, bw hands its bytes to out. out buffers
		// them itself, so bw's buffer only gathers small writes.
		w.out = newFileOut(w.f)
		*w.bw = *bufio.NewWriterSize(w.out, 64<<10)
	}
	if err := w.enc.write(b); err != nil {
		w.err = fmt.Errorf("write %s: %w", w.location, err)
		return w.err
	}
	return nil
}

// Close makes the output durable and renames it over the output of any
// earlier attempt of the task.
func (w *taskWriter) Close(ctx context.Context) (connectors.TaskOutput, error) {
	if err := w.usable(ctx, true); err != nil {
		return connectors.TaskOutput{}, err
	}
	w.done = true
	err := w.enc.finish()
	w.enc.release()
	if err == nil {
		err = w.bw.Flush()
	}
	if w.out != nil {
		// Every byte written, before the sync.
		if oerr := w.out.close(); err == nil {
			err = oerr
		}
	}
	if err == nil {
		err = w.f.Sync()
	}
	var size int64
	if err == nil {
		var st os.FileInfo
		if st, err = w.f.Stat(); err == nil {
			size = st.Size()
		}
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(w.tmp, w.final)
	}
	if err == nil {
		err = syncDir(w.dir)
	}
	if err != nil {
		os.Remove(w.tmp)
		return connectors.TaskOutput{}, fmt.Errorf("close %s: %w", w.location, err)
	}
	return connectors.TaskOutput{Rows: w.sum.Rows, Bytes: size, Checksum: w.sum, Location: w.location}, nil
}

// Abort removes this attempt's temporary file; a closed output of an
// earlier attempt stays.
func (w *taskWriter) Abort(context.Context) error {
	if w.done {
		return nil
	}
	w.done = true
	w.enc.release()
	if w.out != nil {
		w.out.abort()
	}
	w.f.Close()
	if err := os.Remove(w.tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("abort %s: %w", w.location, err)
	}
	return nil
}

// fileOut writes a file in the background: Write copies the bytes into
// one of a few aligned buffers and returns; a goroutine writes each full
// buffer at its offset, in order, while the task goes on reading its
// source. The file is opened for direct I/O where the system allows it
// (the data goes from the buffer to the device, without being copied into
// the page cache, which on a VM costs more CPU than the rest of a
// pass-through load); where it does not, or a direct write is refused,
// writes go through the page cache. Durability is the caller's fsync, as
// before: close only guarantees that every byte was handed to the kernel.
type fileOut struct {
	f *os.File
	// cur is the buffer being filled: cap fileOutBuf, aligned.
	cur  []byte
	full chan []byte // filled buffers, to the goroutine, in file order
	free chan []byte // written buffers, back to Write
	done chan struct{}
	// direct and off are the goroutine's until done is closed, then
	// close's.
	direct bool
	off    int64
	mu     sync.Mutex
	err    error // first write error
	ended  bool
}

const (
	// fileOutBuf is the size of each buffer, and of each write.
	fileOutBuf = 1 << 20
	// fileOutBufs is how many buffers a file has: one being filled, the
	// others queued or being written.
	fileOutBufs = 3
	// directAlign is the alignment of direct writes (memory, offset and
	// size): the logical block size of any device, or a multiple of it.
	directAlign = 4096
)

// outBufs recycles fileOut buffers between tasks.
var outBufs = sync.Pool{New: func() any {
	b := make([]byte, fileOutBuf+directAlign)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) % directAlign); r != 0 {
		skip = directAlign - r
	}
	b = b[skip : skip+fileOutBuf : skip+fileOutBuf]
	return &b
}}

func getOutBuf() []byte { return (*outBufs.Get().(*[]byte))[:0] }

func putOutBuf(b []byte) { b = b[:0]; outBufs.Put(&b) }

func newFileOut(f *os.File) *fileOut {
	o := &fileOut{
		f:    f,
		cur:  getOutBuf(),
		full: make(chan []byte, fileOutBufs-1),
		free: make(chan []byte, fileOutBufs),
		done: make(chan struct{}),
	}
	for range fileOutBufs - 1 {
		o.free <- getOutBuf()
	}
	o.direct = setDirect(f, true) == nil
	go o.run()
	return o
}

func (o *fileOut) run() {
	defer close(o.done)
	for b := range o.full {
		if o.error() == nil {
			if err := o.writeAt(b); err != nil {
				o.mu.Lock()
				o.err = err
				o.mu.Unlock()
			}
		}
		o.free <- b
	}
}

func (o *fileOut) error() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// writeAt writes b at o.off, directly when b, its address and o.off are
// aligned, else (or when the direct write is refused) through the page
// cache, and moves o.off past it.
func (o *fileOut) writeAt(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	aligned := len(b)%directAlign == 0 && o.off%directAlign == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(b)))%directAlign == 0
	if o.direct && !aligned {
		if err := setDirect(o.f, false); err != nil {
			return err
		}
		o.direct = false
	}
	_, err := o.f.WriteAt(b, o.off)
	if err != nil && o.direct && errors.Is(err, syscall.EINVAL) {
		// Direct I/O refused (the file system's alignment, or no support):
		// write the same bytes at the same place through the page cache.
		if err = setDirect(o.f, false); err == nil {
			o.direct = false
			_, err = o.f.WriteAt(b, o.off)
		}
	}
	if err != nil {
		return err
	}
	o.off += int64(len(b))
	return nil
}

// Write copies p into the buffers; it blocks while every buffer is queued.
// It returns the first error of an earlier background write.
func (o *fileOut) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if err := o.error(); err != nil {
			return n, err
		}
		k := copy(o.cur[len(o.cur):cap(o.cur)], p)
		o.cur = o.cur[:len(o.cur)+k]
		p = p[k:]
		n += k
		if len(o.cur) == cap(o.cur) {
			o.full <- o.cur
			o.cur = <-o.free
			o.cur = o.cur[:0]
		}
	}
	return n, nil
}

// close writes what is queued and buffered, and waits until it is written:
// the aligned part of the last buffer directly, the rest through the page
// cache (direct I/O off from then on).
func (o *fileOut) close() error {
	if o.ended {
		return errors.New("file output closed twice")
	}
	o.ended = true
	close(o.full)
	<-o.done
	err := o.err
	if err == nil {
		last := o.cur
		if head := len(last) / directAlign * directAlign; head > 0 {
			err = o.writeAt(last[:head])
			last = last[head:]
		}
		if err == nil {
			err = o.writeAt(last)
		}
	}
	o.release()
	return err
}

// abort stops the background writes and waits for them to end.
func (o *fileOut) abort() {
	if o.ended {
		return
	}
	o.ended = true
	close(o.full)
	<-o.done
	o.release()
}

func (o *fileOut) release() {
	putOutBuf(o.cur)
	o.cur = nil
	for range fileOutBufs - 1 {
		putOutBuf(<-o.free)
	}
}

// syncDir fsyncs a directory, making the entries created or renamed in it
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// taskFileName returns the final name of a task's output.
func taskFileName(task, format string) string { return "part-" + task + "." + format }

// tmpFileName returns the temporary name of one attempt's output.
func tmpFileName(t connectors.TaskRef) string {
	return fmt.Sprintf(".part-%s.%d.tmp", t.TaskID, t.Attempt)
}

func stagingDir(root, run string) string { return filepath.Join(root, "_staging", run) }
