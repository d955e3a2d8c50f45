package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors/latest"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// A latest-state stream through the cluster: a cdc pipeline's snapshot and
// then inserts, updates (one changing the key) and deletes, kept by a
// cdc_apply pipeline of kind latest; a consumer reading one message per
// subject rebuilds exactly the table's current rows.
func TestCDCLatestState(t *testing.T) {
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	slot := strings.ToLower(schema)
	if len(slot) > 50 {
		slot = slot[:50]
	}
	slot += "_lst"
	for _, q := range []string{
		fmt.Sprintf(`CREATE TABLE %s.items (id bigint PRIMARY KEY, v text)`, schema),
		fmt.Sprintf(`INSERT INTO %s.items SELECT g, 'v' || g FROM generate_series(1, 300) g`, schema),
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for range 50 {
			if pgcdc.DropSlot(ctx, dsn, slot, slot) == nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	c := newCluster(t, clusterConfig{workers: 2})
	for _, y := range []string{
		fmt.Sprintf("name: items\npattern: cdc\nsource:\n  kind: postgres\n  dsn: %s\n  tables: [%s.items]\ncdc:\n  slot: %s\n  publication: %s\n  lease: 2s\n", dsn, schema, slot, slot),
		"name: items-latest\npattern: cdc_apply\nsource: {kind: cdc, pipeline: items}\nsink: {kind: latest}\ncdc: {lease: 2s}\n",
	} {
		s, err := pipeline.Load([]byte(y), "spec.yaml", c.reg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.client.Apply(c.ctx(), s); err != nil {
			t.Fatal(err)
		}
	}
	// state rebuilds the rows from the stream: id -> v.
	state := func() (map[string]string, error) {
		s, err := c.js.Stream(ctx, latest.StreamName("items"))
		if err != nil {
			return nil, err
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(latest.TableSubject("items", schema, "items")+".>"))
		if err != nil {
			return nil, err
		}
		out := map[string]string{}
		for subj := range info.State.Subjects {
			m, err := s.GetLastMsgForSubject(ctx, subj)
			if err != nil {
				return nil, err
			}
			var ev protocol.ChangeEvent
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				return nil, err
			}
			if ev.Op != protocol.OpDelete {
				out[ev.After["id"].Text] = ev.After["v"].Text
			}
		}
		return out, nil
	}
	table := func() map[string]string {
		rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT id::text, v FROM %s.items`, schema))
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]string{}
		for rows.Next() {
			var id, v string
			if err := rows.Scan(&id, &v); err != nil {
				t.Fatal(err)
			}
			out[id] = v
		}
		return out
	}
	same := func() bool {
		got, err := state()
		return err == nil && maps.Equal(got, table())
	}
	waitFor(t, 60*time.Second, "the snapshot in the latest-state stream", same)
	for _, q := range []string{
		`UPDATE %s.items SET v = 'updated ' || id WHERE id %% 3 = 0`,
		`DELETE FROM %s.items WHERE id %% 7 = 0`,
		`UPDATE %s.items SET id = 1000 + id WHERE id = 1`,
		`INSERT INTO %s.items SELECT g, 'new ' || g FROM generate_series(301, 350) g`,
	} {
		if _, err := conn.Exec(ctx, fmt.Sprintf(q, schema)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 60*time.Second, "the changes in the latest-state stream", same)
	got, _ := state()
	if len(got) != len(table()) || got["1001"] != "v1" || got["1"] != "" {
		t.Errorf("rebuilt %d rows; row 1001 %q, row 1 %q", len(got), got["1001"], got["1"])
	}
}
