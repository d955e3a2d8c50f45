package files

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

func TestFileOut(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, sizes := range [][]int{
		{},
		{1},
		{fileOutBuf},
		{fileOutBuf - 1, 1, directAlign + 3},
		{3*fileOutBuf + 17, 5, 64 << 10, 2 * fileOutBuf},
		{100, 4096, 8191, fileOutBuf / 2, fileOutBuf, 1, 1, 1, 7 * fileOutBuf / 3},
	} {
		p := filepath.Join(t.TempDir(), "out")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		o := newFileOut(f)
		var want []byte
		for _, n := range sizes {
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			want = append(want, b...)
			if k, err := o.Write(b); k != n || err != nil {
				t.Fatalf("sizes %v: write %d bytes: %d, %v", sizes, n, k, err)
			}
		}
		if err := o.close(); err != nil {
			t.Fatalf("sizes %v: close: %v", sizes, err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("sizes %v: file holds %d bytes, not the %d written", sizes, len(got), len(want))
		}
	}
}

func TestFileOutErrors(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ro")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p) // read-only: every write fails
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	o := newFileOut(f)
	big := make([]byte, fileOutBuf)
	var werr error
	for range 10 {
		if _, werr = o.Write(big); werr != nil {
			break
		}
	}
	if werr == nil {
		t.Fatal("ten buffers written to a read-only file without an error")
	}
	if err := o.close(); err == nil {
		t.Fatal("close after a failed write: no error")
	}

	// Abort stops the writes and returns, whatever is queued.
	f2, err := os.Create(filepath.Join(t.TempDir(), "abort"))
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	o = newFileOut(f2)
	o.Write(make([]byte, 2*fileOutBuf+5))
	o.abort()
	o.abort()
}
