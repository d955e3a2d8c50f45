package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/connectors"
)

// passGroup is the consumer group whose offsets mark how far the tasks of
// passthrough pipeline have copied: the offset of partition N of the
// target topic is the next offset of the source's partition N to copy.
func passGroup(pipeline string) string { return "sluice.pass." + pipeline }

// passTransactionalID is the transactional ID of the tasks copying
// partition of pipeline: one producer at a time copies a partition.
func passTransactionalID(pipeline string, partition int32) string {
	return fmt.Sprintf("sluice.%s.p%d", pipeline, partition)
}

// passMark is the metadata of a marker: the task whose transaction
// committed it, what the task copied so far (in all its attempts), and
// the target topic it is of (a topic created again is another one).
type passMark struct {
	Run   string `json:"run"`
	Task  string `json:"task"`
	Topic string `json:"topic_id"`
	Rows  int64  `json:"rows"`
	Bytes int64  `json:"bytes"`
	Sum   uint64 `json:"sum"`
}

// OpenUnits starts a task attempt of a passthrough run; it connects at
// the first unit, which names the partition (see passWriter).
func (s *Sink) OpenUnits(_ context.Context, t connectors.TaskRef) (connectors.UnitWriter, error) {
	return &passWriter{s: s, t: t, resume: -1}, nil
}

// passWriter copies the records of one passthrough task attempt, one
// partition's, into the partition of the same number of the target, in
// transactions of at most batch records. Its transactional producer
// fences every earlier producer of the partition (an attempt still
// running, or killed mid-transaction, whose transaction it aborts);
// then the marker says where the copy stands: records below it were
// copied by an earlier attempt, or an earlier run that failed, and are
// passed over. Each transaction commits the marker of the offset it
// reached, with the task's counts so far, and the consumer group's offset
// when the sink names one; the last, at Close, the end of the task's
// range.
type passWriter struct {
	s *Sink
	t connectors.TaskRef

	txn       *kgo.Client // nil until the first unit
	part      int32
	srcTopic  string
	srcID     [16]byte // the source topic's ID on the sink's cluster, with a consumer group
	dstID     [16]byte
	to, batch int64

	resume int64    // records below it are copied
	mark   passMark // the task's counts, with what this attempt produced
	inTxn  int64    // records in the open transaction
	bytes  int64

	mu   sync.Mutex
	perr error
}

func (w *passWriter) done(_ *kgo.Record, err error) {
	if err != nil {
		w.mu.Lock()
		if w.perr == nil {
			w.perr = err
		}
		w.mu.Unlock()
	}
}

// open connects the writer for the partition u names: it checks the
// target, opens the producer (fencing earlier ones) and reads the marker.
func (w *passWriter) open(ctx context.Context, u connectors.Unit) error {
	part, err := strconv.ParseInt(u.Meta[metaPartition], 10, 32)
	if err != nil || part < 0 {
		return permanentf("unit %s names no partition (%q)", u.Position, u.Meta[metaPartition])
	}
	of, _ := strconv.ParseInt(u.Meta[metaPartitions], 10, 32)
	to, err := strconv.ParseInt(u.Meta[metaTo], 10, 64)
	if err != nil {
		return permanentf("unit %s names no end of its task (%q)", u.Position, u.Meta[metaTo])
	}
	batch, err := strconv.ParseInt(u.Meta[metaBatch], 10, 64)
	if err != nil || batch < 1 {
		batch = DefaultRecordsPerTask
	}
	topic := u.Meta[metaTopic]
	if checkTopic("topic", topic) != nil {
		return permanentf("unit %s names no source topic (%q)", u.Position, topic)
	}
	w.part, w.to, w.batch, w.srcTopic = int32(part), to, batch, topic
	s := w.s
	if s.cfg.Partitions > 0 {
		if err := ensureTopic(ctx, s.adm, s.cfg.Topic, s.cfg.Partitions, s.cfg.Replication, nil); err != nil {
			return err
		}
	}
	info, err := describeTopic(ctx, s.adm, s.cfg.Topic)
	if err != nil {
		return err
	}
	if n := int32(len(info.partitions)); n < int32(max(of, part+1)) {
		return permanentf("topic %s has %d partitions, its source %s has %d: a passthrough copies each partition to the one of its number", s.cfg.Topic, n, topic, max(of, part+1))
	}
	w.dstID = info.id
	if s.cfg.ConsumerGroup != "" {
		src, err := describeTopic(ctx, s.adm, topic)
		if err != nil {
			return fmt.Errorf("consumer_group: the source topic on the sink's cluster: %w", err)
		}
		w.srcID = src.id
	}
	txnID := passTransactionalID(w.t.Pipeline, w.part)
	txn, err := s.cfg.newClient(
		kgo.TransactionalID(txnID),
		kgo.TransactionTimeout(s.cfg.transactionTimeout()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.MaxBufferedRecords(maxBuffered), kgo.MaxBufferedBytes(maxBufferedBytes),
	)
	if err != nil {
		return err
	}
	// Initialising the producer ID fences every earlier producer of the
	// partition and aborts what it left open, so the marker read next is
	// final.
	if _, _, err := txn.ProducerID(ctx); err != nil {
		txn.Close()
		return fmt.Errorf("init the transactional producer %s: %w", txnID, err)
	}
	w.txn = txn
	at, meta, err := w.marker(ctx)
	if err != nil {
		return err
	}
	var m passMark
	if at >= 0 && json.Unmarshal([]byte(meta), &m) == nil && m.Topic == fmt.Sprintf("%x", w.dstID) {
		w.resume = at
		if m.Run == w.t.RunID && m.Task == w.t.TaskID {
			w.mark = m // an earlier attempt's counts
		}
	}
	w.mark.Run, w.mark.Task, w.mark.Topic = w.t.RunID, w.t.TaskID, fmt.Sprintf("%x", w.dstID)
	return nil
}

// marker returns the offset and metadata of the partition's marker; -1
// when there is none.
func (w *passWriter) marker(ctx context.Context) (int64, string, error) {
	at, meta := int64(-1), ""
	group := passGroup(w.t.Pipeline)
	err := retryUnstable(ctx, func() error {
		resps, err := w.s.adm.FetchOffsets(kadm.RequireStable(ctx), group)
		if err == nil {
			err = resps.Error()
		}
		if err == nil {
			if o, ok := resps.Lookup(w.s.cfg.Topic, w.part); ok {
				at, meta = o.At, o.Metadata
			}
		}
		return err
	})
	if err != nil {
		return 0, "", fmt.Errorf("fetch the offsets of %s: %w", group, err)
	}
	return at, meta, nil
}

// WriteUnit copies the records of u, in order, that are not copied yet,
// into the partition of the target of the number of the one they were
// read from.
func (w *passWriter) WriteUnit(ctx context.Context, u connectors.Unit) error {
	if u.Format != Units || u.Remove {
		return permanentf("unit %s is not of %s (format %q): a kafka sink copies only a kafka source's records", u.Position, Units, u.Format)
	}
	if w.txn == nil {
		if err := w.open(ctx, u); err != nil {
			return err
		}
	} else if u.Meta[metaPartition] != strconv.Itoa(int(w.part)) {
		return permanentf("unit %s is of partition %s, the task's others of %d", u.Position, u.Meta[metaPartition], w.part)
	}
	recs, err := unitRecords(u)
	if err != nil {
		return err
	}
	for _, r := range recs {
		if r.Offset < w.resume {
			continue
		}
		if w.inTxn >= w.batch {
			if err := w.commit(ctx, r.Offset); err != nil {
				return err
			}
		}
		if w.inTxn == 0 {
			if err := w.txn.BeginTransaction(); err != nil {
				return fmt.Errorf("begin transaction: %w", err)
			}
		}
		w.mark.Rows++
		w.mark.Sum += connectors.RowHash(r.Value)
		n := int64(len(r.Key) + len(r.Value))
		for _, h := range r.Headers {
			n += int64(len(h.Key) + len(h.Value))
		}
		w.mark.Bytes += n
		// The record is produced as it was fetched (key, value, headers,
		// timestamp), to the target; the producer sets the rest.
		*r = kgo.Record{Topic: w.s.cfg.Topic, Partition: w.part, Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp}
		w.txn.Produce(ctx, r, w.done)
		w.inTxn++
	}
	w.mu.Lock()
	err = w.perr
	w.mu.Unlock()
	if err != nil {
		return fmt.Errorf("produce to %s: %w", w.s.cfg.Topic, err)
	}
	return nil
}

// unitRecords returns the records of u: the source's own when it comes
// from a kafka source in this process, else decoded from its bytes. The
// writer takes them: the source hands a fetch's records over once.
func unitRecords(u connectors.Unit) ([]*kgo.Record, error) {
	if b, ok := u.Body.(*recordsBody); ok {
		return b.recs, nil
	}
	body, err := io.ReadAll(u.Body)
	if err != nil {
		return nil, fmt.Errorf("read unit %s: %w", u.Position, err)
	}
	var recs []*kgo.Record
	d := recordReader{b: body}
	for r := d.next(); r != nil; r = d.next() {
		recs = append(recs, r)
	}
	return recs, d.err
}

// commit commits the open transaction with the marker (and the consumer
// group's offset) at next, the source offset the copy goes on from.
func (w *passWriter) commit(ctx context.Context, next int64) error {
	s := w.s
	err := w.txn.Flush(ctx)
	if err == nil {
		w.mu.Lock()
		err = w.perr
		w.mu.Unlock()
	}
	if err != nil {
		err = fmt.Errorf("produce to %s: %w", s.cfg.Topic, err)
	}
	txnID := passTransactionalID(w.t.Pipeline, w.part)
	if err == nil {
		meta, _ := json.Marshal(w.mark)
		err = commitOffsets(ctx, w.txn, txnID, passGroup(w.t.Pipeline), s.cfg.Topic, w.dstID, map[int32]int64{w.part: next}, string(meta))
	}
	if err == nil && s.cfg.ConsumerGroup != "" {
		err = commitOffsets(ctx, w.txn, txnID, s.cfg.ConsumerGroup, w.srcTopic, w.srcID, map[int32]int64{w.part: next}, w.t.RunID)
	}
	if err != nil {
		return errors.Join(err, w.abort(ctx))
	}
	if err := w.txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return fmt.Errorf("commit the transaction of %s/%d up to offset %d: %w", w.srcTopic, w.part, next, err)
	}
	w.inTxn = 0
	return nil
}

// abort aborts the open transaction.
func (w *passWriter) abort(ctx context.Context) error {
	if w.txn == nil || w.inTxn == 0 {
		return nil
	}
	w.inTxn = 0
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := w.txn.EndTransaction(actx, kgo.TryAbort); err != nil {
		return fmt.Errorf("abort the transaction: %w", err)
	}
	return nil
}

// Close commits the last transaction, with the marker at the end of the
// task's range, and reports what the task copied in all its attempts.
func (w *passWriter) Close(ctx context.Context) (connectors.TaskOutput, error) {
	if w.txn == nil {
		return connectors.TaskOutput{Location: w.s.cfg.Topic}, nil
	}
	defer w.txn.Close()
	if w.inTxn > 0 {
		if err := w.commit(ctx, w.to); err != nil {
			return connectors.TaskOutput{}, err
		}
	}
	return connectors.TaskOutput{
		Rows: w.mark.Rows, Bytes: w.mark.Bytes, Checksum: connectors.Checksum{Sum: w.mark.Sum, Rows: w.mark.Rows},
		Location: fmt.Sprintf("%s/%d", w.s.cfg.Topic, w.part),
	}, nil
}

// Abort aborts the open transaction; what earlier transactions committed
// stays, and a later attempt goes on after it.
func (w *passWriter) Abort(ctx context.Context) error {
	if w.txn == nil {
		return nil
	}
	defer w.txn.Close()
	return w.abort(ctx)
}

// CommitUnits has nothing to write: the run's tasks committed their
// records in their own transactions.
func (s *Sink) CommitUnits(context.Context, connectors.CommitRequest) (connectors.CommitResult, error) {
	return connectors.CommitResult{Location: s.cfg.Topic}, nil
}

// AbortUnits has nothing to remove: what the run's tasks committed stays,
// and the next run goes on from their markers.
func (s *Sink) AbortUnits(context.Context, string) error { return nil }
