package postgres

import "github.com/sluicehq/sluice/connectors"

// Collapse exposes collect for tests: per table "schema.table", whether it
// was truncated and the final state of each key ("key -> deleted" or
// "key -> image, origin").
// MatchColumns exposes matchColumns for tests.
var MatchColumns = matchColumns

func Collapse(events []connectors.Event) ([]*TableChanges, error) { return collect(events, nil) }

// TableChanges and RowChange expose the result of collect.
type (
	TableChanges = tableChanges
	RowChange    = rowChange
)

func (t *tableChanges) Truncated() bool       { return t.truncate }
func (t *tableChanges) Name() string          { return t.name() }
func (t *tableChanges) Rows() []*rowChange    { return t.order }
func (t *tableChanges) Cols() []string        { return t.cols }
func (r *rowChange) Key() []string            { return r.keyVals }
func (r *rowChange) Deleted() bool            { return r.deleted }
func (r *rowChange) Image() map[string]string { return image(r) }
func (r *rowChange) Origin() []string         { return r.origin }

func image(r *rowChange) map[string]string {
	if r.row == nil {
		return nil
	}
	out := map[string]string{}
	for c, v := range r.row {
		switch {
		case v.Unchanged:
			out[c] = "<unchanged>"
		case v.Null:
			out[c] = "<null>"
		default:
			out[c] = v.Text
		}
	}
	return out
}
