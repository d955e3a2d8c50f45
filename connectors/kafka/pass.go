package kafka

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
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
// for record, each record written once. The source plans a run as a run by
// position does (Plan with ByPosition), from the pipeline's watermark, the
// offset vector that moves in the Raft entry committing the run, but as
// one task per partition: a task copies its partition's new records in
// order, so that the partitions spread over the workers and no two tasks
// write to one partition. The sink's task writes the records straight
// into the target in Kafka transactions of at most records_per_task
// records (see passWriter), each committing, in the same transaction, the
// source offset it reached as a marker (and, when the sink names
// consumer_group, as that group's offset of the source topic): a
// transactional ID per pipeline and partition fences an earlier attempt
// of the task, and the marker says where the copy stands, so a worker
// killed mid-transaction leaves an aborted transaction, a retried task
// goes on from the marker, and no record is copied twice, nor lost.
//
// Read_committed consumers therefore see a partition's records arrive
// transaction by transaction, in order, never a part of one, rather than a
// whole run at once: a passthrough's unit of atomicity is the
// transaction, not the run (Kafka's own exactly-once copy, as a
// consume-transform-produce loop does it). A run that fails keeps what
// its committed transactions copied; the next one goes on from the
// markers. The run's commit on the leader writes nothing to Kafka.

// PlanUnits plans a passthrough run: the records new since the watermark,
// as a run by position plans them, one task per partition.
func (s *Source) PlanUnits(ctx context.Context, req connectors.PlanRequest) (connectors.Plan, error) {
	req.ByPosition, req.Window, req.Target = true, nil, nil
	return s.plan(ctx, req, true)
}

// Meta entries of a unit of Units besides metaPartition: the source
// topic and its number of partitions, the end of the task's range, and
// the records a transaction takes.
const (
	metaTopic      = "topic"
	metaPartitions = "partitions"
	metaTo         = "to"
	metaBatch      = "records_per_transaction"
)

// ReadUnits reads one task's offset range and emits the records of each
// fetch as one unit.
func (s *Source) ReadUnits(ctx context.Context, p protocol.Partition, emit connectors.EmitUnit) error {
	r, err := s.taskRange(p)
	if err != nil {
		return err
	}
	per := s.cfg.RecordsPerTask
	if per <= 0 {
		per = DefaultRecordsPerTask
	}
	meta := map[string]string{
		metaTopic: r.Topic, metaPartition: strconv.Itoa(int(r.Partition)), metaPartitions: strconv.Itoa(int(r.Of)),
		metaTo: strconv.FormatInt(r.To, 10), metaBatch: strconv.FormatInt(per, 10),
	}
	err = readRange(ctx, s.cl, s.adm, r, s.cfg.committed(), func(recs []*kgo.Record) error {
		return emit(ctx, connectors.Unit{
			Offset: 0, Length: -1, Size: -1, Format: Units, Meta: meta,
			Body: &recordsBody{recs: recs}, Position: fmt.Sprintf("%s/%d@%d", r.Topic, r.Partition, recs[0].Offset),
		})
	})
	if err != nil {
		return fmt.Errorf("read %s: %w", r, err)
	}
	return nil
}

// recordsBody is the Body of a unit of Units: the encoding of its records
// (appendRecords), made when it is first read. A kafka sink takes the
// records themselves instead, as they came from the fetch.
type recordsBody struct {
	recs []*kgo.Record
	r    *bytes.Reader
}

func (b *recordsBody) Read(p []byte) (int, error) {
	if b.r == nil {
		b.r = bytes.NewReader(appendRecords(nil, b.recs))
	}
	return b.r.Read(p)
}

// appendRecords appends the encoding of recs to buf: per record its
// offset, its key and value (length+1, 0 for null), its timestamp in
// milliseconds, and its headers (count, then each key and value, a
// value's length+1).
func appendRecords(buf []byte, recs []*kgo.Record) []byte {
	for _, r := range recs {
		buf = binary.AppendVarint(buf, r.Offset)
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
	off, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return nil
	}
	d.b = d.b[n:]
	r := &kgo.Record{Offset: off, Key: d.nullable(), Value: d.nullable()}
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
