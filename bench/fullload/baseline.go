package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/bench/measure"
)

// psqlCopy times (a), psql's \copy of the source to a CSV file, and checks
// the file: as many lines as the source has rows on the first repetition,
// the same size on the others.
func (b *bench) psqlCopy(ctx context.Context) error {
	secs, cpu, n, err := timePSQL(ctx, b.psql, b.cfg.dsn, b.cfg.srcTable(), b.psqlOut)
	if err != nil {
		return err
	}
	if b.csvBytes == 0 {
		lines, err := countLines(b.psqlOut)
		if err != nil {
			return err
		}
		if lines != b.cfg.rows {
			return fmt.Errorf("psql wrote %d lines, want %d", lines, b.cfg.rows)
		}
		b.csvBytes = n
	} else if n != b.csvBytes {
		return fmt.Errorf("psql wrote %d bytes, %d before", n, b.csvBytes)
	}
	m := b.ms["psql_copy_to_csv"]
	m.Add(secs, cpu)
	m.Verified = "row count (lines of the file)"
	os.Remove(b.psqlOut)
	fmt.Fprintf(b.stdout, " psql %.2fs", secs)
	return nil
}

// timePSQL runs psql's \copy of table to a CSV file and returns its wall
// time, the psql process's CPU, PostgreSQL's CPU and the file's size.
func timePSQL(ctx context.Context, psql, dsn, table, file string) (float64, measure.Use, int64, error) {
	os.Remove(file)
	cmd := exec.CommandContext(ctx, psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn,
		"-c", `\copy (SELECT `+columns+` FROM `+table+`) TO '`+file+`' csv`)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	srv0 := measure.ServerCPU()
	start := time.Now()
	err := cmd.Run()
	secs := time.Since(start).Seconds()
	srv1 := measure.ServerCPU()
	if err != nil {
		return 0, measure.Use{}, 0, fmt.Errorf("psql \\copy: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	st, err := os.Stat(file)
	if err != nil {
		return 0, measure.Use{}, 0, err
	}
	client := (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	return secs, measure.Use{Client: client, Server: srv1 - srv0}, st.Size(), nil
}

// countLines counts the newlines of a file.
func countLines(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	buf := make([]byte, 1<<20)
	for {
		k, err := f.Read(buf)
		n += int64(bytes.Count(buf[:k], []byte{'\n'}))
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// pipedCopy times (c), the source piped from COPY TO STDOUT into COPY FROM
// STDIN, and checks the row count COPY FROM reports.
func (b *bench) pipedCopy(ctx context.Context) error {
	secs, cpu, err := b.timePipe(ctx)
	if err != nil {
		return err
	}
	m := b.ms["piped_copy_pg_to_pg"]
	m.Add(secs, cpu)
	m.Verified = "row count (COPY FROM's)"
	fmt.Fprintf(b.stdout, ", piped copy %.2fs", secs)
	return nil
}

// timePipe copies the source into a fresh table through COPY TO STDOUT and
// COPY FROM STDIN on two connections, the bytes piped between them through
// a 256 KiB buffer (as a shell pipe between two psql would).
func (b *bench) timePipe(ctx context.Context) (float64, measure.Use, error) {
	conn, dsn, rows := b.conn, b.cfg.dsn, b.cfg.rows
	srcTable, pipeTable := b.cfg.srcTable(), b.cfg.pipeTable()
	for _, sql := range []string{
		"DROP TABLE IF EXISTS " + pipeTable,
		"CREATE TABLE " + pipeTable + " (LIKE " + srcTable + ")",
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return 0, measure.Use{}, err
		}
	}
	src, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, measure.Use{}, err
	}
	defer src.Close(context.Background())
	dst, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, measure.Use{}, err
	}
	defer dst.Close(context.Background())

	runtime.GC()
	cpu0, srv0 := measure.SelfCPU(), measure.ServerCPU()
	start := time.Now()
	n, err := harness.PipeCopy(ctx, src, dst, "COPY (SELECT "+columns+" FROM "+srcTable+") TO STDOUT", "COPY "+pipeTable+" ("+columns+") FROM STDIN")
	secs := time.Since(start).Seconds()
	cpu := measure.Use{Client: measure.SelfCPU() - cpu0, Server: measure.ServerCPU() - srv0}
	if err != nil {
		return 0, measure.Use{}, fmt.Errorf("piped copy: %w", err)
	}
	if n != rows {
		return 0, measure.Use{}, fmt.Errorf("piped copy loaded %d rows, want %d", n, rows)
	}
	if _, err := conn.Exec(ctx, "DROP TABLE "+pipeTable); err != nil {
		return 0, measure.Use{}, err
	}
	return secs, cpu, nil
}
