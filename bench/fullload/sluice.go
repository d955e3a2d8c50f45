package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"runtime/pprof"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/protocol"
)

// sluiceCSV times (b), a run of the pipeline bench-pg-csv, and checks the
// committed CSV files against the source.
func (b *bench) sluiceCSV(ctx context.Context, c *devcluster.Cluster) error {
	secs, cpu, st, err := timeRun(ctx, c, "bench-pg-csv", nil)
	if err != nil {
		return err
	}
	if err := verifyCSV(b.csvOut, b.src, st); err != nil {
		return err
	}
	m := b.ms["sluice_pg_to_csv"]
	m.Add(secs, cpu)
	m.Tasks = st.Tasks
	m.Verified = "row count and checksum of the committed CSV files (files.ReadChecksum) equal the source's"
	fmt.Fprintf(b.stdout, ", sluice csv %.2fs", secs)
	return nil
}

// sluicePG times (d), a run of the pipeline bench-pg-pg, and checks the
// sink's view against the source.
func (b *bench) sluicePG(ctx context.Context, c *devcluster.Cluster) error {
	secs, cpu, st, err := timeRun(ctx, c, "bench-pg-pg", nil)
	if err != nil {
		return err
	}
	if err := verifyPG(ctx, b.conn, b.cfg.copyTable(), b.src, st); err != nil {
		return err
	}
	m := b.ms["sluice_pg_to_pg"]
	m.Add(secs, cpu)
	m.Tasks = st.Tasks
	m.Verified = "row count and checksum of the view (postgres.TableChecksum) equal the source's"
	fmt.Fprintf(b.stdout, ", sluice pg %.2fs", secs)
	return nil
}

// timeRun runs a pipeline on the cluster and waits for its commit. With
// profile set, it records a CPU profile of the run into it.
func timeRun(ctx context.Context, c *devcluster.Cluster, name string, profile io.Writer) (float64, measure.Use, protocol.RunStatus, error) {
	if profile != nil {
		if err := pprof.StartCPUProfile(profile); err != nil {
			return 0, measure.Use{}, protocol.RunStatus{}, err
		}
		defer pprof.StopCPUProfile()
	}
	return harness.TimeRun(ctx, c.Client, name)
}

// verifyCSV compares the committed CSV dataset with the source.
func verifyCSV(root string, src connectors.Checksum, st protocol.RunStatus) error {
	cur, err := files.Current(root)
	if err != nil {
		return err
	}
	if want := filepath.Join(root, fmt.Sprintf("v%06d", st.Version)); cur != want {
		return fmt.Errorf("verify CSV: current is %s, run %s committed %s", cur, st.RunID, want)
	}
	got, err := files.ReadChecksum(cur, "csv")
	if err != nil {
		return err
	}
	if got != src || st.Rows != src.Rows {
		return fmt.Errorf("verify CSV: %s holds %d rows %s (run reported %d), source %d rows %s", cur, got.Rows, got, st.Rows, src.Rows, src)
	}
	return nil
}

// verifyPG compares the view of the PostgreSQL sink with the source.
func verifyPG(ctx context.Context, conn *pgx.Conn, copyTable string, src connectors.Checksum, st protocol.RunStatus) error {
	got, err := postgres.TableChecksum(ctx, conn, "SELECT "+columns+" FROM "+copyTable)
	if err != nil {
		return err
	}
	if got != src || st.Rows != src.Rows {
		return fmt.Errorf("verify PG: %s holds %d rows %s (run reported %d), source %d rows %s", copyTable, got.Rows, got, st.Rows, src.Rows, src)
	}
	return nil
}
