package connectors_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

type fakeStream struct{ config string }

func (fakeStream) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (fakeStream) Status(context.Context) protocol.StreamStatus {
	return protocol.StreamStatus{State: protocol.StreamStreaming}
}

type fakeApplier struct{ config string }

func (fakeApplier) Applied(context.Context) (uint64, error)         { return 0, nil }
func (fakeApplier) Apply(context.Context, []connectors.Event) error { return nil }
func (fakeApplier) Close() error                                    { return nil }
func needsDSN(config json.RawMessage) error {
	var c struct{ DSN string }
	if err := json.Unmarshal(config, &c); err != nil || c.DSN == "" {
		return &connectors.FieldError{Field: "dsn", Msg: "is required"}
	}
	return nil
}

// A kind registered in parts by two packages has every role of both; the
// registry opens each role's code, with ${ENV} expanded, and says which
// kinds have a role; a part registered twice panics.
func TestRegistryRolesAndParts(t *testing.T) {
	reg := connectors.NewRegistry()
	reg.Register(connectors.Connector{
		Kind:   "db",
		Source: func(context.Context, json.RawMessage) (connectors.Source, error) { return nil, nil },
		CDCTarget: &connectors.CDCTarget{Validate: needsDSN, Open: func(_ context.Context, req connectors.StreamRequest) (connectors.Applier, error) {
			return fakeApplier{string(req.Config)}, nil
		}},
	})
	// A second package adds the cdc source of the same kind.
	reg.Register(connectors.Connector{Kind: "db", CDCSource: &connectors.CDCSource{
		Validate: needsDSN,
		Open: func(_ context.Context, req connectors.StreamRequest) (connectors.Stream, error) {
			return fakeStream{string(req.Config)}, nil
		},
		Snapshot: func(req connectors.SnapshotRequest) (connectors.SnapshotEndpoints, error) {
			return connectors.SnapshotEndpoints{
				Source: protocol.Endpoint{Kind: "db_snapshot", Config: req.Config},
				Sink:   protocol.Endpoint{Kind: "events", Config: json.RawMessage(`{"slot":"` + req.Settings.Slot + `"}`)},
			}, nil
		},
	}})
	reg.Register(connectors.Connector{Kind: "dir", CDCTarget: &connectors.CDCTarget{Open: func(context.Context, connectors.StreamRequest) (connectors.Applier, error) {
		return fakeApplier{}, nil
	}}})

	for _, c := range []struct {
		kind string
		role connectors.Role
		want bool
	}{
		{"db", connectors.RoleSource, true}, {"db", connectors.RoleSink, false},
		{"db", connectors.RoleCDCSource, true}, {"db", connectors.RoleCDCTarget, true},
		{"dir", connectors.RoleCDCSource, false}, {"dir", connectors.RoleCDCTarget, true},
		{"nope", connectors.RoleSource, false},
	} {
		if got := reg.Has(c.kind, c.role); got != c.want {
			t.Errorf("Has(%s, %s) = %v, want %v", c.kind, c.role, got, c.want)
		}
	}
	if got := reg.KindsOf(connectors.RoleCDCTarget); !slices.Equal(got, []string{"db", "dir"}) {
		t.Errorf("KindsOf(cdc target) = %v", got)
	}
	if !reg.HasInitialSnapshot("db") || reg.HasInitialSnapshot("dir") {
		t.Error("HasInitialSnapshot: want db only")
	}

	// Validation by role, an unset ${ENV} not judged.
	var fe *connectors.FieldError
	if err := reg.Validate("db", connectors.RoleCDCSource, json.RawMessage(`{}`), nil); !errors.As(err, &fe) || fe.Field != "dsn" {
		t.Errorf("Validate cdc source without dsn = %v", err)
	}
	if err := reg.Validate("db", connectors.RoleCDCSource, json.RawMessage(`{"dsn":"${SLUICE_UNSET_DSN}"}`), nil); err != nil {
		t.Errorf("Validate with an unset variable = %v", err)
	}
	if err := reg.Validate("dir", connectors.RoleCDCSource, json.RawMessage(`{}`), nil); err == nil || !strings.Contains(err.Error(), `"dir" cannot be a cdc source (kinds: [db])`) {
		t.Errorf("Validate of a role the kind lacks = %v", err)
	}

	// Opening expands ${ENV} from the process environment.
	t.Setenv("SLUICE_TEST_REGISTRY_DSN", "postgres://h/db")
	s, err := reg.OpenCDCSource(context.Background(), "db", connectors.StreamRequest{Pipeline: "p", Config: json.RawMessage(`{"dsn":"${SLUICE_TEST_REGISTRY_DSN}"}`)})
	if err != nil || s.(fakeStream).config != `{"dsn":"postgres://h/db"}` {
		t.Errorf("OpenCDCSource = %+v, %v", s, err)
	}
	a, err := reg.OpenApplier(context.Background(), "db", connectors.StreamRequest{Pipeline: "p", Config: json.RawMessage(`{"dsn":"${SLUICE_TEST_REGISTRY_DSN}"}`)})
	if err != nil || a.(fakeApplier).config != `{"dsn":"postgres://h/db"}` {
		t.Errorf("OpenApplier = %+v, %v", a, err)
	}
	if _, err := reg.OpenCDCSource(context.Background(), "dir", connectors.StreamRequest{}); err == nil || !connectors.IsPermanent(err) {
		t.Errorf("OpenCDCSource of a kind without the role = %v, want a permanent error", err)
	}
	if _, err := reg.OpenApplier(context.Background(), "db", connectors.StreamRequest{Config: json.RawMessage(`{"dsn":"${SLUICE_TEST_REGISTRY_UNSET}"}`)}); err == nil || !strings.Contains(err.Error(), "SLUICE_TEST_REGISTRY_UNSET") {
		t.Errorf("OpenApplier with an unset variable = %v", err)
	}

	// The initial snapshot's endpoints, references kept.
	ep, err := reg.InitialSnapshot("db", connectors.SnapshotRequest{Pipeline: "p", Config: json.RawMessage(`{"dsn":"${DSN}"}`), Settings: connectors.StreamSettings{Slot: "sluice_p"}})
	if err != nil || ep.Source.Kind != "db_snapshot" || string(ep.Source.Config) != `{"dsn":"${DSN}"}` || string(ep.Sink.Config) != `{"slot":"sluice_p"}` {
		t.Errorf("InitialSnapshot = %+v, %v", ep, err)
	}
	if _, err := reg.InitialSnapshot("dir", connectors.SnapshotRequest{}); err == nil {
		t.Error("InitialSnapshot of a kind without one succeeded")
	}

	for name, c := range map[string]connectors.Connector{
		"cdc source twice": {Kind: "db", CDCSource: &connectors.CDCSource{}},
		"source twice":     {Kind: "db", Source: func(context.Context, json.RawMessage) (connectors.Source, error) { return nil, nil }},
		"nothing":          {Kind: "empty"},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: Register did not panic", name)
				}
			}()
			reg.Register(c)
		}()
	}
}

// checkedSource is a source that checks its configuration.
type checkedSource struct {
	connectors.Source
	table  string
	closed *bool
}

func (s checkedSource) Check(_ context.Context, req connectors.CheckRequest) (string, error) {
	if s.table == "missing" {
		return "", &connectors.FieldError{Field: "table", Msg: "does not exist"}
	}
	return "table " + s.table + " for " + req.Pipeline + " as a " + string(req.Role), nil
}

func (s checkedSource) Close() error { *s.closed = true; return nil }

// Check opens the connector in its role with ${ENV} expanded, asks it,
// closes it; a kind without a check says so; an unset variable names the
// process whose environment lacks it; internal kinds are offered nowhere.
func TestRegistryCheck(t *testing.T) {
	closed := false
	reg := connectors.NewRegistry()
	reg.SetProcess("the coordinator a")
	reg.Register(connectors.Connector{
		Kind: "db",
		Source: func(_ context.Context, config json.RawMessage) (connectors.Source, error) {
			var c struct{ Table string }
			json.Unmarshal(config, &c)
			return checkedSource{table: c.Table, closed: &closed}, nil
		},
		Sink: func(context.Context, json.RawMessage) (connectors.Sink, error) {
			return nil, errors.New("no sink here")
		},
	})
	reg.Register(connectors.Connector{Kind: "own", Source: func(context.Context, json.RawMessage) (connectors.Source, error) { return nil, nil }, Internal: true})
	t.Setenv("SLUICE_REGISTRY_TEST_TABLE", "orders")
	req := connectors.CheckRequest{Pipeline: "p"}
	found, checked, err := reg.Check(context.Background(), "db", connectors.RoleSource, json.RawMessage(`{"table":"${SLUICE_REGISTRY_TEST_TABLE}"}`), req)
	if err != nil || !checked || found != "table orders for p as a source" || !closed {
		t.Errorf("Check = %q, %v, %v (closed %v)", found, checked, err, closed)
	}
	_, _, err = reg.Check(context.Background(), "db", connectors.RoleSource, json.RawMessage(`{"table":"missing"}`), req)
	var fe *connectors.FieldError
	if !errors.As(err, &fe) || fe.Field != "table" {
		t.Errorf("Check of a missing table: %v", err)
	}
	_, _, err = reg.Check(context.Background(), "db", connectors.RoleSource, json.RawMessage(`{"table":"${SLUICE_REGISTRY_TEST_UNSET}"}`), req)
	if err == nil || !strings.Contains(err.Error(), "SLUICE_REGISTRY_TEST_UNSET is not set in the environment of the coordinator a") {
		t.Errorf("Check with an unset variable: %v", err)
	}
	if _, checked, err := reg.Check(context.Background(), "db", connectors.RoleCDCSource, nil, req); checked || err == nil {
		t.Errorf("Check of a role the kind lacks: %v %v", checked, err)
	}
	if _, err := reg.OpenSource(context.Background(), "db", json.RawMessage(`{"table":"${SLUICE_REGISTRY_TEST_UNSET}"}`)); err == nil || !strings.Contains(err.Error(), "not set in the environment of the coordinator a") {
		t.Errorf("OpenSource with an unset variable: %v", err)
	}
	if got := reg.Kinds(); !slices.Equal(got, []string{"db"}) || !reg.Internal("own") || !reg.HasSource("own") {
		t.Errorf("Kinds = %v; the internal kind is left out but registered", got)
	}
}
