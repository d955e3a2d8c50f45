package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/devcluster"
)

// timeSluice times (b): a live run of the pipeline, which must merge the
// repetition's changes, [lo, hi) of the versions, into its target.
func (b *bench) timeSluice(ctx context.Context, c *devcluster.Cluster, lo, hi int64) error {
	secs, use, st, err := harness.TimeRun(ctx, c.Client, "bench-merge")
	if err != nil {
		return err
	}
	if w := st.Window; w == nil || w.Hi != hi || w.Lo > lo || st.Rows != b.cfg.changed {
		return fmt.Errorf("run %s merged %d rows of window %v, want the %d changed rows, versions [%d, %d)", st.RunID, st.Rows, st.Window, b.cfg.changed, lo, hi)
	}
	b.sluice.Add(secs, use)
	b.sluice.Tasks = st.Tasks
	p := use.Phases
	fmt.Fprintf(b.stdout, " sluice %.2fs (plan %.2f, tasks %.2f, commit %.2f)", secs, p.Plan, p.Tasks, p.Commit)
	return nil
}

// timeBaseline times (a): the repetition's changes, [lo, hi) of the
// versions, copied from the source into a staging table through COPY TO
// STDOUT piped into COPY FROM STDIN on two connections, then merged into
// the baseline's target by INSERT ... ON CONFLICT (id) DO UPDATE in one
// transaction that drops the staging table.
func (b *bench) timeBaseline(ctx context.Context, lo, hi int64) error {
	cfg := b.cfg
	src, err := pgx.Connect(ctx, cfg.dsn)
	if err != nil {
		return err
	}
	defer src.Close(context.Background())
	dst, err := pgx.Connect(ctx, cfg.dsn)
	if err != nil {
		return err
	}
	defer dst.Close(context.Background())
	cols := strings.Split(columns, ", ")
	var sets []string
	for _, c := range cols[1:] {
		sets = append(sets, c+" = EXCLUDED."+c)
	}

	runtime.GC()
	cpu0, srv0 := measure.SelfCPU(), measure.ServerCPU()
	start := time.Now()
	if _, err := dst.Exec(ctx, "CREATE TABLE "+cfg.stage()+" (LIKE "+cfg.src()+")"); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	var g errgroup.Group
	g.Go(func() error {
		bw := bufio.NewWriterSize(pw, 256<<10)
		_, err := src.PgConn().CopyTo(ctx, bw, fmt.Sprintf("COPY (SELECT %s FROM %s WHERE version >= %d AND version < %d) TO STDOUT", columns, cfg.src(), lo, hi))
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
		return err
	})
	tag, err := dst.PgConn().CopyFrom(ctx, pr, "COPY "+cfg.stage()+" ("+columns+") FROM STDIN")
	pr.CloseWithError(errors.New("copy from ended"))
	if gerr := g.Wait(); err == nil {
		err = gerr
	}
	if err != nil {
		return fmt.Errorf("baseline: copy: %w", err)
	}
	if tag.RowsAffected() != cfg.changed {
		return fmt.Errorf("baseline: copied %d rows, want %d", tag.RowsAffected(), cfg.changed)
	}
	tx, err := dst.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	up, err := tx.Exec(ctx, "INSERT INTO "+cfg.base()+" ("+columns+") SELECT "+columns+" FROM "+cfg.stage()+
		" ON CONFLICT (id) DO UPDATE SET "+strings.Join(sets, ", "))
	if err != nil {
		return fmt.Errorf("baseline: insert ... on conflict: %w", err)
	}
	if _, err := tx.Exec(ctx, "DROP TABLE "+cfg.stage()); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	secs := time.Since(start).Seconds()
	if up.RowsAffected() != cfg.changed {
		return fmt.Errorf("baseline: merged %d rows, want %d", up.RowsAffected(), cfg.changed)
	}
	b.base.Add(secs, measure.Use{Client: measure.SelfCPU() - cpu0, Server: measure.ServerCPU() - srv0})
	b.base.Verified = "row count (COPY FROM's and INSERT's)"
	fmt.Fprintf(b.stdout, " baseline %.2fs", secs)
	return nil
}
