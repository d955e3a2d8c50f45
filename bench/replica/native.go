package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// native is PostgreSQL's own logical replication: a publication of the
// source tables and a subscription of the target database on a slot made
// first (a subscription cannot create its slot in its own cluster).
type native struct {
	b   *bench
	sub string // the subscription, publication and slot
}

func (n *native) name() string { return "native" }

// prepare creates the publication, the slot and the subscription,
// disabled, without an initial copy (the tables are empty).
func (n *native) prepare(ctx context.Context, tables []string) error {
	b := n.b
	b.n++
	n.sub = fmt.Sprintf("%s_n%d", b.cfg.schema, b.n)
	if _, err := b.src.Exec(ctx, "CREATE PUBLICATION "+n.sub+" FOR TABLE "+strings.Join(tables, ", ")); err != nil {
		return fmt.Errorf("create publication: %w", err)
	}
	if _, err := b.src.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", n.sub); err != nil {
		return fmt.Errorf("create slot: %w", err)
	}
	conninfo := strings.ReplaceAll(b.cfg.dsn, "'", `\'`)
	sql := fmt.Sprintf(`CREATE SUBSCRIPTION %s CONNECTION '%s' PUBLICATION %s
		WITH (create_slot = false, slot_name = '%s', copy_data = false, enabled = false)`, n.sub, conninfo, n.sub, n.sub)
	if _, err := b.tgt.Exec(ctx, sql); err != nil {
		return fmt.Errorf("create subscription: %w", err)
	}
	return nil
}

// start enables the subscription and waits until its apply worker runs.
func (n *native) start(ctx context.Context) error {
	b := n.b
	if _, err := b.tgt.Exec(ctx, "ALTER SUBSCRIPTION "+n.sub+" ENABLE"); err != nil {
		return fmt.Errorf("enable subscription: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var running bool
		err := b.tgt.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_subscription s JOIN pg_subscription p ON p.oid = s.subid
			WHERE p.subname = $1 AND s.pid IS NOT NULL)`, n.sub).Scan(&running)
		if err != nil {
			return err
		}
		if running {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the subscription's apply worker did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stop drops the subscription, the slot and the publication.
func (n *native) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n.b.dropSubscription(ctx, n.sub)
	n.b.dropSlot(n.sub)
	n.b.src.Exec(ctx, "DROP PUBLICATION IF EXISTS "+pgx.Identifier{n.sub}.Sanitize())
}
