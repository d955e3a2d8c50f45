package iceberg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/iceberg/s3test"
)

// randomRows are n CSV rows of (id, v) with v 600 bytes of random hex:
// about 1.2 KB a row even compressed.
func randomRows(lo, n int) connectors.Batch {
	var raw []byte
	buf := make([]byte, 600)
	for i := lo; i < lo+n; i++ {
		rand.Read(buf)
		raw = fmt.Appendf(raw, "%d,%s\n", i, hex.EncodeToString(buf))
	}
	return connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: idv.Names(), Rows: int64(n)}
}

// A worker killed mid-upload on S3: its upload never completes and no
// object of it is visible; the retry's objects are the table's, and the
// commit leaves nothing of the first attempt behind (its finished file
// deleted, its upload in progress aborted).
func TestKilledMidUploadS3(t *testing.T) {
	ctx := context.Background()
	cfg, bucket := s3Config(t, "killed")
	s := newSink(t, cfg)
	defer s.Close()
	if err := s.CheckSchema(ctx, idv); err != nil {
		t.Fatal(err)
	}
	// Attempt 1: a first file finished, a second one uploading (more
	// than a part written), then the worker dies.
	w1, err := s.OpenTask(ctx, connectors.TaskRef{RunID: "run-1", TaskID: "t1", Attempt: 1, Schema: idv})
	if err != nil {
		t.Fatal(err)
	}
	tw := w1.(*taskWriter)
	if err := tw.Write(ctx, randomRows(0, 100)); err != nil {
		t.Fatal(err)
	}
	tw.flush(ctx)
	if err := tw.closeFile(); err != nil {
		t.Fatal(err)
	}
	// The upload is one PUT under 8 MiB, multipart beyond.
	for i := 0; tw.file == nil || tw.file.cw.n < 20<<20; i++ {
		if err := tw.Write(ctx, randomRows(100+2000*i, 2000)); err != nil {
			t.Fatal(err)
		}
		if err := tw.flush(ctx); err != nil {
			t.Fatal(err)
		}
		tw.file.pw.NewBufferedRowGroup() // the row group out of memory, into the upload
	}
	cl := s3test.Client()
	prefix := strings.TrimPrefix(runDir(load(t, cfg.Config), "run-1"), "s3://"+bucket+"/")
	ups, err := s3test.Uploads(ctx, cl, bucket, prefix)
	if err != nil || len(ups) != 1 {
		t.Fatalf("uploads in progress under %s: %v %v, want the killed attempt's", prefix, ups, err)
	}
	// The retry.
	out := write(t, s, "run-1", "t1", 2, idv, []connectors.Batch{randomRows(0, 300)})
	commit(t, s, "run-1", 1, out)
	tbl := load(t, cfg.Config)
	files, err := liveFiles(ctx, tbl, nil)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := s3test.Keys(ctx, cl, bucket, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || len(keys) != 1 || files[0].FilePath() != "s3://"+bucket+"/"+keys[0] || !strings.Contains(keys[0], "/t1-a2-") {
		t.Fatalf("after the commit the table has %d files, the run's prefix %v; want attempt 2's file alone in both", len(files), keys)
	}
	if ups, err := s3test.Uploads(ctx, cl, bucket, prefix); err != nil || len(ups) != 0 {
		t.Errorf("uploads left after the commit: %v %v", ups, err)
	}
	if got := csvChecksum(t, scanRecords(t, tbl, 0)); got != out.Checksum {
		t.Errorf("table rows %d checksum %s, the retry's %d %s", got.Rows, got, out.Checksum.Rows, out.Checksum)
	}
	tw.file.ow.Abort() // the dead worker's goroutine
	all, err := s3test.Keys(ctx, cl, bucket, "")
	if err != nil {
		t.Fatal(err)
	}
	var data []string
	for _, k := range all {
		if strings.Contains(k, "/data/") {
			data = append(data, k)
		}
	}
	if !slices.Equal(data, keys) {
		t.Errorf("data objects in the bucket: %v, want %v", data, keys)
	}
}
