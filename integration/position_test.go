package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// seqLog is a toy source that keeps a position of its own (kind
// "seqlog"): the number of lines of <path>/log.csv read so far, a log of
// "id,v" lines the test appends to. A run plans the lines after the
// watermark, at most max, three per partition; a read fails while
// <path>/fail exists.
type seqLog struct {
	Path string `json:"path"`
	Max  int    `json:"max"`
}

func registerSeqLog(reg *connectors.Registry) {
	reg.Register(connectors.Connector{
		Kind: "seqlog",
		Source: func(_ context.Context, raw json.RawMessage) (connectors.Source, error) {
			var s seqLog
			return s, json.Unmarshal(raw, &s)
		},
		Positions: &connectors.Positions{Name: "offset"},
	})
}

func (s seqLog) lines() ([][]byte, error) {
	data, err := os.ReadFile(filepath.Join(s.Path, "log.csv"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	var out [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		out = append(out, append([]byte(nil), sc.Bytes()...))
	}
	return out, err
}

func (s seqLog) Plan(_ context.Context, req connectors.PlanRequest) (connectors.Plan, error) {
	lines, err := s.lines()
	if err != nil {
		return connectors.Plan{}, err
	}
	from := 0
	if req.Watermark != "" {
		if from, err = strconv.Atoi(req.Watermark); err != nil {
			return connectors.Plan{}, connectors.Permanent(err)
		}
	}
	to := min(len(lines), from+s.Max)
	plan := connectors.Plan{Watermark: strconv.Itoa(max(from, to))}
	for lo := from; lo < to; lo += 3 {
		hi := min(lo+3, to)
		plan.Partitions = append(plan.Partitions, protocol.Partition{Key: fmt.Sprintf("lines[%d:%d]", lo, hi),
			Spec: json.RawMessage(fmt.Sprintf(`[%d,%d]`, lo, hi))})
	}
	return plan, nil
}

func (s seqLog) Read(ctx context.Context, p protocol.Partition, emit connectors.Emit) error {
	if _, err := os.Stat(filepath.Join(s.Path, "fail")); err == nil {
		return connectors.Permanent(errors.New("the log is unreadable"))
	}
	var b [2]int
	if err := json.Unmarshal(p.Spec, &b); err != nil {
		return connectors.Permanent(err)
	}
	lines, err := s.lines()
	if err != nil {
		return err
	}
	if b[1] > len(lines) {
		return connectors.Permanent(fmt.Errorf("lines %v planned, the log has %d", b, len(lines)))
	}
	var raw []byte
	for _, l := range lines[b[0]:b[1]] {
		raw = append(append(raw, l...), '\n')
	}
	return emit(ctx, connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: []string{"id", "v"}, Rows: int64(b[1] - b[0]), Position: p.Key})
}

func (seqLog) Close() error { return nil }

// appendLog appends the lines of ids [lo, hi) to the log in dir.
func appendLog(t *testing.T, dir string, lo, hi int) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "log.csv"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	for id := lo; id < hi; id++ {
		fmt.Fprintf(f, "%d,\"value, %d\"\n", id, id)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// Runs by position through the cluster, into a files sink and a
// PostgreSQL sink at once: each run loads what the log received since
// the watermark (at most 4 lines), appended once; a run with nothing new
// appends nothing; a failed run leaves the watermark and the next run
// loads its lines; every line ends up in each target exactly once.
func TestPositionedRunsAppendOnce(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	c := newCluster(t, clusterConfig{workers: 2, register: registerSeqLog})
	logDir, out := t.TempDir(), filepath.Join(t.TempDir(), "out")
	table := schema + ".log"
	apply := func(name, sink string) {
		t.Helper()
		y := fmt.Sprintf("name: %s\npattern: incremental\nsource: {kind: seqlog, path: %s, max: 4}\nsink: %s\nincremental: {by: offset}\n", name, logDir, sink)
		c.applyYAML(name, y)
	}
	apply("log-files", fmt.Sprintf("{kind: files, path: %s, format: csv}", out))
	apply("log-pg", fmt.Sprintf("{kind: postgres, dsn: %q, table: %s}", dsn, table))
	// ClickHouse cannot append without a window: refused at apply.
	bad, err := pipeline.Parse([]byte(fmt.Sprintf("name: log-ch\npattern: incremental\nsource: {kind: seqlog, path: %s}\nsink: {kind: clickhouse, url: http://127.0.0.1:8123, table: t}\nincremental: {by: offset}\n", logDir)), "ch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.client.Apply(c.ctx(), bad); err == nil {
		t.Fatal("a pipeline by position into clickhouse was applied")
	}

	runBoth := func(wantState, since, reaches string) {
		t.Helper()
		for _, p := range []string{"log-files", "log-pg"} {
			st := c.wait(c.run(p).RunID)
			if st.State != wantState || st.Since != since || st.Reaches != reaches {
				t.Fatalf("%s run %s: %s (%s) from %q to %q; want %s from %q to %q", p, st.RunID, st.State, st.Error, st.Since, st.Reaches, wantState, since, reaches)
			}
		}
	}
	appendLog(t, logDir, 0, 6)
	runBoth(protocol.RunCommitted, "", "4")
	runBoth(protocol.RunCommitted, "4", "6")
	runBoth(protocol.RunCommitted, "6", "6") // nothing new
	appendLog(t, logDir, 6, 9)
	if err := os.WriteFile(filepath.Join(logDir, "fail"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	runBoth(protocol.RunFailed, "6", "9") // planned to 9, never committed
	if err := os.Remove(filepath.Join(logDir, "fail")); err != nil {
		t.Fatal(err)
	}
	runBoth(protocol.RunCommitted, "6", "9")

	lines, err := seqLog{Path: logDir}.lines()
	if err != nil {
		t.Fatal(err)
	}
	var want connectors.Checksum // the log's lines are canonical CSV records
	for _, l := range lines {
		want.Add(l)
	}
	got, err := files.ReadChecksum(out, "csv")
	if err != nil {
		t.Fatal(err)
	}
	dirs, _ := filepath.Glob(filepath.Join(out, "run=*"))
	if got != want || len(dirs) != 3 {
		t.Fatalf("files target: %d rows checksum %s in %d run directories; the log: %d rows checksum %s, in 3 committed runs with rows",
			got.Rows, got, len(dirs), want.Rows, want)
	}
	pgGot, err := postgres.TableChecksum(context.Background(), conn, "SELECT id, v FROM "+table)
	if err != nil {
		t.Fatal(err)
	}
	if pgGot != want {
		t.Fatalf("PostgreSQL target: %d rows checksum %s; the log: %d rows checksum %s", pgGot.Rows, pgGot, want.Rows, want)
	}
	stat, err := c.client.Status(c.ctx(), protocol.StatusRequest{Pipeline: "log-pg"})
	if err != nil || stat.Pipelines[0].Watermark != "9" {
		t.Fatalf("status of log-pg: %+v, %v; want the watermark 9", stat.Pipelines, err)
	}
}
