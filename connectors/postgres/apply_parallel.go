package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/connectors"
)

// Parallel apply (ApplierConfig.Parallel "tables"): each source table
// belongs to a lane for good (the lane with the fewest tables when it
// first comes), and a lane is a connection. A batch is split by lane,
// each part keeping stream order, and the lanes apply their parts at
// once, each in one transaction that locks the state rows of its tables
// (TablesTable), applies each table's events after the table's own
// applied sequence (or the pipeline's offset, when further), and stores
// the batch's last sequence as the applied sequence of each of its tables.
// Once every lane committed, the pipeline's offset (OffsetsTable) moves to
// the batch's last sequence, outside any transaction of rows: it only
// says where the runner resumes (a batch of one lane moves it in that
// lane's transaction). A crash between the lanes' commits, or
// before the offset moved, leaves some tables ahead of the offset; the
// batch is delivered again, and each table skips what it applied. So each
// event is applied exactly once and each table's events in stream order,
// while a reader of the target may see one table ahead of another.

// laneBatch is the part of a batch a lane applies.
type laneBatch struct {
	// ids are the lane's source tables of the batch (schema NUL table),
	// sorted: their state rows are locked in this order.
	ids []string
	// last is the stream sequence of the batch's last event.
	last   uint64
	events []connectors.Event
	// offset moves the pipeline's offset to last in the lane's
	// transaction: the lane holds the whole batch.
	offset bool
}

// applyParallel applies a batch on the lanes, then moves the pipeline's
// offset.
func (p *Applier) applyParallel(ctx context.Context, events []connectors.Event) error {
	if err := p.connect(ctx, p.main); err != nil {
		return err
	}
	if err := p.loadStates(ctx, p.main.conn); err != nil {
		return err
	}
	last := events[len(events)-1].Seq
	parts := make([]*laneBatch, len(p.lanes))
	var prev, schema, table string
	for j, ev := range events {
		id := prev
		if j == 0 || ev.Schema != schema || ev.Table != table {
			id, schema, table = ev.Schema+"\x00"+ev.Table, ev.Schema, ev.Table
		}
		i, ok := p.laneOf[id]
		if !ok {
			i = p.assign(id)
		}
		b := parts[i]
		if b == nil {
			b = &laneBatch{last: last}
			parts[i] = b
		}
		if id != prev && !slices.Contains(b.ids, id) {
			b.ids = append(b.ids, id)
			p.source(id) // the lanes find every entry: they never write the map
		}
		prev = id
		b.events = append(b.events, ev)
	}
	busy := 0
	for _, b := range parts {
		if b != nil {
			busy++
		}
	}
	if busy == 1 {
		// One lane holds the batch (as often when a replica follows its
		// source): its transaction moves the offset too, a round trip
		// and a commit fewer.
		for i, b := range parts {
			if b != nil {
				b.offset = true
				slices.Sort(b.ids)
				err := p.applyOn(ctx, p.lanes[i], b.events, b)
				p.report()
				return err
			}
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	for i, b := range parts {
		if b == nil {
			continue
		}
		slices.Sort(b.ids)
		g.Go(func() error { return p.applyOn(gctx, p.lanes[i], b.events, b) })
	}
	err := g.Wait()
	p.report()
	if err != nil {
		return err
	}
	// Every table holds its events up to last: so does the pipeline. The
	// offset never goes back (an applier that lost its lease may still
	// be finishing a batch).
	_, err = p.main.conn.Exec(ctx, `UPDATE `+p.offsets.Sanitize()+` SET seq = greatest(seq, $2), updated_at = now() WHERE pipeline = $1`,
		p.cfg.Pipeline, int64(last))
	if err != nil {
		return fmt.Errorf("store offset %d: %w", last, err)
	}
	return nil
}

// assign gives a source table the lane with the fewest tables.
func (p *Applier) assign(id string) int {
	i := 0
	for j, l := range p.lanes {
		if l.n < p.lanes[i].n {
			i = j
		}
	}
	p.laneOf[id] = i
	p.lanes[i].n++
	return i
}

// splitIDs splits source table ids (schema NUL table) into their schemas
// and tables.
func splitIDs(ids []string) (schemas, tables []string) {
	for _, id := range ids {
		s, t, _ := strings.Cut(id, "\x00")
		schemas, tables = append(schemas, s), append(tables, t)
	}
	return schemas, tables
}

// lockTables locks the state rows of source tables ids in tx, creating
// the missing ones, and returns the sequence up to which each table's
// events are applied: its own applied sequence or the pipeline's offset,
// whichever is further.
func (p *Applier) lockTables(ctx context.Context, tx pgx.Tx, ids []string) (map[string]uint64, error) {
	schemas, tables := splitIDs(ids)
	rows, err := tx.Query(ctx, `INSERT INTO `+p.state.Sanitize()+` AS s (pipeline, source_schema, source_table)
		SELECT $1, a.s, a.t FROM unnest($2::text[], $3::text[]) AS a(s, t) ORDER BY 2, 3
		ON CONFLICT (pipeline, source_schema, source_table) DO UPDATE SET applied_seq = s.applied_seq
		RETURNING s.source_schema, s.source_table,
			greatest(coalesce(s.applied_seq, 0), coalesce((SELECT o.seq FROM `+p.offsets.Sanitize()+` AS o WHERE o.pipeline = $1), 0))`,
		p.cfg.Pipeline, schemas, tables)
	if err != nil {
		return nil, fmt.Errorf("lock the state of the source tables: %w", err)
	}
	floors := make(map[string]uint64, len(ids))
	var schema, table string
	var seq int64
	_, err = pgx.ForEachRow(rows, []any{&schema, &table, &seq}, func() error {
		floors[schema+"\x00"+table] = uint64(seq)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lock the state of the source tables: %w", err)
	}
	return floors, nil
}

// storeTables stores in tx that the events of source tables ids are
// applied up to last, and when offset is set moves the pipeline's offset
// there too.
func (p *Applier) storeTables(ctx context.Context, tx pgx.Tx, ids []string, last uint64, offset bool) error {
	schemas, tables := splitIDs(ids)
	b := &pgx.Batch{}
	b.Queue(`UPDATE `+p.state.Sanitize()+` SET applied_seq = greatest(coalesce(applied_seq, 0), $4), updated_at = now()
		WHERE pipeline = $1 AND (source_schema, source_table) IN (SELECT * FROM unnest($2::text[], $3::text[]))`,
		p.cfg.Pipeline, schemas, tables, int64(last))
	if offset {
		b.Queue(`UPDATE `+p.offsets.Sanitize()+` SET seq = greatest(seq, $2), updated_at = now() WHERE pipeline = $1`, p.cfg.Pipeline, int64(last))
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("store the applied sequence %d of the source tables: %w", last, err)
	}
	return nil
}
