package kafka

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// Units are what the kafka connector exchanges in a passthrough
// (connectors.Passthrough.Units): the records of one fetch of one
// partition, each with its key, value, headers and timestamp, in offset
// order.
const Units = "kafka-records"

// metaPartition is the Unit.Meta entry naming the source partition a
// unit's records come from: the partition of the target they go to.
const metaPartition = "partition"

// A passthrough from Kafka to Kafka copies each partition of the source
// topic to the partition of the same number of the target topic, record
// for record. The source plans a run as a run by position does (Plan with
// ByPosition): tasks of one partition's offset range, from the
// pipeline's watermark, the offset vector that moves in the Raft entry
// committing the run. The sink stages a task's records in its staging
// topic, each marked with the attempt and the partition it goes to, and
// the leader's commit copies the kept attempts' records, in task order,
// into the target in one transaction with the run's marker (see Sink), so
// a worker killed mid-task leaves records no commit copies, a retried
// task counts once, and a commit repeated after a leader's crash copies
// nothing again. The same transaction commits the offsets the run
// reached to a consumer group when the source topic
// is on the sink's cluster and the sink names the group (consumer_group),
// so that the group's lag is the pipeline's.

// PlanUnits plans a passthrough run: the records new since the watermark,
// as a run by position plans them.
func (s *Source) PlanUnits(ctx context.Context, req connectors.PlanRequest) (connectors.Plan, error) {
	req.ByPosition, req.Window, req.Target = true, nil, nil
	return s.Plan(ctx, req)
}

// ReadUnits reads one task's offset range and emits the records of each
// fetch as one unit.
func (s *Source) ReadUnits(ctx context.Context, p protocol.Partition, emit connectors.EmitUnit) error {
	r, err := s.taskRange(p)
	if err != nil {
		return err
	}
	meta := map[string]string{metaPartition: strconv.Itoa(int(r.Partition))}
	err = readRange(ctx, s.cl, s.adm, r, s.cfg.committed(), func(recs []*kgo.Record) error {
		body := appendRecords(nil, recs)
		return emit(ctx, connectors.Unit{
			Offset: 0, Length: int64(len(body)), Size: int64(len(body)), Format: Units, Meta: meta,
			Body: bytes.NewReader(body), Position: fmt.Sprintf("%s/%d@%d", r.Topic, r.Partition, recs[0].Offset),
		})
	})
	if err != nil {
		return fmt.Errorf("read %s: %w", r, err)
	}
	return nil
}

// appendRecords appends the encoding of recs to buf: per record its key
// and value (length+1, 0 for null), its timestamp in milliseconds, and
// its headers (count, then each key and value, a value's length+1).
func appendRecords(buf []byte, recs []*kgo.Record) []byte {
	for _, r := range recs {
		buf = appendNullable(buf, r.Key)
		buf = appendNullable(buf, r.Value)
		buf = binary.AppendVarint(buf, r.Timestamp.UnixMilli())
		buf = binary.AppendUvarint(buf, uint64(len(r.Headers)))
		for _, h := range r.Headers {
			buf = binary.AppendUvarint(buf, uint64(len(h.Key)))
			buf = append(buf, h.Key...)
			buf = appendNullable(buf, h.Value)
		}
	}
	return buf
}

func appendNullable(buf, b []byte) []byte {
	if b == nil {
		return binary.AppendUvarint(buf, 0)
	}
	buf = binary.AppendUvarint(buf, uint64(len(b))+1)
	return append(buf, b...)
}

// recordReader decodes what appendRecords wrote.
type recordReader struct {
	b   []byte
	err error
}

func (d *recordReader) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *recordReader) bytes(n uint64) []byte {
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	out := d.b[:n:n]
	d.b = d.b[n:]
	return out
}

func (d *recordReader) nullable() []byte {
	n := d.uvarint()
	if n == 0 || d.err != nil {
		return nil
	}
	return d.bytes(n - 1)
}

func (d *recordReader) fail() {
	if d.err == nil {
		d.err = permanentf("a unit of %s records is cut short or corrupt", Units)
	}
	d.b = nil
}

// next decodes the next record; nil at the end or on an error (d.err).
func (d *recordReader) next() *kgo.Record {
	if len(d.b) == 0 || d.err != nil {
		return nil
	}
	r := &kgo.Record{Key: d.nullable(), Value: d.nullable()}
	ts, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return nil
	}
	d.b = d.b[n:]
	r.Timestamp = time.UnixMilli(ts)
	nh := d.uvarint()
	if nh > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	for range nh {
		k := d.bytes(d.uvarint())
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: string(k), Value: d.nullable()})
	}
	if d.err != nil {
		return nil
	}
	return r
}

// OpenUnits starts a task attempt of a passthrough run: its records are
// staged as OpenTask stages rows, each marked with the partition it goes
// to.
func (s *Sink) OpenUnits(ctx context.Context, t connectors.TaskRef) (connectors.UnitWriter, error) {
	tw, err := s.OpenTask(ctx, t)
	if err != nil {
		return nil, err
	}
	return &unitWriter{taskWriter: tw.(*taskWriter)}, nil
}

// unitWriter stages the records of a passthrough task attempt.
type unitWriter struct{ *taskWriter }

// WriteUnit stages the records of u, in order, for the partition of the
// target of the number of the one they were read from.
func (w *unitWriter) WriteUnit(ctx context.Context, u connectors.Unit) error {
	if u.Format != Units || u.Remove {
		return permanentf("unit %s is not of %s (format %q): a kafka sink copies only a kafka source's records", u.Position, Units, u.Format)
	}
	part := u.Meta[metaPartition]
	if _, err := strconv.ParseUint(part, 10, 31); err != nil {
		return permanentf("unit %s names no partition (%q)", u.Position, part)
	}
	if err := w.failed(); err != nil {
		return fmt.Errorf("stage records: %w", err)
	}
	body, err := io.ReadAll(u.Body)
	if err != nil {
		return fmt.Errorf("read unit %s: %w", u.Position, err)
	}
	w.bytes += int64(len(body))
	d := recordReader{b: body}
	for r := d.next(); r != nil; r = d.next() {
		w.sum.Add(r.Value)
		w.rows++
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: headerPartition, Value: []byte(part)})
		w.produce(ctx, r)
	}
	return d.err
}

// CommitUnits copies the run's staged records into the target in one
// transaction, as Commit does.
func (s *Sink) CommitUnits(ctx context.Context, req connectors.CommitRequest) (connectors.CommitResult, error) {
	c, err := s.consumed(ctx, req)
	if err != nil {
		return connectors.CommitResult{Location: s.cfg.Topic}, err
	}
	return s.commit(ctx, req, c)
}

// consumed returns the offsets the run reaches in its source topic (its
// watermark), to commit for the consumer group ConsumerGroup names; nil
// when it names none.
func (s *Sink) consumed(ctx context.Context, req connectors.CommitRequest) (*consumed, error) {
	if s.cfg.ConsumerGroup == "" {
		return nil, nil
	}
	topic, _, ok := strings.Cut(req.Watermark, ":")
	if !ok {
		return nil, permanentf("consumer_group: the watermark %q is no position in a kafka topic: is the source a kafka topic?", req.Watermark)
	}
	offs, err := parseWatermark(req.Watermark, topic)
	if err != nil {
		return nil, err
	}
	info, err := describeTopic(ctx, s.adm, topic)
	if err != nil {
		return nil, fmt.Errorf("consumer_group: the source topic on the sink's cluster: %w", err)
	}
	for p := range offs {
		if !slices.Contains(info.partitions, p) {
			return nil, permanentf("consumer_group: topic %s of the sink's cluster has no partition %d: is the source on another cluster?", topic, p)
		}
	}
	return &consumed{group: s.cfg.ConsumerGroup, topic: info, name: topic, offsets: offs}, nil
}

// AbortUnits leaves a failed run's staged records to the staging topic's
// retention, as Abort does.
func (s *Sink) AbortUnits(ctx context.Context, runID string) error { return s.Abort(ctx, runID) }
