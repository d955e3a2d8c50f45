package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/builtin"
	"github.com/sluicehq/sluice/connectors/latest"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// A latest-state stream through the cluster: a cdc pipeline's snapshot and
// then inserts, updates (one changing the key), deletes and a truncate,
// kept by a cdc_apply pipeline of kind latest; a consumer reading one
// message per subject rebuilds exactly the table's current rows.
func TestCDCLatestState(t *testing.T) {
	t.Parallel()
	holdSlot(t)
	c := newCluster(t, clusterConfig{workers: 2})
	testLatestState(t, c.reg, c.js, func(s pipeline.Spec) error {
		_, err := c.client.Apply(c.ctx(), s)
		return err
	})
}

// The same on a cluster whose NATS users have Sluice's roles and whose
// leader signs what it issues: the workers, which may neither create nor
// purge a stream, keep the latest state in the stream the leader created,
// the snapshot's and the truncate's purges made by the leader.
func TestCDCLatestStateSecured(t *testing.T) {
	t.Parallel()
	holdSlot(t)
	reg := builtin.Registry()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := devcluster.Config{DataDir: filepath.Join(t.TempDir(), "dev"), Workers: 2, Slots: 2,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Tracer: noop.NewTracerProvider(), Registry: reg, Roles: true, Sign: true}
	err := devcluster.Run(ctx, cfg, func(ctx context.Context, l *devcluster.Cluster) error {
		js, err := jetstream.New(l.NC) // the admin's
		if err != nil {
			return err
		}
		testLatestState(t, reg, js, func(s pipeline.Spec) error {
			_, err := l.Client.Apply(ctx, s)
			return err
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testLatestState(t *testing.T, reg *connectors.Registry, js jetstream.JetStream, apply func(pipeline.Spec) error) {
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
	for _, y := range []string{
		fmt.Sprintf("name: items\npattern: cdc\nsource:\n  kind: postgres\n  dsn: %s\n  tables: [%s.items]\ncdc:\n  slot: %s\n  publication: %s\n  lease: 2s\n", dsn, schema, slot, slot),
		"name: items-latest\npattern: cdc_apply\nsource: {kind: cdc, pipeline: items}\nsink: {kind: latest}\ncdc: {lease: 2s}\n",
	} {
		s, err := pipeline.Load([]byte(y), "spec.yaml", reg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := apply(s); err != nil {
			t.Fatal(err)
		}
	}
	// state rebuilds the rows from the stream: id -> v.
	state := func() (map[string]string, error) {
		s, err := js.Stream(ctx, latest.StreamName("items"))
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
	// A truncate purges the table's subjects; the rows inserted after it
	// are the whole state.
	for _, q := range []string{`TRUNCATE %s.items`, `INSERT INTO %s.items SELECT g, 'after ' || g FROM generate_series(1, 20) g`} {
		if _, err := conn.Exec(ctx, fmt.Sprintf(q, schema)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 60*time.Second, "the truncate in the latest-state stream", same)
	s, err := js.Stream(ctx, latest.StreamName("items"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(latest.TableSubject("items", schema, "items")+".>"))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.State.Subjects) != 20 {
		t.Errorf("after the truncate the table has %d subjects, want the 20 rows inserted after it", len(info.State.Subjects))
	}
}
