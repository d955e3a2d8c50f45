package pgtest

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// A schema and a replication slot left by a test killed long ago are
// dropped by the next test's DB; those of a test still running are not.
func TestDBDropsStaleSchemasAndSlots(t *testing.T) {
	_, _, conn := DB(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	old := fmt.Sprintf("sluice_t_%d_1", time.Now().Add(-3*staleAfter).Unix())
	recent := fmt.Sprintf("sluice_t_%d_2", time.Now().Add(-time.Minute).Unix())
	for _, s := range []string{old, recent} {
		if _, err := conn.Exec(ctx, "CREATE SCHEMA "+s+"; CREATE TABLE "+s+".t (id int)"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", s+"_slot"); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, s := range []string{old, recent} {
			conn.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", s+"_slot")
			conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+s+" CASCADE")
		}
	})
	DB(t)
	for _, c := range []struct {
		name string
		want bool
	}{{old, false}, {recent, true}} {
		var schemas, slots int
		if err := conn.QueryRow(ctx, "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = $1), (SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 || '_slot')", c.name).Scan(&schemas, &slots); err != nil {
			t.Fatal(err)
		}
		if (schemas == 1) != c.want || (slots == 1) != c.want {
			t.Errorf("schema %s: %d schemas, %d slots after DB; want kept %v", c.name, schemas, slots, c.want)
		}
	}
}
