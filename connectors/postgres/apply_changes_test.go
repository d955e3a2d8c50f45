package postgres_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors/cdcapply/cdctest"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/protocol"
)

// describe renders collect's result: per table, truncate first, then each
// key's final state in order of first touch.
func describe(ts []*postgres.TableChanges) []string {
	var out []string
	for _, t := range ts {
		if t.Truncated() {
			out = append(out, t.Name()+" truncate")
		}
		for _, r := range t.Rows() {
			key := strings.Join(r.Key(), ",")
			if r.Deleted() {
				out = append(out, fmt.Sprintf("%s %s deleted", t.Name(), key))
				continue
			}
			img := r.Image()
			var parts []string
			for _, c := range t.Cols() {
				if v, ok := img[c]; ok {
					parts = append(parts, c+"="+v)
				}
			}
			s := fmt.Sprintf("%s %s {%s}", t.Name(), key, strings.Join(parts, " "))
			if o := strings.Join(r.Origin(), ","); o != key {
				s += " from " + o
			}
			out = append(out, s)
		}
	}
	return out
}

func TestCollapse(t *testing.T) {
	I, Up, D, Tr := protocol.OpInsert, protocol.OpUpdate, protocol.OpDelete, protocol.OpTruncate
	tests := []struct {
		name string
		evs  []protocol.ChangeEvent
		want []string
	}{
		{
			name: "last image wins, delete wins over earlier images",
			evs: []protocol.ChangeEvent{
				cdctest.Change(I, "s", "a", nil, protocol.Row{"id": T("1"), "v": T("x")}),
				cdctest.Change(I, "s", "a", nil, protocol.Row{"id": T("2"), "v": T("y")}),
				cdctest.Change(Up, "s", "a", nil, protocol.Row{"id": T("1"), "v": T("x2")}),
				cdctest.Change(D, "s", "a", protocol.Row{"id": T("2")}, nil),
				cdctest.Change(D, "s", "a", protocol.Row{"id": T("3")}, nil),
			},
			want: []string{"s.a 1 {id=1 v=x2}", "s.a 2 deleted", "s.a 3 deleted"},
		},
		{
			name: "unchanged values resolved from an earlier image or the FULL old row, else kept with their origin",
			evs: []protocol.ChangeEvent{
				cdctest.Change(I, "s", "a", nil, protocol.Row{"id": T("1"), "v": T("x"), "big": T("B1")}),
				cdctest.Change(Up, "s", "a", nil, protocol.Row{"id": T("1"), "v": T("x2"), "big": U}),
				cdctest.Change(Up, "s", "a", protocol.Row{"id": T("2"), "v": T("y"), "big": T("B2")}, protocol.Row{"id": T("2"), "v": T("y2"), "big": U}),
				cdctest.Change(Up, "s", "a", nil, protocol.Row{"id": T("3"), "v": T("z"), "big": U}),
			},
			want: []string{"s.a 1 {id=1 big=B1 v=x2}", "s.a 2 {id=2 big=B2 v=y2}", "s.a 3 {id=3 big=<unchanged> v=z}"},
		},
		{
			name: "key change deletes the old key; an unchanged value then comes from the old key's row",
			evs: []protocol.ChangeEvent{
				cdctest.Change(Up, "s", "a", protocol.Row{"id": T("1")}, protocol.Row{"id": T("10"), "big": U}),
				cdctest.Change(Up, "s", "a", protocol.Row{"id": T("10")}, protocol.Row{"id": T("11"), "big": U}),
				cdctest.Change(I, "s", "a", nil, protocol.Row{"id": T("1"), "big": T("new")}),
			},
			want: []string{"s.a 1 {id=1 big=new}", "s.a 10 deleted", "s.a 11 {id=11 big=<unchanged>} from 1"},
		},
		{
			name: "truncate discards what came before it, per table",
			evs: []protocol.ChangeEvent{
				cdctest.Change(I, "s", "a", nil, protocol.Row{"id": T("1")}),
				cdctest.Change(I, "s", "b", nil, protocol.Row{"id": T("1")}),
				cdctest.Change(Tr, "s", "a", nil, nil),
				cdctest.Change(I, "s", "a", nil, protocol.Row{"id": T("2")}),
			},
			want: []string{"s.a truncate", "s.a 2 {id=2}", "s.b 1 {id=1}"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts, err := postgres.Collapse(cdctest.Numbered(1, tc.evs...))
			if err != nil {
				t.Fatal(err)
			}
			if got := describe(ts); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}

	noKey := cdctest.Change(I, "s", "nokey", nil, protocol.Row{"v": T("1")})
	noKey.Key = nil
	if _, err := postgres.Collapse(cdctest.Numbered(7, noKey)); err == nil || !strings.Contains(err.Error(), "s.nokey") || !strings.Contains(err.Error(), "key") {
		t.Errorf("event without key columns: %v, want an error naming s.nokey", err)
	}
}

// BenchmarkCollapse collapses a batch of 5,000 events as the replica
// benchmark's workload makes them: inserts, then updates, then deletes of
// six-column rows in transactions of 100 rows.
func BenchmarkCollapse(b *testing.B) {
	I, Up, D := protocol.OpInsert, protocol.OpUpdate, protocol.OpDelete
	var evs []protocol.ChangeEvent
	row := func(i int, v string) protocol.Row {
		return protocol.Row{"id": T(fmt.Sprint(i)), "customer": T("customer 4ab9f2c81d07"), "amount": T("69221.77"),
			"created_at": T("2024-01-22 12:22:31.457252+00"), "attrs": T(`{"ref": "e10adc3949ba59abbe56e057f20f883e", "tier": 1}`), "quantity": T(v)}
	}
	for i := range 3000 {
		evs = append(evs, cdctest.Change(I, "s", "a", nil, row(i, "1")))
	}
	for i := range 1250 {
		evs = append(evs, cdctest.Change(Up, "s", "a", nil, row(i, "2")))
	}
	for i := range 750 {
		evs = append(evs, cdctest.Change(D, "s", "a", protocol.Row{"id": T(fmt.Sprint(3000 + i))}, nil))
	}
	batch := cdctest.Numbered(1, evs...)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := postgres.Collapse(batch); err != nil {
			b.Fatal(err)
		}
	}
}
