package pgcdc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// StreamConfig sizes the SLUICE_CDC stream.
type StreamConfig struct {
	// Replicas is the JetStream replica count; 0 means 1.
	Replicas int
	// MaxAge bounds how long events are kept; 0 keeps them until limits
	// are reached.
	MaxAge time.Duration
	// MaxBytes caps the stream; 0 means protocol.CDCMaxBytes. Full, it
	// refuses new events: the reader stops and the source keeps them.
	MaxBytes int64
}

// DuplicateWindow is the SLUICE_CDC dedupe window: a Reader restarted within
// it re-publishes the unconfirmed tail of its slot without duplicates.
const DuplicateWindow = protocol.CDCDuplicateWindow

// EnsureStream creates or updates the central SLUICE_CDC stream (subjects
// sluice.cdc.>, file storage, limits retention, 2 min duplicate window). It
// is idempotent. In a cluster the coordinator leader creates the stream
// (with the cluster's replicas and 7 days of retention); this is for tests
// and tools that run a Reader alone.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) error {
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	sc := jetstream.StreamConfig{
		Name:        protocol.StreamCDC,
		Description: "Sluice change events of every CDC pipeline.",
		Subjects:    []string{protocol.SubjectCDCAll},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Duplicates:  DuplicateWindow,
		MaxAge:      cfg.MaxAge,
		MaxBytes:    cmp.Or(cfg.MaxBytes, protocol.CDCMaxBytes),
		Discard:     jetstream.DiscardNew,
		Replicas:    cfg.Replicas,
		// A Reader gathers its messages into atomic batches on a
		// replicated stream (see Reader.gather).
		AllowAtomicPublish: true,
	}
	if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
		return fmt.Errorf("ensure stream %s: %w", sc.Name, err)
	}
	return nil
}

// ErrNoReplicaIdentity is wrapped by the error that refuses a table
// without a primary key and without a replica identity: once such a table
// is in a publication, PostgreSQL fails the source application's UPDATE
// and DELETE on it.
var ErrNoReplicaIdentity = errors.New("no primary key and no replica identity")

// checkReplicaIdentity refuses, with a permanent error naming each of them
// and the fix, the tables that have neither a primary key nor a replica
// identity (REPLICA IDENTITY FULL, or USING INDEX of an index that
// exists): PostgreSQL refuses UPDATE and DELETE on a table of a
// publication that cannot identify its rows, so adding one would break
// the source's writes. A missing table is left to the caller.
func checkReplicaIdentity(ctx context.Context, conn *pgx.Conn, tables []string) error {
	var refused []string
	for _, t := range tables {
		var ident string
		var pk, replident bool
		err := conn.QueryRow(ctx, `SELECT c.relreplident::text,
			EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
			EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
			FROM pg_class c WHERE c.oid = to_regclass($1)`, quoteQualified(t)).Scan(&ident, &pk, &replident)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return fmt.Errorf("look up the replica identity of %s: %w", t, err)
		}
		if ident == "f" || ident == "d" && pk || ident == "i" && replident {
			continue
		}
		refused = append(refused, t)
	}
	if len(refused) == 0 {
		return nil
	}
	fixes := make([]string, len(refused))
	for i, t := range refused {
		fixes[i] = "ALTER TABLE " + quoteQualified(t) + " REPLICA IDENTITY FULL"
	}
	return connectors.Permanent(fmt.Errorf("table %s: %w, so it is not added to the publication (PostgreSQL would then refuse UPDATE and DELETE on it): add a primary key, or give it a replica identity (%s; or USING INDEX of a unique index on NOT NULL columns), or remove it from the pipeline's tables",
		strings.Join(refused, ", "), ErrNoReplicaIdentity, strings.Join(fixes, "; ")))
}

// ensurePublication creates the publication for cfg.Tables, or sets its
// table list when it exists, after checking that every table can be
// published (checkReplicaIdentity): nothing is changed when one cannot.
func ensurePublication(ctx context.Context, conn *pgx.Conn, cfg Config) error {
	if err := checkReplicaIdentity(ctx, conn, cfg.Tables); err != nil {
		return err
	}
	tables := make([]string, len(cfg.Tables))
	for i, t := range cfg.Tables {
		tables[i] = quoteQualified(t)
	}
	list := strings.Join(tables, ", ")
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", cfg.Publication).Scan(&exists); err != nil {
		return fmt.Errorf("look up publication %q: %w", cfg.Publication, err)
	}
	pub := pgx.Identifier{cfg.Publication}.Sanitize()
	if exists {
		if _, err := conn.Exec(ctx, "ALTER PUBLICATION "+pub+" SET TABLE "+list); err != nil {
			return fmt.Errorf("alter publication %q: %w", cfg.Publication, err)
		}
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE PUBLICATION "+pub+" FOR TABLE "+list); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42710" { // created concurrently
			return nil
		}
		return fmt.Errorf("create publication %q: %w", cfg.Publication, err)
	}
	return nil
}

// ensureSlot creates the logical slot (pgoutput) unless it exists, and
// returns its confirmed flush LSN. Creating a slot waits for the
// transactions running at that moment to finish.
func ensureSlot(ctx context.Context, conn *pgx.Conn, slot string) (pglogrepl.LSN, error) {
	lsn, found, err := slotLSN(ctx, conn, slot)
	if err != nil || found {
		return lsn, err
	}
	_, err = conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot)
	var pgErr *pgconn.PgError
	if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "42710") {
		return 0, fmt.Errorf("create slot %q: %w", slot, err)
	}
	lsn, found, err = slotLSN(ctx, conn, slot)
	if err == nil && !found {
		err = fmt.Errorf("slot %q vanished after creation", slot)
	}
	return lsn, err
}

func slotLSN(ctx context.Context, conn *pgx.Conn, slot string) (pglogrepl.LSN, bool, error) {
	var plugin, kind string
	var lsn *string
	err := conn.QueryRow(ctx, "SELECT plugin, slot_type, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&plugin, &kind, &lsn)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("look up slot %q: %w", slot, err)
	}
	if kind != "logical" || plugin != "pgoutput" {
		return 0, true, fmt.Errorf("slot %q is a %s slot with plugin %q, want logical pgoutput", slot, kind, plugin)
	}
	if lsn == nil {
		return 0, true, nil
	}
	l, err := pglogrepl.ParseLSN(*lsn)
	if err != nil {
		return 0, true, fmt.Errorf("slot %q: %w", slot, err)
	}
	return l, true, nil
}

// Lag is how far a slot's confirmed position is behind the server's WAL.
type Lag struct {
	Slot string
	// Active reports whether a walsender streams the slot now.
	Active bool
	// ConfirmedFlushLSN is the position up to which the consumer confirmed
	// it has everything; CurrentLSN the server's current WAL insert position.
	ConfirmedFlushLSN string
	CurrentLSN        string
	// Bytes is the WAL retained for the slot beyond its confirmed position.
	Bytes int64
}

// SlotLag reports a slot's lag in bytes. The lag in time is known to the
// Reader streaming the slot (Reader.Status), not to the server.
func SlotLag(ctx context.Context, dsn, slot string) (Lag, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return Lag{}, fmt.Errorf("slot lag %q: connect: %w", slot, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	lag := Lag{Slot: slot}
	var confirmed *string
	err = conn.QueryRow(ctx, `SELECT active, confirmed_flush_lsn::text, pg_current_wal_lsn()::text,
		COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&lag.Active, &confirmed, &lag.CurrentLSN, &lag.Bytes)
	if errors.Is(err, pgx.ErrNoRows) {
		return Lag{}, fmt.Errorf("slot lag: slot %q does not exist", slot)
	}
	if err != nil {
		return Lag{}, fmt.Errorf("slot lag %q: %w", slot, err)
	}
	if confirmed != nil {
		lag.ConfirmedFlushLSN = *confirmed
	}
	return lag, nil
}

// DropSlot drops a slot and a publication if they exist; for tests and for
// removing a pipeline. A slot still in use by a walsender is an error.
func DropSlot(ctx context.Context, dsn, slot, publication string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("drop slot %q: connect: %w", slot, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if slot != "" {
		if _, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", slot); err != nil {
			return fmt.Errorf("drop slot %q: %w", slot, err)
		}
	}
	if publication != "" {
		if _, err := conn.Exec(ctx, "DROP PUBLICATION IF EXISTS "+pgx.Identifier{publication}.Sanitize()); err != nil {
			return fmt.Errorf("drop publication %q: %w", publication, err)
		}
	}
	return nil
}

// quoteQualified quotes "schema.table" (or "table") as identifiers.
func quoteQualified(name string) string {
	if i := strings.IndexByte(name, '.'); i >= 0 {
		return pgx.Identifier{name[:i], name[i+1:]}.Sanitize()
	}
	return pgx.Identifier{name}.Sanitize()
}
