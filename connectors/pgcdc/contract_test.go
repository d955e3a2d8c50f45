package pgcdc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/contract"
	"github.com/sluicehq/sluice/protocol"
)

const testContractKey = "a test key of at least sixteen bytes"

// contractFor is a strict contract of table people of schema s, in its
// JSON form, with ssn classified by drop when withSSN.
func contractFor(t *testing.T, s string, withSSN bool) (json.RawMessage, *contract.Contract) {
	t.Helper()
	ssn := ""
	if withSSN {
		ssn = "      ssn: drop\n"
	}
	y := fmt.Sprintf(`strict: true
key: ${SLUICE_TEST_CONTRACT_KEY}
tables:
  %s.people:
    columns:
      id: keep
      email: {pii: email, action: hash}
      name: {pii: name, action: drop}
      phone: {pii: phone, action: mask}
      born: {pii: birth_date, action: truncate, to: month}
      country: keep
%s    filter:
      - {column: country, not_equals: US}
`, s, ssn)
	spec, problems := contract.Parse([]byte(y))
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	raw, err := spec.JSON()
	if err != nil {
		t.Fatal(err)
	}
	c, err := contract.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	return raw, c
}

// rawStream returns every message of SLUICE_CDC, data and headers, as
// text.
func rawStream(t *testing.T, js jetstream.JetStream) string {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, protocol.StreamCDC)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "%s %v\n%s\n", m.Subject, m.Header, m.Data)
	}
	return b.String()
}

// TestContractSnapshotThenStream: the rows of a snapshot and the changes
// streamed after it reach SLUICE_CDC transformed by a strict contract
// (hashed, masked, truncated, a column dropped, rows filtered out, an
// update leaving the filter turned into a delete), the table's relation
// says so, and no original value of a transformed column is in the
// stream. A column added mid-stream that the contract does not classify
// stops the Reader with an error naming it, before anything of it is
// published; with the column classified, the Reader goes on from there.
func TestContractSnapshotThenStream(t *testing.T) {
	t.Setenv("SLUICE_TEST_CONTRACT_KEY", testContractKey)
	e := setup(t, "people")
	s := e.schema
	ctx := context.Background()
	e.exec(t, fmt.Sprintf(`CREATE TABLE %[1]s.people (id int PRIMARY KEY, email text, name text, phone text, born date, country text);
		INSERT INTO %[1]s.people VALUES
			(1, 'alice.smith@example.com', 'Alice Smith', '+1 555 0100 1234', '1984-07-19', 'DE'),
			(2, 'bob.jones@example.com', 'Bob Jones', '+1 555 0100 5678', '1990-02-28', 'US'),
			(3, 'carol.white@example.com', 'Carol White', NULL, NULL, 'FR')`, s))
	raw, c := contractFor(t, s, false)

	// The snapshot: the sink applies the contract it is handed.
	reg := connectors.NewRegistry()
	pgcdc.Register(reg, e.js)
	if !reg.SinkAppliesContract(pgcdc.EventsKind) || !reg.CDCSourceAppliesContract("postgres") {
		t.Fatal("pgcdc does not register that it applies contracts")
	}
	srcConfig, _ := json.Marshal(pgcdc.SnapshotConfig{DSN: e.dsn, Tables: e.cfg.Tables, Slot: e.cfg.Slot, Publication: e.cfg.Publication})
	sinkConfig, _ := json.Marshal(pgcdc.EventsConfig{Pipeline: "p1", Slot: e.cfg.Slot})
	src, err := reg.OpenSource(ctx, pgcdc.SnapshotKind, srcConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	sink, err := reg.OpenSink(ctx, pgcdc.EventsKind, sinkConfig)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := src.Plan(ctx, connectors.PlanRequest{RunID: "snap1", Pipeline: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range plan.Partitions {
		tw, err := sink.OpenTask(ctx, connectors.TaskRef{RunID: "snap1", TaskID: p.Key, Pipeline: "p1", Attempt: 1, Contract: raw})
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Read(ctx, p, func(ctx context.Context, b connectors.Batch) error { return tw.Write(ctx, b) }); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.(connectors.RunHolder).ReleaseRun("snap1"); err != nil {
		t.Fatal(err)
	}

	// The stream.
	e.cfg.Contract = c
	_, stop, done := e.start(t)
	e.exec(t, fmt.Sprintf(`INSERT INTO %[1]s.people VALUES (4, 'dave.brown@example.com', 'Dave Brown', '0049 30 1234 5678', '1975-12-31', 'DE')`, s))
	e.exec(t, fmt.Sprintf(`UPDATE %[1]s.people SET country = 'US' WHERE id = 3`, s))
	e.exec(t, fmt.Sprintf(`INSERT INTO %[1]s.people VALUES (5, 'eve@example.com', 'Eve', NULL, NULL, 'US')`, s))
	e.exec(t, fmt.Sprintf(`DELETE FROM %[1]s.people WHERE id = 1`, s))
	// snapshot event, reads of 1 and 3, insert 4, delete 3 (left the
	// filter), delete 1; insert 5 is left out.
	evs := e.waitEvents(t, 6)
	h := func(v string) protocol.Value { return protocol.Text(contract.HashValue([]byte(testContractKey), v)) }
	T, N := protocol.Text, protocol.NullValue
	wants := []struct {
		op            protocol.Op
		before, after protocol.Row
	}{
		{protocol.OpSnapshot, nil, nil},
		{protocol.OpRead, nil, protocol.Row{"id": T("1"), "email": h("alice.smith@example.com"), "phone": T("+* *** **** 1234"), "born": T("1984-07-01"), "country": T("DE")}},
		{protocol.OpRead, nil, protocol.Row{"id": T("3"), "email": h("carol.white@example.com"), "phone": N, "born": N, "country": T("FR")}},
		{protocol.OpInsert, nil, protocol.Row{"id": T("4"), "email": h("dave.brown@example.com"), "phone": T("**** ** **** 5678"), "born": T("1975-12-01"), "country": T("DE")}},
		{protocol.OpDelete, protocol.Row{"id": T("3")}, nil},
		{protocol.OpDelete, protocol.Row{"id": T("1")}, nil},
	}
	for i, w := range wants {
		got := evs[i].ev
		if got.Op != w.op || !rowsEqual(got.Before, w.before) || !rowsEqual(got.After, w.after) {
			t.Errorf("event %d: %s %v %v, want %s %v %v", i, got.Op, short(got.Before), short(got.After), w.op, short(w.before), short(w.after))
		}
	}
	rel := evs[1].ev.Relation
	if rel == nil || len(rel.Columns) != 5 || rel.Columns[1].Name != "email" || rel.Columns[1].Type != protocol.TypeString {
		t.Fatalf("read event's relation %+v", rel)
	}
	if rel := evs[3].ev.Relation; rel == nil || len(rel.Columns) != 5 {
		t.Fatalf("stream event's relation %+v", rel)
	}
	pii := []string{"alice.smith@example.com", "Alice Smith", "+1 555 0100 1234", "1984-07-19", "carol.white@example.com", "Carol", "dave.brown", "Dave Brown",
		"0049 30 1234 5678", "1975-12-31", "eve@example.com", "Bob Jones", "bob.jones"}
	stream := rawStream(t, e.js)
	for _, v := range pii {
		if strings.Contains(stream, v) {
			t.Fatalf("SLUICE_CDC holds %q", v)
		}
	}

	// A column added mid-stream that the strict contract does not
	// classify stops the Reader, naming it; nothing of it is published.
	e.exec(t, fmt.Sprintf(`ALTER TABLE %[1]s.people ADD COLUMN ssn text;
		INSERT INTO %[1]s.people VALUES (6, 'frank@example.com', 'Frank', NULL, NULL, 'DE', '123-45-6789')`, s))
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the Reader did not stop on the unclassified column")
	}
	err = stop()
	if !contract.IsUnclassified(err) || !strings.Contains(err.Error(), `"ssn"`) || !strings.Contains(err.Error(), s+".people") {
		t.Fatalf("Run = %v, want the unclassified column ssn named", err)
	}
	if strings.Contains(err.Error(), "123-45-6789") || strings.Contains(err.Error(), "frank") {
		t.Fatalf("the error holds a value: %v", err)
	}
	if got := rawStream(t, e.js); strings.Contains(got, "123-45-6789") || strings.Contains(got, "frank") || strings.Contains(got, "ssn") {
		t.Fatal("SLUICE_CDC holds the row with the unclassified column")
	}

	// Classified (dropped) in a new version of the contract, the Reader
	// goes on from the change it stopped at.
	_, e.cfg.Contract = contractFor(t, s, true)
	_, stop, _ = e.start(t)
	evs = e.waitEvents(t, 7)
	if got := evs[6].ev; got.Op != protocol.OpInsert || got.After["id"].Text != "6" || len(got.After) != 5 {
		t.Fatalf("event after the new contract: %s %v", got.Op, short(got.After))
	}
	if strings.Contains(rawStream(t, e.js), "123-45-6789") {
		t.Fatal("SLUICE_CDC holds the dropped column's value")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
