package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/contract"
	"github.com/sluicehq/sluice/protocol"
)

// transformedChecksum reads the source table as a worker does and passes
// it through the contract in this process, outside the cluster: the
// checksum of the rows the transform loads must hold (CSV records, one
// Checksum.Add each, as the sinks' checksums count them).
func transformedChecksum(ctx context.Context, cfg config, ct *contract.Contract) (connectors.Checksum, error) {
	src, err := postgres.NewSource(postgres.SourceConfig{DSN: cfg.dsn, Table: cfg.srcTable()})
	if err != nil {
		return connectors.Checksum{}, err
	}
	defer src.Close()
	const runID = "bench-contract-expected"
	plan, err := src.Plan(ctx, connectors.PlanRequest{RunID: runID, Partitioning: connectors.Partitioning{TargetRows: cfg.targetRows}})
	if err != nil {
		return connectors.Checksum{}, err
	}
	defer src.ReleaseRun(runID)
	sum := &summer{}
	w, err := ct.Writer(sum)
	if err != nil {
		return connectors.Checksum{}, err
	}
	for _, p := range plan.Partitions {
		if err := src.Read(ctx, p, w.Write); err != nil {
			return connectors.Checksum{}, fmt.Errorf("read %s through the contract: %w", cfg.srcTable(), err)
		}
	}
	if _, err := w.Close(ctx); err != nil {
		return connectors.Checksum{}, err
	}
	if sum.sum.Rows != cfg.rows {
		return connectors.Checksum{}, fmt.Errorf("the contract passed %d rows of %d", sum.sum.Rows, cfg.rows)
	}
	return sum.sum, nil
}

// summer is a task writer that checksums the CSV records written to it,
// one a line: no value of the benchmark's table holds a line break.
type summer struct{ sum connectors.Checksum }

func (s *summer) Write(_ context.Context, b connectors.Batch) error {
	if b.Format != connectors.FormatCSV || (len(b.Raw) == 0) != (b.Rows == 0) {
		return fmt.Errorf("the contract wrote %d rows, %d bytes of format %q; want CSV", b.Rows, len(b.Raw), b.Format)
	}
	var n int64
	for line := range bytes.Lines(b.Raw) {
		s.sum.Add(bytes.TrimSuffix(line, []byte("\n")))
		n++
	}
	if n != b.Rows {
		return fmt.Errorf("the contract wrote %d lines for %d rows", n, b.Rows)
	}
	return nil
}

func (s *summer) Close(context.Context) (connectors.TaskOutput, error) {
	return connectors.TaskOutput{Rows: s.sum.Rows}, nil
}

func (s *summer) Abort(context.Context) error { return nil }

// verifyCSV checks that the CSV dataset at root exposes the version run st
// committed, holding the rows of checksum want.
func verifyCSV(root string, want connectors.Checksum, st protocol.RunStatus) error {
	cur, err := files.Current(root)
	if err != nil {
		return err
	}
	if v := filepath.Join(root, fmt.Sprintf("v%06d", st.Version)); cur != v {
		return fmt.Errorf("verify CSV: current is %s, run %s committed %s", cur, st.RunID, v)
	}
	got, err := files.ReadChecksum(cur, "csv")
	if err != nil {
		return err
	}
	if got != want || st.Rows != want.Rows {
		return fmt.Errorf("verify CSV: %s holds %d rows %s (run reported %d); want %d rows %s", cur, got.Rows, got, st.Rows, want.Rows, want)
	}
	return nil
}

// verifyPG checks that the PostgreSQL sink's view holds the rows of
// checksum want.
func verifyPG(ctx context.Context, conn *pgx.Conn, view string, want connectors.Checksum, st protocol.RunStatus) error {
	got, err := postgres.TableChecksum(ctx, conn, "SELECT * FROM "+view)
	if err != nil {
		return err
	}
	if got != want || st.Rows != want.Rows {
		return fmt.Errorf("verify PG: %s holds %d rows %s (run reported %d); want %d rows %s", view, got.Rows, got, st.Rows, want.Rows, want)
	}
	return nil
}

// verifyHash checks one hashed value of the PostgreSQL copy (a customer
// with a comma) against the HMAC-SHA256 of the source's value, computed
// here with crypto/hmac: the copy holds what the README promises, not
// merely what the contract package makes.
func verifyHash(ctx context.Context, conn *pgx.Conn, src, view string) error {
	var orig, hashed string
	err := conn.QueryRow(ctx, "SELECT s.customer, t.customer FROM "+src+" s JOIN "+view+" t USING (id) WHERE id = 10").Scan(&orig, &hashed)
	if err != nil {
		return fmt.Errorf("verify hash: %w", err)
	}
	mac := hmac.New(sha256.New, []byte(os.Getenv(keyVar)))
	mac.Write([]byte(orig))
	if want := hex.EncodeToString(mac.Sum(nil)); hashed != want {
		return fmt.Errorf("verify hash: customer of order 10 is %q in %s; want HMAC-SHA256 %q of %q", hashed, view, want, orig)
	}
	return nil
}
