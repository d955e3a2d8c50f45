package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/iceberg"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/protocol"
)

// sluiceLocal times (b), a run of bench-lake-local, and checks it.
func (b *bench) sluiceLocal(ctx context.Context, c *devcluster.Cluster) error {
	return b.sluice(ctx, c, "bench-lake-local", "sluice_iceberg_local", b.local, "sluice local")
}

// sluiceS3 times (c), a run of bench-lake-s3, and checks it.
func (b *bench) sluiceS3(ctx context.Context, c *devcluster.Cluster) error {
	return b.sluice(ctx, c, "bench-lake-s3", "sluice_iceberg_s3", b.s3, "sluice s3")
}

func (b *bench) sluice(ctx context.Context, c *devcluster.Cluster, pipeline, key string, table iceberg.Config, say string) error {
	runtime.GC()
	cpu0, srv0 := measure.SelfCPU(), measure.ServerCPU()
	start := time.Now()
	res, err := c.Client.Run(ctx, protocol.RunRequest{Pipeline: pipeline})
	if err != nil {
		return fmt.Errorf("run %s: %w", pipeline, err)
	}
	planned := time.Since(start).Seconds()
	tasksDone := 0.0
	st, err := c.Client.WaitRun(ctx, res.RunID, 20*time.Millisecond, func(st protocol.RunStatus) {
		if tasksDone == 0 && st.Tasks > 0 && st.TasksDone == st.Tasks {
			tasksDone = time.Since(start).Seconds()
		}
	})
	secs := time.Since(start).Seconds()
	if tasksDone == 0 {
		tasksDone = secs
	}
	cpu := cpuUse{client: measure.SelfCPU() - cpu0, server: measure.ServerCPU() - srv0,
		phases: &phases{Plan: measure.Round(planned, 3), Tasks: measure.Round(tasksDone-planned, 3), Commit: measure.Round(secs-tasksDone, 3)}}
	if err != nil {
		return err
	}
	if st.State != protocol.RunCommitted {
		return fmt.Errorf("run %s %s: %s", st.RunID, st.State, st.Error)
	}
	if st.Rows != b.src.Rows || st.Checksum != b.src.String() {
		return fmt.Errorf("run %s reported %d rows checksum %s; the source has %d rows %s", st.RunID, st.Rows, st.Checksum, b.src.Rows, b.src)
	}
	sn, err := iceberg.CurrentSnapshot(ctx, table)
	if err != nil {
		return err
	}
	if sn.Run != st.RunID || sn.Rows != b.src.Rows {
		return fmt.Errorf("%s's current snapshot is run %s's with %d rows; want run %s's, %d rows", table.Table, sn.Run, sn.Rows, st.RunID, b.src.Rows)
	}
	m := b.ms[key]
	m.add(secs, cpu)
	m.Tasks = st.Tasks
	m.bytes = st.Bytes
	m.Verified = "the run's row count and checksum equal the source's; the current snapshot is the run's, with the source's row count; " +
		"read back by the iceberg source (first repetition), every value rendered as PostgreSQL's CSV checksums like the source"
	if !b.checked[key] {
		// Once: every value read back, by type.
		got, err := readBack(ctx, table)
		if err != nil {
			return err
		}
		if got != b.src {
			return fmt.Errorf("%s read back: %d rows checksum %s; the source has %d rows %s", table.Table, got.Rows, got, b.src.Rows, b.src)
		}
		b.checked[key] = true
	}
	fmt.Fprintf(b.stdout, ", %s %.2fs", say, secs)
	return nil
}

// profile records a CPU profile of one more run of the local load.
func (b *bench) profile(ctx context.Context, c *devcluster.Cluster) error {
	f, err := os.Create(b.cfg.cpuProfile)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	res, err := c.Client.Run(ctx, protocol.RunRequest{Pipeline: "bench-lake-local"})
	if err == nil {
		_, err = c.Client.WaitRun(ctx, res.RunID, 20*time.Millisecond, nil)
	}
	pprof.StopCPUProfile()
	fmt.Fprintf(b.stdout, "profile of one more local load (not timed): %s\n", b.cfg.cpuProfile)
	return err
}

// readBack reads the table's current snapshot with the iceberg source and
// returns the checksum of its rows rendered as PostgreSQL's COPY would
// write the source's in CSV.
func readBack(ctx context.Context, table iceberg.Config) (connectors.Checksum, error) {
	var sum connectors.Checksum
	src, err := iceberg.NewSource(iceberg.SourceConfig{Config: table})
	if err != nil {
		return sum, err
	}
	defer src.Close()
	plan, err := src.Plan(ctx, connectors.PlanRequest{RunID: "read-back"})
	if err != nil {
		return sum, err
	}
	var line []byte
	for _, p := range plan.Partitions {
		err := src.Read(ctx, p, func(_ context.Context, b connectors.Batch) error {
			rec := b.Record
			for r := 0; r < int(rec.NumRows()); r++ {
				line = line[:0]
				for c := 0; c < int(rec.NumCols()); c++ {
					if c > 0 {
						line = append(line, ',')
					}
					line = appendPGCSV(line, rec.Column(c), r)
				}
				sum.Add(line)
			}
			return nil
		})
		if err != nil {
			return sum, err
		}
	}
	return sum, nil
}

// appendPGCSV appends one value as PostgreSQL's COPY writes it in CSV
// (UTC session): NULL empty, text quoted when needed, numeric at its
// scale, timestamptz to the microsecond with "+00", booleans t and f.
func appendPGCSV(dst []byte, a arrow.Array, i int) []byte {
	if a.IsNull(i) {
		return dst
	}
	switch c := a.(type) {
	case *array.Int64:
		return strconv.AppendInt(dst, c.Value(i), 10)
	case *array.Int32:
		return strconv.AppendInt(dst, int64(c.Value(i)), 10)
	case *array.Decimal128:
		return append(dst, c.Value(i).ToString(c.DataType().(*arrow.Decimal128Type).Scale)...)
	case *array.Timestamp:
		return time.UnixMicro(int64(c.Value(i))).UTC().AppendFormat(dst, harness.PGTimestampTZ)
	case *array.Boolean:
		if c.Value(i) {
			return append(dst, 't')
		}
		return append(dst, 'f')
	case *array.String:
		return harness.AppendPGCSV(dst, c.Value(i))
	}
	return append(dst, a.ValueStr(i)...)
}
