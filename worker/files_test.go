package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/protocol"
)

// TestFilesConnector runs a run planned by the real files connector: the
// results' rows and checksums add up to those of the input, and the staged
// outputs commit into a dataset with the same checksum.
func TestFilesConnector(t *testing.T) {
	e := newEnv(t)
	files.Register(e.reg)
	e.createStreams(30 * time.Second)

	in, out := t.TempDir(), t.TempDir()
	const nfiles, rows = 6, 20
	for f := range nfiles {
		var b strings.Builder
		for r := range rows {
			fmt.Fprintf(&b, "{\"file\":%d,\"row\":%d,\"name\":\"n-%d-%d\"}\n", f, r, f, r)
		}
		if err := os.WriteFile(filepath.Join(in, fmt.Sprintf("part-%02d.jsonl", f)), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A file with a bad row goes to a second pipeline, to see its position.
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "bad.jsonl"), []byte("{\"a\":1}\n{\"a\":2}\nnot json\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	srcCfg := json.RawMessage(fmt.Sprintf(`{"path":%q,"format":"jsonl"}`, in))
	sinkCfg := json.RawMessage(fmt.Sprintf(`{"path":%q,"format":"jsonl"}`, out))
	ctx := context.Background()
	src, err := e.reg.OpenSource(ctx, files.Kind, srcCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	plan, err := src.Plan(ctx, connectors.PlanRequest{RunID: "r1", Pipeline: "p", Partitioning: connectors.Partitioning{MaxFiles: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Partitions) != nfiles/2 {
		t.Fatalf("%d partitions, want %d", len(plan.Partitions), nfiles/2)
	}
	for i, p := range plan.Partitions {
		e.publishTask(protocol.Task{
			RunID: "r1", TaskID: fmt.Sprintf("t%03d", i), Pipeline: "p", Pattern: protocol.PatternFullLoad,
			Source:    protocol.Endpoint{Kind: files.Kind, Config: srcCfg},
			Sink:      protocol.Endpoint{Kind: files.Kind, Config: sinkCfg},
			Partition: p, Enqueue: 1,
		}, nil)
	}
	badSrc := json.RawMessage(fmt.Sprintf(`{"path":%q,"format":"jsonl"}`, bad))
	bs, err := e.reg.OpenSource(ctx, files.Kind, badSrc)
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	bp, err := bs.Plan(ctx, connectors.PlanRequest{RunID: "r2", Pipeline: "p"})
	if err != nil || len(bp.Partitions) != 1 {
		t.Fatalf("plan of the bad input: %v, %d partitions", err, len(bp.Partitions))
	}
	e.publishTask(protocol.Task{
		RunID: "r2", TaskID: "t000", Pipeline: "p", Pattern: protocol.PatternFullLoad,
		Source:    protocol.Endpoint{Kind: files.Kind, Config: badSrc},
		Sink:      protocol.Endpoint{Kind: files.Kind, Config: sinkCfg},
		Partition: bp.Partitions[0], Enqueue: 1,
	}, nil)

	r := e.start(fastConfig(2), nil)
	e.waitResults(len(plan.Partitions) + 1)
	e.waitTasksGone()
	r.stop(t)

	var got connectors.Checksum
	var outputs []connectors.TaskOutput
	results := e.results()
	slices.SortFunc(results, func(a, b protocol.Result) int { return strings.Compare(a.TaskID, b.TaskID) })
	for _, res := range results {
		if res.RunID == "r2" {
			if res.ErrorClass != protocol.ErrorPermanent || !strings.Contains(res.Error, "bad.jsonl") || !strings.Contains(res.Error, "row 3") {
				t.Errorf("bad input: result %+v, want a permanent failure at bad.jsonl row 3", res)
			}
			continue
		}
		if res.Failed() {
			t.Fatalf("task %s failed: %s", res.TaskID, res.Error)
		}
		sum := connectors.Checksum{Sum: uint64(res.Checksum), Rows: res.Rows}
		got.Merge(sum)
		outputs = append(outputs, connectors.TaskOutput{Rows: res.Rows, Bytes: res.Bytes, Checksum: sum, Location: res.Location})
	}
	want, err := files.ReadChecksum(in, "jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if got != want || got.Rows != nfiles*rows {
		t.Fatalf("results add up to %d rows, checksum %s; input has %d rows, checksum %s", got.Rows, got, want.Rows, want)
	}

	// The staged outputs the results point at commit into the same data.
	sink, err := e.reg.OpenSink(ctx, files.Kind, sinkCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	cr, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "r1", Pipeline: "p", Version: 1, Tasks: outputs})
	if err != nil {
		t.Fatalf("commit the staged outputs: %v", err)
	}
	loc := cr.Location
	if !filepath.IsAbs(loc) {
		loc = filepath.Join(out, loc)
	}
	committed, err := files.ReadChecksum(loc, "jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if committed != want {
		t.Fatalf("committed dataset: %d rows, checksum %s; want %d, %s", committed.Rows, committed, want.Rows, want)
	}
}
