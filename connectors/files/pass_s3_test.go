package files_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/conformance"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/files/filestest"
	"github.com/sluicehq/sluice/objstore"
	"github.com/sluicehq/sluice/objstore/s3test"
)

// s3TreeSum is treeSum of the objects under loc (each read whole), in
// the form of filestest.TreeSum.
func s3TreeSum(t testing.TB, loc objstore.Location) string {
	t.Helper()
	b := s3test.Client(t)
	h := sha256.New()
	var sum filestest.TreeSum
	prefix := loc.Key + "/"
	err := b.List(t.Context(), prefix, func(o objstore.Object) error {
		data, err := b.Get(t.Context(), o.Key)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00", strings.TrimPrefix(o.Key, prefix))
		h.Write(data)
		h.Write([]byte{0})
		sum.Files++
		sum.Bytes += int64(len(data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sum.SHA = hex.EncodeToString(h.Sum(nil))
	return sum.String()
}

// The passthrough conformance suite from a local tree into S3
// (versitygw), mirrored.
func TestPassthroughConformanceS3(t *testing.T) {
	loc := s3test.Env(t)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, 0)
	out := loc.Join("out")
	conformance.TestUnits(t, conformance.UnitsHarness{
		Source: func(t *testing.T) connectors.Source { return passSource(t, files.SourceConfig{Path: src}) },
		Sink: func(t *testing.T) connectors.Sink {
			return passSink(t, files.SinkConfig{Path: out.String(), Mirror: true})
		},
		Partitioning: connectors.Partitioning{MaxFiles: 3},
		Equal: func(t *testing.T) error {
			if got, want := s3TreeSum(t, out), treeSum(t, src); got != want {
				return fmt.Errorf("target %s, source %s", got, want)
			}
			return nil
		},
		Change: func(t *testing.T) { changeTree(t, src) },
	})
}

// A tree with a file split into ranges goes from local disk to S3 (the
// ranges staged as objects, composed on the server at commit), and from
// there back to local disk (the ranges read by ranged GETs): both copies
// equal the source; nothing is left staged or uploading; a second run
// from S3 copies nothing.
func TestPassthroughS3RoundTrip(t *testing.T) {
	ctx := t.Context()
	loc := s3test.Env(t)
	dir := t.TempDir()
	src, back := filepath.Join(dir, "src"), filepath.Join(dir, "back")
	makeTree(t, src, 64<<20+100<<10)
	part := connectors.Partitioning{TargetBytes: 64 << 20}
	mid := loc.Join("mid")
	r, err := conformance.RunUnits(ctx, passSource(t, files.SourceConfig{Path: src}), passSink(t, files.SinkConfig{Path: mid.String()}), "up-1", nil, part)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s3TreeSum(t, mid), treeSum(t, src); got != want {
		t.Fatalf("S3 copy %s, source %s", got, want)
	}
	b := s3test.Client(t)
	state := loc.Join(".mid.sluice")
	if ups, err := b.Uploads(ctx, state.Key+"/"); err != nil || len(ups) != 0 {
		t.Errorf("uploads left under the state: %v %v", ups, err)
	}
	if ok, err := b.HasObjects(ctx, state.Join("staging").Key+"/"); err != nil || ok {
		t.Errorf("staging objects left after the commit (%v)", err)
	}
	if ok, _ := b.Exists(ctx, state.Join("manifests/up-1.jsonl").Key); !ok || r.Watermark != "manifest:up-1" {
		t.Errorf("no manifest of up-1 (watermark %q)", r.Watermark)
	}

	down := passSource(t, files.SourceConfig{Path: mid.String()})
	sink := passSink(t, files.SinkConfig{Path: back})
	r2, err := conformance.RunUnits(ctx, down, sink, "down-1", nil, part)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := treeSum(t, back), treeSum(t, src); got != want {
		t.Errorf("copy back %s, source %s", got, want)
	}
	r3, err := conformance.RunUnits(ctx, down, sink, "down-2", &r2, part)
	if err != nil {
		t.Fatal(err)
	}
	if len(r3.Plan.Partitions) != 0 {
		t.Errorf("a second run from S3 planned %d partitions", len(r3.Plan.Partitions))
	}
}
