package postgres

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

var _ connectors.UnitSource = (*Source)(nil)

// The COPY formats a passthrough moves rows in.
const (
	formatBinary = "binary"
	formatText   = "text"
)

// PlanUnits plans a passthrough of the table: chunks as Plan makes them,
// on one exported snapshot (Holds), each read with COPY ... TO STDOUT in
// the binary format, or in the text format when the binary form of a
// column would not read the same in another database (an array of an
// enum of the database's own; see binaryCopySafe), and for a transform
// whose contract changes the rows (req.Transform), whose workers read the
// text format, unless the contract takes the binary one (req.Binary): the
// columns it transforms (req.TextColumns) are then read in their text
// form (the output function's, as COPY's text format has them), the
// others in their binary one. Generated columns are
// not read: the target computes them. The plan's Schema describes every
// column (generated ones included) with its native type qualified by its
// schema where it is not built in, and carries in Native the table's
// TableDef (enums, collations, constraints, indexes, identity).
func (s *Source) PlanUnits(ctx context.Context, req connectors.PlanRequest) (connectors.Plan, error) {
	return s.plan(ctx, req, func(ctx context.Context, conn *pgx.Conn, oid uint32, specs []chunkSpec) (*protocol.Schema, error) {
		// Every name of the database's own qualified, so that the
		// target finds the same types and functions.
		if _, err := conn.Exec(ctx, "SET LOCAL search_path = pg_catalog"); err != nil {
			return nil, err
		}
		sc, err := DescribeTable(ctx, conn, oid, nil)
		if err != nil {
			return nil, err
		}
		def, err := DescribeTableDef(ctx, conn, oid)
		if err != nil {
			return nil, err
		}
		if sc.Native, err = json.Marshal(def); err != nil {
			return nil, err
		}
		// A transform's contract reads the text format (contract.CopyText),
		// or the binary one with the columns its actions take as text
		// (contract.CopyBinary).
		format := formatText
		if ok, err := binaryCopySafe(ctx, conn, oid); err != nil {
			return nil, err
		} else if ok && (!req.Transform || req.Binary) {
			format = formatBinary
		}
		var cols, text, formatted []string
		var differs map[string]bool
		if format == formatBinary && req.Transform && len(req.TextColumns) > 0 {
			if differs, err = textCastDiffers(ctx, conn, oid); err != nil {
				return nil, err
			}
		}
		for _, c := range sc.Columns {
			if c.Generated == "" {
				cols = append(cols, c.Name)
				if format == formatBinary && req.Transform && slices.Contains(req.TextColumns, c.Name) {
					text = append(text, c.Name)
					if differs[c.Name] {
						formatted = append(formatted, c.Name)
					}
				}
			}
		}
		for i := range specs {
			specs[i].Columns, specs[i].Format, specs[i].Text, specs[i].Formatted = cols, format, text, formatted
		}
		return sc, nil
	})
}

// ReadUnits reads one chunk of a passthrough as one unit: the output of
// COPY ... TO STDOUT in the chunk's format, straight off the connection
// (Body yields the payloads of the server's CopyData messages, undecoded),
// with the chunk's columns. Like Read, it sees exactly the rows of the
// run's snapshot; a snapshot that is gone fails with a connectors.Replan
// error wrapping ErrSnapshotGone. ctx bounds the whole read.
func (s *Source) ReadUnits(ctx context.Context, p protocol.Partition, emit connectors.EmitUnit) error {
	c, err := s.chunk(p)
	if err != nil {
		return err
	}
	if c.Format != formatBinary && c.Format != formatText {
		return connectors.Permanent(fmt.Errorf("read %s %s: the chunk is not one of a passthrough (format %q)", s.cfg.Table, p.Key, c.Format))
	}
	err = s.readUnit(ctx, c, p.Key, emit)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func (s *Source) readUnit(ctx context.Context, c chunkSpec, key string, emit connectors.EmitUnit) error {
	where := fmt.Sprintf("read %s %s", s.cfg.Table, key)
	conn, err := s.hijackChunk(ctx, c, where)
	if err != nil {
		return err
	}
	defer conn.Close()
	st, err := startCopyOut(ctx, conn, "COPY ("+s.query(c)+") TO STDOUT WITH (FORMAT "+c.Format+"); COMMIT")
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	defer st.stop()
	err = emit(ctx, connectors.Unit{Name: s.cfg.Table, Length: -1, Size: -1, Columns: c.Columns, Format: c.Format,
		TextColumns: c.Text, Body: st, Position: s.cfg.Table + " " + key})
	if serr := st.failure(); serr != nil {
		return classify(fmt.Errorf("%s: copy: %w", where, serr))
	}
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	if !st.done {
		return fmt.Errorf("%s: the sink left the chunk's rows unread", where)
	}
	return nil
}

// copyStream reads the response to a simple query made of one COPY ...
// TO STDOUT and then COMMIT off a connection taken from pgconn (Hijack):
// Read yields the payloads of the CopyData messages one after the other,
// as many as p holds, and io.EOF once the server is ready for the next
// query; the server's error (a *pgconn.PgError) or the connection's
// instead. The row count of the COPY's command tag is in rows by then.
// It is read by one goroutine at a time.
type copyStream struct {
	conn net.Conn
	ctx  context.Context
	// stop ends the cancellation of the connection's reads with ctx.
	stop func() bool

	buf    []byte
	rp, wp int // unparsed bytes: buf[rp:wp]
	data   int // bytes of the current CopyData message still to give
	rows   int64
	tagged bool
	serr   error // the server's ErrorResponse
	err    error // the read's end: io.EOF, the server's error or the connection's
	done   bool
}

// startCopyOut sends sql and a Terminate (the server ends the session
// once it is done, which also wakes a read waiting for copyLowWater bytes
// that will never come) and returns the stream of the response. ctx's
// cancellation makes a pending read fail.
func startCopyOut(ctx context.Context, conn net.Conn, sql string) (*copyStream, error) {
	q, err := (&pgproto3.Query{String: sql}).Encode(nil)
	if err != nil {
		return nil, err
	}
	q = append(q, 'X', 0, 0, 0, 4)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	if _, err := conn.Write(q); err != nil {
		stop()
		return nil, err
	}
	setReadLowWater(conn, copyLowWater)
	return &copyStream{conn: conn, ctx: ctx, stop: stop, buf: make([]byte, rawReadBuffer)}, nil
}

// failure returns the error the stream ended with, other than io.EOF.
func (c *copyStream) failure() error {
	if c.err == io.EOF {
		return nil
	}
	return c.err
}

func (c *copyStream) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if c.err != nil {
			if n > 0 {
				return n, nil
			}
			return 0, c.err
		}
		if c.data > 0 {
			if c.rp == c.wp {
				if n > 0 {
					return n, nil // what is here, before waiting for more
				}
				c.fill(1)
				continue
			}
			k := copy(p[n:], c.buf[c.rp:c.rp+min(c.data, c.wp-c.rp)])
			c.rp += k
			c.data -= k
			n += k
			continue
		}
		// At a message's start.
		if c.wp-c.rp < 5 {
			if n > 0 {
				return n, nil
			}
			c.fill(5)
			continue
		}
		typ := c.buf[c.rp]
		size := int(binary.BigEndian.Uint32(c.buf[c.rp+1:])) - 4
		if size < 0 || size > 1<<30 {
			c.err = fmt.Errorf("bad message length %d", size+4)
			continue
		}
		if typ == 'd' {
			c.rp += 5
			c.data = size
			continue
		}
		if c.wp-c.rp-5 < size {
			if n > 0 {
				return n, nil
			}
			c.fill(5 + size)
			continue
		}
		c.message(typ, c.buf[c.rp+5:c.rp+5+size])
		c.rp += 5 + size
	}
	return n, nil
}

// message handles a message other than CopyData.
func (c *copyStream) message(typ byte, body []byte) {
	switch typ {
	case 'H', 'c', 'N', 'S', 'A': // copy out, copy done, notices, parameters, notifications
	case 'C':
		if !c.tagged {
			// "COPY 123", then "COMMIT".
			c.rows, c.tagged = pgconn.NewCommandTag(string(bytes.TrimSuffix(body, []byte{0}))).RowsAffected(), true
		}
	case 'E':
		var er pgproto3.ErrorResponse
		if err := er.Decode(body); err != nil {
			c.err = err
			return
		}
		if c.serr == nil {
			c.serr = pgconn.ErrorResponseToPgError(&er)
		}
	case 'Z':
		switch {
		case c.serr != nil:
			c.err = c.serr
		case !c.tagged:
			c.err = errors.New("no command tag for the COPY")
		default:
			c.err, c.done = io.EOF, true
		}
	default:
		c.err = fmt.Errorf("unexpected message %q during COPY", typ)
	}
}

// fill reads from the connection until the buffer holds at least need
// unparsed bytes (or a read failed: c.err).
func (c *copyStream) fill(need int) {
	if c.rp > 0 && (c.rp == c.wp || len(c.buf)-c.wp < len(c.buf)/4 || len(c.buf)-c.rp < need) {
		c.wp = copy(c.buf, c.buf[c.rp:c.wp])
		c.rp = 0
	}
	if need > len(c.buf) {
		c.buf = append(c.buf[:c.wp], make([]byte, need-c.wp)...)
		c.buf = c.buf[:cap(c.buf)]
	}
	for c.wp-c.rp < need {
		k, err := c.conn.Read(c.buf[c.wp:])
		c.wp += k
		if err != nil && c.wp-c.rp < need {
			if cerr := c.ctx.Err(); cerr != nil {
				err = cerr
			} else if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			c.err = err
			return
		}
	}
}
