package files_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/objstore/s3test"
)

// BenchmarkS3Upload uploads the same 128 MiB of JSONL to the S3 test
// server, in the same run: bare, through an objstore multipart Writer
// (the baseline), then through the files sink's task writer (JSONL passed
// through, checksummed line by line, staged, closed; no commit). MB/s is
// of the JSONL bytes. Timings gate nothing.
//
//	go test -run '^$' -bench S3Upload -benchtime 3x ./connectors/files
func BenchmarkS3Upload(b *testing.B) {
	loc := s3test.Env(b)
	bucket := s3test.Client(b)
	var data bytes.Buffer
	var batches []connectors.Batch
	for data.Len() < 128<<20 {
		var chunk bytes.Buffer
		rows := 0
		for chunk.Len() < 1<<20 {
			fmt.Fprintf(&chunk, `{"id":%d,"name":"row %d","amount":%d.25,"ok":true}`+"\n", data.Len()+chunk.Len(), rows, rows)
			rows++
		}
		batches = append(batches, connectors.Batch{Raw: chunk.Bytes(), Format: connectors.FormatJSONL, Rows: int64(rows)})
		data.Write(chunk.Bytes())
	}
	sink, err := files.NewSink(files.SinkConfig{Path: loc.Join("sink").String()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	b.Run("bare", func(b *testing.B) {
		b.SetBytes(int64(data.Len()))
		for i := range b.N {
			w := bucket.NewWriter(loc.Join(fmt.Sprintf("bare/%d", i)).Key)
			for _, bt := range batches {
				if _, err := w.Write(bt.Raw); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := w.Close(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sink", func(b *testing.B) {
		b.SetBytes(int64(data.Len()))
		for i := range b.N {
			w, err := sink.OpenTask(ctx, connectors.TaskRef{RunID: "bench", TaskID: fmt.Sprint(i), Attempt: 1})
			if err != nil {
				b.Fatal(err)
			}
			for _, bt := range batches {
				if err := w.Write(ctx, bt); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := w.Close(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
