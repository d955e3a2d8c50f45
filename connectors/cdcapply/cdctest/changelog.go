package cdctest

import (
	"bufio"
	"encoding/json"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/protocol"
)

// HourDir is the directory of a table's hour, relative to the root.
func HourDir(schema, table string, at time.Time) string {
	at = at.UTC()
	return filepath.Join(schema+"."+table, "date="+at.Format("2006-01-02"), "hour="+at.Format("15"))
}

// ReadChangeLog reads a files change log under root: every part file's
// lines by hour directory (parts in name order), the hour directories
// holding _SUCCESS, and every file's contents by path relative to root. A
// part file named after a later sequence than a line it holds, or a
// temporary file left behind, fails the test.
func ReadChangeLog(t testing.TB, root string) (lines map[string][]connectors.Event, closed map[string]bool, contents map[string]string) {
	t.Helper()
	lines, closed, contents = map[string][]connectors.Event{}, map[string]bool{}, map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		contents[rel] = string(b)
		dir, name := filepath.Split(rel)
		dir = filepath.Clean(dir)
		switch {
		case name == files.SuccessFile:
			if len(b) != 0 {
				t.Errorf("%s is not empty", rel)
			}
			closed[dir] = true
		case strings.HasPrefix(name, "part-"):
			var first uint64
			if len(name) == len("part-.jsonl")+20 && strings.HasSuffix(name, ".jsonl") {
				first, err = strconv.ParseUint(name[len("part-"):len("part-")+20], 10, 64)
			}
			if err != nil || first == 0 {
				t.Errorf("part file name %s", rel)
			}
			sc := bufio.NewScanner(strings.NewReader(string(b)))
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var e connectors.Event
				if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
					t.Fatalf("%s: %v", rel, err)
				}
				if e.Seq < first {
					t.Errorf("%s holds sequence %d, before its name", rel, e.Seq)
				}
				lines[dir] = append(lines[dir], e)
			}
		case strings.HasPrefix(name, "."):
			t.Errorf("temporary file left: %s", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return lines, closed, contents
}

// ByHour groups events by table and hour, as the change log lays them
// out.
func ByHour(evs []connectors.Event) map[string][]connectors.Event {
	out := map[string][]connectors.Event{}
	for _, e := range evs {
		d := HourDir(e.Schema, e.Table, e.CommitTime)
		out[d] = append(out[d], e)
	}
	return out
}

// SameEvents fails the test unless got and want hold the same events by
// hour directory, in the same order.
func SameEvents(t testing.TB, got, want map[string][]connectors.Event) {
	t.Helper()
	for _, d := range slices.Sorted(func(yield func(string) bool) {
		for d := range want {
			if !yield(d) {
				return
			}
		}
		for d := range got {
			if _, ok := want[d]; !ok && !yield(d) {
				return
			}
		}
	}) {
		g, w := got[d], want[d]
		var gs, ws []uint64
		for _, e := range g {
			gs = append(gs, e.Seq)
		}
		for _, e := range w {
			ws = append(ws, e.Seq)
		}
		if !slices.Equal(gs, ws) {
			t.Errorf("%s: sequences %v, want %v", d, gs, ws)
			continue
		}
		for i := range g {
			if g[i].Op != w[i].Op || !reflect.DeepEqual(g[i].After, w[i].After) || !reflect.DeepEqual(g[i].Before, w[i].Before) ||
				!g[i].CommitTime.Equal(w[i].CommitTime) || !slices.Equal(g[i].Key, w[i].Key) {
				t.Errorf("%s: line %d is %+v, want %+v", d, i, g[i], w[i])
			}
		}
	}
}

// KeyOrder fails the test unless each key's events in a change log read
// as a reader meets them (lines, from ReadChangeLog: a table's hours in
// time order, parts in name order, lines in file order) follow the
// source's commit order: the events' commit LSN, then their index in the
// transaction, each later than the key's event before. A key's events are
// those whose old or new row holds it. It returns the number of events
// that followed an earlier event of their key (the pairs checked) and how
// many of those followed one in an earlier hour, which a caller asserts
// are not zero.
func KeyOrder(t testing.TB, lines map[string][]connectors.Event) (pairs, acrossHours int) {
	t.Helper()
	type pos struct {
		lsn   uint64
		text  string
		index int
		seq   uint64
		dir   string
	}
	last := map[string]pos{}
	bad := 0
	for _, d := range slices.Sorted(maps.Keys(lines)) {
		for _, e := range lines[d] {
			if len(e.Key) == 0 {
				continue // a truncate, a snapshot marker: no key
			}
			lsn, err := protocol.ParseLSN(e.CommitLSN)
			if err != nil {
				t.Fatalf("%s: event %d has no commit position to order by: %v", d, e.Seq, err)
			}
			p := pos{lsn, e.CommitLSN, e.Index, e.Seq, d}
			for _, r := range []protocol.Row{e.Before, e.After} {
				vals, ok := keyOf(r, e.Key)
				if !ok {
					continue
				}
				k := e.Schema + "." + e.Table + "\x00" + vals
				if prev, ok := last[k]; ok {
					pairs++
					if prev.dir != d {
						acrossHours++
					}
					if p.lsn < prev.lsn || p.lsn == prev.lsn && p.index <= prev.index {
						if bad++; bad <= 5 {
							t.Errorf("%s: key %s.%s %q: event at %s/%d (seq %d) after the key's event at %s/%d (seq %d)",
								d, e.Schema, e.Table, vals, e.CommitLSN, e.Index, e.Seq, prev.text, prev.index, prev.seq)
						}
					}
				}
				last[k] = p
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d events out of their key's commit order (of %d checked)", bad, pairs)
	}
	return pairs, acrossHours
}

// keyOf returns the key values of r joined, false when r lacks one.
func keyOf(r protocol.Row, key []string) (string, bool) {
	if r == nil {
		return "", false
	}
	vals := make([]string, len(key))
	for i, k := range key {
		v, ok := r[k]
		if !ok || v.Null || v.Unchanged {
			return "", false
		}
		vals[i] = v.Text
	}
	return strings.Join(vals, "\x00"), true
}
