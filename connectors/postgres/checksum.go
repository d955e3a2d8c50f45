package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors"
)

// TableChecksum computes the connectors.Checksum of the rows a query
// returns, rendered by `COPY (query) TO STDOUT WITH (FORMAT csv)`: one hash
// per CSV record line, as the source emits it and the sink and the files
// sink checksum it. query is a SELECT (or "TABLE name"); compare a source
// and a target with the same column list. It runs in a transaction of its
// own on conn with the package's rendering settings (time zone UTC, ISO
// dates, extra_float_digits 1, hex bytea) set locally, so the result does
// not depend on the session's settings; conn must not be in a transaction.
func TableChecksum(ctx context.Context, conn *pgx.Conn, query string) (connectors.Checksum, error) {
	var sum connectors.Checksum
	tx, err := conn.Begin(ctx)
	if err != nil {
		return sum, err
	}
	defer tx.Rollback(context.Background())
	for k, v := range sessionParams {
		if k == "client_encoding" || k == "application_name" {
			continue
		}
		if _, err := tx.Exec(ctx, "SELECT set_config($1, $2, true)", k, v); err != nil {
			return sum, fmt.Errorf("checksum: set %s: %w", k, err)
		}
	}
	w := &checksumWriter{split: newRecordSplitter(batchBytes + batchBytes/8), sum: &sum}
	tag, err := conn.PgConn().CopyTo(ctx, w, "COPY ("+query+") TO STDOUT WITH (FORMAT csv)")
	if err != nil {
		return connectors.Checksum{}, fmt.Errorf("checksum: copy: %w", err)
	}
	w.flush()
	if w.split.Partial() {
		return connectors.Checksum{}, fmt.Errorf("checksum: copy output ends inside a record")
	}
	if sum.Rows != tag.RowsAffected() {
		return connectors.Checksum{}, fmt.Errorf("checksum: split %d records but COPY sent %d rows", sum.Rows, tag.RowsAffected())
	}
	return sum, tx.Commit(ctx)
}

type checksumWriter struct {
	split *recordSplitter
	sum   *connectors.Checksum
}

func (w *checksumWriter) Write(p []byte) (int, error) {
	w.split.Write(p)
	if w.split.WholeLen() >= batchBytes {
		w.flush()
	}
	return len(p), nil
}

func (w *checksumWriter) flush() {
	w.sum.Merge(w.split.Sum())
}
