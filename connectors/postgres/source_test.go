package postgres

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicehq/sluice/connectors"
)

// msg encodes one backend message.
func msg(typ byte, body []byte) []byte {
	out := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:], uint32(4+len(body)))
	return append(out, body...)
}

// fakeCopyServer accepts one connection on a loopback TCP listener, reads
// the query and the Terminate behind it, writes resp in pieces of the given
// sizes (cycling) and closes the connection, as PostgreSQL does after
// Terminate. With hold set it writes nothing and waits for the client to
// close. It returns the client's end and what the server read.
func fakeCopyServer(t *testing.T, resp []byte, sizes []int, hold bool) (net.Conn, <-chan []byte) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var in []byte
		buf := make([]byte, 4096)
		for !bytes.HasSuffix(in, []byte{'X', 0, 0, 0, 4}) {
			n, err := c.Read(buf)
			in = append(in, buf[:n]...)
			if err != nil {
				break
			}
		}
		got <- in
		if hold {
			io.Copy(io.Discard, c)
			return
		}
		for i := 0; len(resp) > 0; i++ {
			n := min(sizes[i%len(sizes)], len(resp))
			if _, err := c.Write(resp[:n]); err != nil {
				return
			}
			resp = resp[n:]
		}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, got
}

func TestCopyOut(t *testing.T) {
	var data bytes.Buffer
	w := csv.NewWriter(&data)
	rows := [][]string{
		{"1", "plain", ""},
		{"2", "with,comma", "with \"quotes\""},
		{"3", "multi\nline\nvalue", "crlf\r\ninside"},
		{"4", strings.Repeat("x", 3000), "\n"},
	}
	const n = 4000 // several batches
	for i := range n {
		w.Write(rows[i%len(rows)])
	}
	w.Flush()
	// One CopyData per record, as PostgreSQL sends them; a long notice in
	// the middle is larger than the read buffer.
	var resp []byte
	resp = append(resp, msg('H', []byte{0, 0, 3, 0, 0, 0, 0, 0, 0})...)
	var want connectors.Checksum
	recs := data.Bytes()
	for i := 0; len(recs) > 0; i++ {
		end := 0
		forEachRecord(recs, func(rec []byte) error {
			want.Add(rec)
			end = len(rec) + 1
			return io.EOF // the first record only
		})
		if recs[end-1] != '\n' {
			t.Fatalf("record %d does not end in a newline", i)
		}
		resp = append(resp, msg('d', recs[:end])...)
		recs = recs[end:]
		if i == n/2 {
			resp = append(resp, msg('N', append([]byte("Mnotice "), bytes.Repeat([]byte("n"), rawReadBuffer+1000)...))...)
		}
	}
	resp = append(resp, msg('c', nil)...)
	resp = append(resp, msg('C', []byte(fmt.Sprintf("COPY %d\x00", n)))...)
	resp = append(resp, msg('C', []byte("COMMIT\x00"))...)
	resp = append(resp, msg('Z', []byte{'I'})...)

	for _, sizes := range [][]int{{1, 2, 3, 5, 7, 8192}, {4093}, {1 << 22}} {
		t.Run(fmt.Sprint(sizes), func(t *testing.T) {
			conn, got := fakeCopyServer(t, resp, sizes, false)
			var out []byte
			var sum connectors.Checksum
			bw := &batchWriter{
				columns: []string{"a", "b", "c"},
				split:   newRecordSplitter(batchBytes + rawReadBuffer + batchBytes/8),
				emit: func(_ context.Context, b connectors.Batch) error {
					out = append(out, b.Raw...)
					if b.Checksum == nil || b.Checksum.Rows != b.Rows {
						t.Errorf("batch at %s: checksum %v for %d rows", b.Position, b.Checksum, b.Rows)
					} else {
						sum.Merge(*b.Checksum)
					}
					return nil
				},
			}
			copied, err := copyOut(context.Background(), conn, "COPY x TO STDOUT; COMMIT", bw)
			if err != nil {
				t.Fatal(err)
			}
			if err := bw.flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			if copied != n || bw.rows != n {
				t.Errorf("copied %d, emitted %d rows; want %d", copied, bw.rows, n)
			}
			if !bytes.Equal(out, data.Bytes()) {
				t.Errorf("emitted %d bytes, want the %d bytes sent", len(out), data.Len())
			}
			if sum != want {
				t.Errorf("checksum %v, want %v", sum, want)
			}
			query := <-got
			if !bytes.HasPrefix(query, []byte{'Q'}) || !bytes.Contains(query, []byte("COPY x TO STDOUT; COMMIT\x00")) {
				t.Errorf("server read %q", query)
			}
		})
	}
}

func TestCopyOutServerError(t *testing.T) {
	resp := msg('H', []byte{0, 0, 1, 0, 0})
	resp = append(resp, msg('d', []byte("1,a\n"))...)
	resp = append(resp, msg('E', []byte("SERROR\x00C22012\x00Mdivision by zero\x00\x00"))...)
	resp = append(resp, msg('Z', []byte{'E'})...)
	conn, _ := fakeCopyServer(t, resp, []int{3}, false)
	bw := &batchWriter{split: newRecordSplitter(64), emit: func(context.Context, connectors.Batch) error { return nil }}
	_, err := copyOut(context.Background(), conn, "COPY x TO STDOUT; COMMIT", bw)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "22012" || pgErr.Message != "division by zero" {
		t.Fatalf("got %v, want the server's error 22012", err)
	}
}

func TestCopyOutCancel(t *testing.T) {
	conn, got := fakeCopyServer(t, nil, []int{1}, true)
	ctx, cancel := context.WithCancel(context.Background())
	bw := &batchWriter{split: newRecordSplitter(64), emit: func(context.Context, connectors.Batch) error { return nil }}
	done := make(chan error, 1)
	go func() {
		_, err := copyOut(ctx, conn, "COPY x TO STDOUT; COMMIT", bw)
		done <- err
	}()
	<-got
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("copyOut did not return after its context was cancelled")
	}
}

func TestCopyOutTruncated(t *testing.T) {
	// The session ends before ReadyForQuery.
	resp := msg('H', []byte{0, 0, 1, 0, 0})
	resp = append(resp, msg('d', []byte("1,a\n"))...)
	conn, _ := fakeCopyServer(t, resp, []int{2}, false)
	bw := &batchWriter{split: newRecordSplitter(64), emit: func(context.Context, connectors.Batch) error { return nil }}
	if _, err := copyOut(context.Background(), conn, "COPY x TO STDOUT; COMMIT", bw); err == nil {
		t.Fatal("copyOut returned no error for a session that ended before ReadyForQuery")
	}
}
