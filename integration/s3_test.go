package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/objstore"
	"github.com/sluicehq/sluice/objstore/s3test"
	"github.com/sluicehq/sluice/protocol"
)

// bigJSONL returns JSONL rows of about size bytes whose ids start at
// from, and the signature of its rows as a reader computes it.
func bigJSONL(from, size int) ([]byte, rowSig) {
	var b bytes.Buffer
	var sig rowSig
	for id := from; b.Len() < size; id++ {
		line, _ := json.Marshal(map[string]any{"id": id, "name": fmt.Sprintf("row %d ünï \"q\"", id), "amount": float64(id) / 7, "pad": strings.Repeat("x", id%97)})
		b.Write(line)
		b.WriteByte('\n')
		sig.add(string(line))
	}
	return b.Bytes(), sig
}

// putObject writes an object of the test bucket.
func putObject(t *testing.T, loc objstore.Location, data []byte) {
	t.Helper()
	if err := s3test.Client(t).Put(t.Context(), loc.Key, data); err != nil {
		t.Fatal(err)
	}
}

// linesSig is the signature of the JSONL lines of data.
func linesSig(sig *rowSig, data []byte) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			sig.add(line)
		}
	}
	return sc.Err()
}

// readS3Version reads a files dataset on S3 as the README tells readers
// to: the current pointer names the exposed version; its directory holds
// the data. It returns the version's name and its rows' signature.
func readS3Version(ctx context.Context, b *objstore.Bucket, dataset string) (string, rowSig, error) {
	var sig rowSig
	ptr, err := b.Get(ctx, dataset+"/current")
	if err != nil {
		return "", sig, err
	}
	version := strings.TrimSpace(string(ptr))
	var keys []string
	if err := b.List(ctx, dataset+"/"+version+"/", func(o objstore.Object) error {
		if strings.HasSuffix(o.Key, ".jsonl") {
			keys = append(keys, o.Key)
		}
		return nil
	}); err != nil {
		return "", sig, err
	}
	for _, k := range keys {
		data, err := b.Get(ctx, k)
		if err != nil {
			return "", sig, err
		}
		if err := linesSig(&sig, data); err != nil {
			return "", sig, err
		}
	}
	return version, sig, nil
}

// A files -> S3 full load through the cluster, of one big JSONL object
// split into byte ranges (and a few small objects), on S3 too: the
// exposed version holds every source row once, by a count and checksum
// the test computes itself from the rows it wrote; then S3 -> local, from
// the dataset's current pointer, holds them too.
func TestS3FullLoadByteRanges(t *testing.T) {
	t.Parallel()
	loc := s3test.SharedEnv(t)
	b := s3test.Client(t)
	c := newCluster(t, clusterConfig{workers: 2, slots: 2})
	big, want := bigJSONL(0, 20<<20)
	putObject(t, loc.Join("in/big.jsonl"), big)
	for i := range 3 {
		small, sig := bigJSONL(10_000_000+i*1000, 20<<10)
		putObject(t, loc.Join(fmt.Sprintf("in/small-%d.jsonl", i)), small)
		want.rows += sig.rows
		want.sum += sig.sum
	}
	in, out := loc.Join("in").String(), loc.Join("out").String()
	c.applyYAML("s3-load", fmt.Sprintf(`name: s3-load
pattern: full_load
source: {kind: files, path: %q, format: jsonl}
sink: {kind: files, path: %q, format: jsonl}
partitioning: {target_bytes: 4MiB}
`, in, out))
	res := c.run("s3-load")
	if res.Tasks < 6 {
		t.Fatalf("run planned %d tasks; want the big object split into at least 5 byte ranges, and the small ones", res.Tasks)
	}
	st := c.wait(res.RunID)
	if st.State != protocol.RunCommitted {
		t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	version, got, err := readS3Version(c.ctx(), b, loc.Join("out").Key)
	if err != nil {
		t.Fatal(err)
	}
	if version != "v000001" || got != want || st.Rows != want.rows {
		t.Fatalf("exposed %s holds %s (run reported %d rows); the source has %s", version, got, st.Rows, want)
	}
	if st.Marker != out+"/v000001/_SUCCESS" {
		t.Errorf("marker %q", st.Marker)
	}
	if ok, err := b.Exists(c.ctx(), loc.Join("out/v000001/_SUCCESS").Key); !ok || err != nil {
		t.Errorf("marker object: %v, %v", ok, err)
	}
	if staged, _ := b.HasObjects(c.ctx(), loc.Join("out/_staging").Key+"/"); staged {
		t.Error("staging objects left after the commit")
	}

	// S3 -> local, reading the dataset through its current pointer.
	local := t.TempDir()
	c.applyYAML("s3-back", fmt.Sprintf(`name: s3-back
pattern: full_load
source: {kind: files, path: %q, format: jsonl}
sink: {kind: files, path: %q, format: jsonl}
partitioning: {target_bytes: 8MiB}
`, out+"/current", local))
	st = c.wait(c.run("s3-back").RunID)
	if st.State != protocol.RunCommitted {
		t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	var back rowSig
	entries, err := os.ReadDir(filepath.Join(local, "current"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".jsonl") {
			data, err := os.ReadFile(filepath.Join(local, "current", e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := linesSig(&back, data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if back != want {
		t.Fatalf("S3 -> local holds %s; the source has %s", back, want)
	}
}

// crashKind is a sink kind of this test only: the files sink, whose
// first attempt of one task dies mid-upload.
const crashKind = "files-dying"

// dyingSink wraps the files sink: the first attempt of the first task
// whose output passes 12 MiB (a part of the multipart upload sent, the
// next on its way) stops there, as a worker process killed mid-upload
// would: it writes nothing more, never completes the upload and, once
// killed, never aborts it.
type dyingSink struct {
	connectors.Sink
	death *death
}

// death is shared by every dyingSink the registry opens: one attempt
// dies, once.
type death struct {
	once  sync.Once
	dying chan string // the staging location of the dying attempt
}

func (s *dyingSink) OpenTask(ctx context.Context, t connectors.TaskRef) (connectors.TaskWriter, error) {
	w, err := s.Sink.OpenTask(ctx, t)
	if err != nil || t.Attempt != 1 {
		return w, err
	}
	return &dyingWriter{TaskWriter: w, death: s.death, task: t.TaskID, run: t.RunID}, nil
}

type dyingWriter struct {
	connectors.TaskWriter
	death     *death
	task, run string
	written   int
	dead      bool
}

func (w *dyingWriter) Write(ctx context.Context, b connectors.Batch) error {
	if err := w.TaskWriter.Write(ctx, b); err != nil {
		return err
	}
	w.written += len(b.Raw)
	if w.written > 12<<20 {
		w.death.once.Do(func() {
			w.dead = true
			w.death.dying <- path.Join("_staging", w.run, "part-"+w.task+".jsonl")
		})
	}
	if w.dead {
		<-ctx.Done() // hung until the worker is killed
		return ctx.Err()
	}
	return nil
}

// Abort does nothing for the dead attempt: its process is gone.
func (w *dyingWriter) Abort(ctx context.Context) error {
	if w.dead {
		return nil
	}
	return w.TaskWriter.Abort(ctx)
}

// A worker killed mid-upload: its task's upload stays in progress and
// no object of it is visible, the task is redelivered and its retry's
// object replaces whatever the first attempt had; the exposed version
// holds every source row once, and the commit aborts the dead upload.
func TestS3WorkerKilledMidUpload(t *testing.T) {
	t.Parallel()
	loc := s3test.SharedEnv(t)
	b := s3test.Client(t)
	dying := &death{dying: make(chan string, 1)}
	c := newCluster(t, clusterConfig{workers: 1, slots: 2, ackWait: 2 * time.Second, register: func(reg *connectors.Registry) {
		reg.Register(connectors.Connector{Kind: crashKind, Sink: func(ctx context.Context, raw json.RawMessage) (connectors.Sink, error) {
			s, err := reg.OpenSink(ctx, files.Kind, raw)
			if err != nil {
				return nil, err
			}
			return &dyingSink{Sink: s, death: dying}, nil
		}})
	}})
	data, want := bigJSONL(0, 28<<20)
	putObject(t, loc.Join("in/big.jsonl"), data)
	in, out := loc.Join("in").String(), loc.Join("out").String()
	c.applyYAML("s3-kill", fmt.Sprintf(`name: s3-kill
pattern: full_load
source: {kind: files, path: %q, format: jsonl}
sink: {kind: %s, path: %q, format: jsonl}
partitioning: {target_bytes: 14MiB}
`, in, crashKind, out))
	res := c.run("s3-kill")
	var staged string
	select {
	case staged = <-dying.dying:
	case <-time.After(2 * time.Minute):
		t.Fatal("no attempt reached 12 MiB")
	}
	key := loc.Join("out").Join(staged).Key
	deadline := time.Now().Add(30 * time.Second)
	for {
		ups, err := b.Uploads(c.ctx(), key)
		if err != nil {
			t.Fatal(err)
		}
		if len(ups) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dying attempt has no upload in progress for %s", key)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.addWorker()
	c.workers[0].w.Kill()
	if ok, err := b.Exists(c.ctx(), key); ok || err != nil {
		t.Fatalf("an object of the killed attempt is visible at %s (%v)", key, err)
	}

	st := c.wait(res.RunID)
	if st.State != protocol.RunCommitted {
		t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	c.assertRedelivered(res.RunID)
	version, got, err := readS3Version(c.ctx(), b, loc.Join("out").Key)
	if err != nil {
		t.Fatal(err)
	}
	if version != "v000001" || got != want {
		t.Fatalf("exposed %s holds %s; the source has %s", version, got, want)
	}
	if ups, err := b.Uploads(c.ctx(), loc.Join("out").Key+"/"); err != nil || len(ups) != 0 {
		t.Errorf("uploads in progress after the commit: %q (%v)", ups, err)
	}
	if staged, _ := b.HasObjects(c.ctx(), loc.Join("out/_staging").Key+"/"); staged {
		t.Error("staging objects left after the commit")
	}
}

// Rollback of a files dataset on S3 through the cluster: readers of the
// current pointer see whole versions only (the scenario of
// TestRollbackThroughClusterFiles).
func TestRollbackThroughClusterFilesS3(t *testing.T) {
	t.Parallel()
	loc := s3test.SharedEnv(t)
	b := s3test.Client(t)
	c := newCluster(t, clusterConfig{workers: 1})
	c.apply("roll-s3", loc.Join("in").String(), loc.Join("out").String(), 2, "")
	var all rowSig
	runRollbackScenario(t, rollbackScenario{
		c: c, pipeline: "roll-s3",
		grow: func(t *testing.T, v int64) rowSig {
			rows := versionFile(v)
			putObject(t, loc.Join(fmt.Sprintf("in/part-%d.jsonl", v)), rows)
			if err := linesSig(&all, rows); err != nil {
				t.Fatal(err)
			}
			return all
		},
		read: func(ctx context.Context) (rowSig, error) {
			_, sig, err := readS3Version(ctx, b, loc.Join("out").Key)
			return sig, err
		},
	})
}
