package main

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/protocol"
)

// pipedCopy times (c), the source piped from COPY (FORMAT binary) TO
// STDOUT into COPY FROM STDIN of a table LIKE the source, and (c'), the
// same followed by the source's primary key; it checks the row count COPY
// FROM reports and, on the first repetition, the copy's checksum.
func (b *bench) pipedCopy(ctx context.Context) error {
	conn, srcTable, pipeTable := b.conn, b.cfg.srcTable(), b.cfg.pipeTable()
	for _, sql := range []string{
		"DROP TABLE IF EXISTS " + pipeTable,
		"CREATE TABLE " + pipeTable + " (LIKE " + srcTable + ")",
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return err
		}
	}
	src, err := pgx.Connect(ctx, b.cfg.dsn)
	if err != nil {
		return err
	}
	defer src.Close(context.Background())
	dst, err := pgx.Connect(ctx, b.cfg.dsn)
	if err != nil {
		return err
	}
	defer dst.Close(context.Background())

	runtime.GC()
	cpu0, srv0 := measure.SelfCPU(), measure.ServerCPU()
	start := time.Now()
	n, err := harness.PipeCopy(ctx, src, dst, "COPY "+srcTable+" ("+columns+") TO STDOUT (FORMAT binary)", "COPY "+pipeTable+" ("+columns+") FROM STDIN (FORMAT binary)")
	copied := time.Since(start).Seconds()
	cpuCopy := cpuUse{client: measure.SelfCPU() - cpu0, server: measure.ServerCPU() - srv0}
	if err != nil {
		return err
	}
	if n != b.cfg.rows {
		return fmt.Errorf("piped copy loaded %d rows, want %d", n, b.cfg.rows)
	}
	if _, err := dst.Exec(ctx, "ALTER TABLE "+pipeTable+" ADD PRIMARY KEY (id)"); err != nil {
		return fmt.Errorf("piped copy: primary key: %w", err)
	}
	secs := time.Since(start).Seconds()
	cpuPK := cpuUse{client: measure.SelfCPU() - cpu0, server: measure.ServerCPU() - srv0}
	m, mpk := b.ms["piped_copy_binary"], b.ms["piped_copy_then_pk"]
	if len(m.Seconds) == 0 {
		got, err := postgres.TableChecksum(ctx, conn, "SELECT "+columns+" FROM "+pipeTable)
		if err != nil {
			return err
		}
		if got != b.src {
			return fmt.Errorf("piped copy: %d rows %s, source %d rows %s", got.Rows, got, b.src.Rows, b.src)
		}
		m.Verified = "row count (COPY FROM's); (first repetition) checksum equal to the source's"
		mpk.Verified = m.Verified
	}
	m.add(copied, cpuCopy)
	mpk.add(secs, cpuPK)
	if _, err := conn.Exec(ctx, "DROP TABLE "+pipeTable); err != nil {
		return err
	}
	fmt.Fprintf(b.stdout, ", piped copy %.2fs (%.2fs with the primary key)", copied, secs)
	return nil
}

// sluicePG times (d), a run of the pipeline bench-pass-pg, and checks the
// view against the source.
func (b *bench) sluicePG(ctx context.Context, c *devcluster.Cluster) error {
	secs, cpu, st, err := timeRun(ctx, c, "bench-pass-pg")
	if err != nil {
		return err
	}
	got, err := postgres.TableChecksum(ctx, b.conn, "SELECT "+columns+" FROM "+b.cfg.copyTable())
	if err != nil {
		return err
	}
	if got != b.src {
		return fmt.Errorf("sluice passthrough: the view holds %d rows %s, the source %d rows %s", got.Rows, got, b.src.Rows, b.src)
	}
	m := b.ms["sluice_pg_to_pg"]
	m.add(secs, cpu)
	m.Tasks = st.Tasks
	m.Verified = "row count and checksum of the view (postgres.TableChecksum) equal the source's"
	fmt.Fprintf(b.stdout, ", sluice pg %.2fs", secs)
	return nil
}

// timeRun runs a pipeline on the cluster and waits for its commit.
func timeRun(ctx context.Context, c *devcluster.Cluster, name string) (float64, cpuUse, protocol.RunStatus, error) {
	runtime.GC()
	cpu0, srv0 := measure.SelfCPU(), measure.ServerCPU()
	start := time.Now()
	res, err := c.Client.Run(ctx, protocol.RunRequest{Pipeline: name})
	if err != nil {
		return 0, cpuUse{}, protocol.RunStatus{}, fmt.Errorf("run %s: %w", name, err)
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
		return 0, cpuUse{}, st, err
	}
	if st.State != protocol.RunCommitted {
		return 0, cpuUse{}, st, fmt.Errorf("run %s %s: %s", st.RunID, st.State, st.Error)
	}
	return secs, cpu, st, nil
}
