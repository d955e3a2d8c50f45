package pgcdc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/protocol"
)

// The source of a cdc pipeline is {dsn, tables}: both required, tables as
// schema.table, once each; anything else is refused naming the field.
func TestSourceConfigValidate(t *testing.T) {
	if err := pgcdc.ValidateSource(json.RawMessage(`{"dsn":"postgres://u@h/db","tables":["public.a","s.b"]}`)); err != nil {
		t.Fatal(err)
	}
	for raw, field := range map[string]string{
		`{"tables":["public.a"]}`:                                      "dsn",
		`{"dsn":"postgres://u@h/db"}`:                                  "tables",
		`{"dsn":"postgres://u@h/db","tables":["a"]}`:                   "tables[0]",
		`{"dsn":"postgres://u@h/db","tables":["s.a","s.a"]}`:           "tables[1]",
		`{"dsn":"postgres://u@h/db","tables":["s.a"],"slot":"x"}`:      "slot",
		`{"dsn":"postgres://u@h/db","tables":"s.a"}`:                   "tables",
		`{"dsn":"postgres://u@h/db","tables":["s.a"],"publication":1}`: "publication",
	} {
		checkField(t, pgcdc.ValidateSource(json.RawMessage(raw)), field)
	}
}

// pgcdc adds the source of cdc pipelines to the postgres kind, beside what
// connectors/postgres registers, and says how the initial snapshot run is
// made: its own two connectors, with the spec's configuration (${ENV}
// references kept) and the pipeline's stream settings.
func TestCDCSourceRegistered(t *testing.T) {
	reg := connectors.NewRegistry()
	postgres.Register(reg)
	pgcdc.Register(reg, nil)
	for _, role := range []connectors.Role{connectors.RoleSource, connectors.RoleSink, connectors.RoleCDCSource, connectors.RoleCDCTarget} {
		if !reg.Has(postgres.Kind, role) {
			t.Errorf("the postgres kind is no %s", role)
		}
	}
	ep, err := reg.InitialSnapshot(postgres.Kind, connectors.SnapshotRequest{
		Pipeline: "shop-cdc",
		Config:   json.RawMessage(`{"dsn":"${SLUICE_SHOP_DSN}","tables":["public.orders"]}`),
		Settings: connectors.StreamSettings{Slot: "sluice_shop", Publication: "sluice_pub", TargetRows: 500, MessageEvents: 20, Heartbeat: time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	if ep.Source.Kind != pgcdc.SnapshotKind || ep.Sink.Kind != pgcdc.EventsKind {
		t.Fatalf("endpoints %+v", ep)
	}
	lookup := func(name string) (string, bool) { return "postgres://u@h/db", name == "SLUICE_SHOP_DSN" }
	if err := reg.Validate(ep.Source.Kind, connectors.RoleSource, ep.Source.Config, lookup); err != nil {
		t.Errorf("snapshot source %s: %v", ep.Source.Config, err)
	}
	if err := reg.Validate(ep.Sink.Kind, connectors.RoleSink, ep.Sink.Config, nil); err != nil {
		t.Errorf("events sink %s: %v", ep.Sink.Config, err)
	}
	var src pgcdc.SnapshotConfig
	var sink pgcdc.EventsConfig
	if err := json.Unmarshal(ep.Source.Config, &src); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(ep.Sink.Config, &sink); err != nil {
		t.Fatal(err)
	}
	wantSrc := pgcdc.SnapshotConfig{DSN: "${SLUICE_SHOP_DSN}", Tables: []string{"public.orders"}, Slot: "sluice_shop", Publication: "sluice_pub", TargetRows: 500, ReplaceSlot: true}
	if fmt.Sprint(src) != fmt.Sprint(wantSrc) {
		t.Errorf("snapshot source %+v, want %+v", src, wantSrc)
	}
	if sink != (pgcdc.EventsConfig{Pipeline: "shop-cdc", Slot: "sluice_shop", MessageEvents: 20}) {
		t.Errorf("events sink %+v", sink)
	}
}

// The change reader opened through the registry streams the pipeline's
// slot into SLUICE_CDC with the stream settings, and reports its position,
// events and lag.
func TestReaderStream(t *testing.T) {
	e := setup(t, "a")
	e.exec(t, fmt.Sprintf(`CREATE TABLE %s.a (id int PRIMARY KEY, v text)`, e.schema))
	reg := connectors.NewRegistry()
	pgcdc.Register(reg, nil)
	t.Setenv("SLUICE_TEST_PGCDC_DSN", e.dsn)
	s, err := reg.OpenCDCSource(context.Background(), postgres.Kind, connectors.StreamRequest{
		Pipeline: "p1",
		Config:   json.RawMessage(fmt.Sprintf(`{"dsn":"${SLUICE_TEST_PGCDC_DSN}","tables":["%s.a"]}`, e.schema)),
		Settings: connectors.StreamSettings{Slot: e.cfg.Slot, Publication: e.cfg.Publication, Heartbeat: time.Second, MessageEvents: 2},
		JS:       e.js,
		Log:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for s.Status(ctx).ConfirmedLSN == "" {
		if time.Now().After(deadline) {
			t.Fatal("the stream did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.exec(t, fmt.Sprintf(`INSERT INTO %s.a SELECT g, 'v' FROM generate_series(1, 5) g`, e.schema))
	evs := e.waitEvents(t, 5)
	msgs := map[uint64]int{}
	for _, ev := range evs {
		msgs[ev.seq]++
		if ev.ev.Pipeline != "p1" || ev.ev.Op != protocol.OpInsert {
			t.Errorf("event %+v", ev.ev)
		}
	}
	if len(msgs) != 3 { // 2 + 2 + 1: message_events from the settings
		t.Errorf("5 events in %d messages, want 3 of at most 2 events", len(msgs))
	}
	var st protocol.StreamStatus
	for st = s.Status(ctx); st.Events < 5; st = s.Status(ctx) {
		if time.Now().After(deadline) {
			t.Fatalf("status %+v: want 5 events", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.State != protocol.StreamStreaming || st.ConfirmedLSN == "" || st.LastCommit.IsZero() || st.Time.IsZero() {
		t.Errorf("status %+v", st)
	}
}
