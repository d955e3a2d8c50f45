package kafka

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/connectors"
)

// maxBuffered and maxBufferedBytes bound the records a producer of the
// sink holds before the brokers acknowledge them (franz-go's default is
// 10,000 records): a fetch of 8 MiB holds more, and a producer that
// blocks stops the fetch.
const (
	maxBuffered      = 1 << 17
	maxBufferedBytes = 64 << 20
)

// headerAttempt is the header of a staged record naming the attempt
// that wrote it; the commit drops it.
const headerAttempt = "sluice-attempt"

// Sink commits the records of a run to a topic in one Kafka transaction:
// read_committed consumers see a run whole or not at all.
//
// Each worker has a producer of its own, and a Kafka transaction belongs
// to one producer, so the tasks of a run cannot write into one
// transaction. Tasks stage instead: a task attempt appends its records to
// the staging topic with an idempotent producer, all in one partition,
// each marked with the attempt (a header), and reports the offset range
// it wrote (TaskOutput.Location). An attempt that dies, or one the run
// does not keep, leaves records no commit copies. The leader's Commit
// copies exactly the kept attempts' records, in task order, into the
// topic within one transaction, whose transactional ID is the pipeline's:
// opening it fences a previous leader's producer and aborts the
// transaction that leader left open. The same transaction commits a
// marker, an offset of the consumer group sluice.commit.<run>, so a commit
// repeated after a crash (by this leader or the next) finds the run
// committed and copies nothing again.
type Sink struct {
	cfg SinkConfig
	cl  *kgo.Client // the staging producer, idempotent
	adm *kadm.Client

	mu      sync.Mutex
	staging *topicInfo // set once the staging topic exists
}

// NewSink opens a sink; it connects lazily.
func NewSink(c SinkConfig) (*Sink, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	cl, err := c.newClient(kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(maxBuffered), kgo.MaxBufferedBytes(maxBufferedBytes))
	if err != nil {
		return nil, err
	}
	return &Sink{cfg: c, cl: cl, adm: kadm.NewClient(cl)}, nil
}

// Close closes the clients.
func (s *Sink) Close() error {
	s.cl.Close()
	return nil
}

// prepare makes sure the topic exists (creating it when Partitions is
// set) and the staging topic too (creating it), and returns the staging
// topic's partitions.
func (s *Sink) prepare(ctx context.Context) (topicInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.staging != nil {
		return *s.staging, nil
	}
	if s.cfg.Partitions > 0 {
		if err := ensureTopic(ctx, s.adm, s.cfg.Topic, s.cfg.Partitions, s.cfg.Replication, nil); err != nil {
			return topicInfo{}, err
		}
	} else if _, err := describeTopic(ctx, s.adm, s.cfg.Topic); err != nil {
		return topicInfo{}, fmt.Errorf("%w (set partitions to have the sink create it)", err)
	}
	retention := strconv.FormatInt(s.cfg.stagingRetention().Milliseconds(), 10)
	policy := "delete"
	staging := s.cfg.stagingTopic()
	if err := ensureTopic(ctx, s.adm, staging, s.cfg.stagingPartitions(), s.cfg.Replication,
		map[string]*string{"retention.ms": &retention, "cleanup.policy": &policy}); err != nil {
		return topicInfo{}, err
	}
	info, err := describeTopic(ctx, s.adm, staging)
	if err != nil {
		return topicInfo{}, err
	}
	s.staging = &info
	return info, nil
}

// staged is what a task attempt staged: offsets [From, To) of one
// partition of the staging topic, of which the commit copies the records
// marked with Attempt.
type staged struct {
	offsetRange
	Attempt string `json:"attempt"`
	Records int64  `json:"records"`
}

// OpenTask starts a task attempt: its records go to one partition of the
// staging topic, chosen by the task, marked with the attempt.
func (s *Sink) OpenTask(ctx context.Context, t connectors.TaskRef) (connectors.TaskWriter, error) {
	info, err := s.prepare(ctx)
	if err != nil {
		return nil, err
	}
	h := fnv.New32a()
	h.Write([]byte(t.RunID + "/" + t.TaskID))
	var nonce [6]byte
	rand.Read(nonce[:])
	return &taskWriter{
		cl:        s.cl,
		topic:     s.cfg.stagingTopic(),
		partition: info.partitions[h.Sum32()%uint32(len(info.partitions))],
		attempt:   []byte(fmt.Sprintf("%s/%s/%d/%s", t.RunID, t.TaskID, t.Attempt, hex.EncodeToString(nonce[:]))),
		split:     rowSplitter{key: s.cfg.Key},
		first:     -1,
	}, nil
}

// taskWriter stages one task attempt's records.
type taskWriter struct {
	cl        *kgo.Client
	topic     string
	partition int32
	attempt   []byte
	split     rowSplitter

	rows, bytes int64
	sum         connectors.Checksum

	wg          sync.WaitGroup
	mu          sync.Mutex
	err         error
	first, last int64
	acked       int64
}

func (w *taskWriter) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Write stages the rows of b; the producer acknowledges them
// asynchronously, and Close waits for it.
func (w *taskWriter) Write(ctx context.Context, b connectors.Batch) error {
	if err := w.failed(); err != nil {
		return fmt.Errorf("stage records: %w", err)
	}
	return w.split.split(b, func(value, key []byte) error {
		v := bytes.Clone(value)
		w.sum.Add(v)
		w.rows++
		w.bytes += int64(len(v))
		w.produce(ctx, &kgo.Record{Key: bytes.Clone(key), Value: v})
		return nil
	})
}

// produce stages r, marked with the attempt.
func (w *taskWriter) produce(ctx context.Context, r *kgo.Record) {
	r.Topic, r.Partition = w.topic, w.partition
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: headerAttempt, Value: w.attempt})
	w.wg.Add(1)
	w.cl.Produce(ctx, r, w.done)
}

func (w *taskWriter) done(r *kgo.Record, err error) {
	defer w.wg.Done()
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if w.err == nil {
			w.err = err
		}
		return
	}
	if w.first < 0 || r.Offset < w.first {
		w.first = r.Offset
	}
	w.last = max(w.last, r.Offset)
	w.acked++
}

// Close waits until the brokers acknowledged every staged record and
// reports the range they lie in.
func (w *taskWriter) Close(context.Context) (connectors.TaskOutput, error) {
	w.wg.Wait()
	if err := w.failed(); err != nil {
		return connectors.TaskOutput{}, fmt.Errorf("stage records in %s: %w", w.topic, err)
	}
	out := staged{offsetRange: offsetRange{Topic: w.topic, Partition: w.partition}, Attempt: string(w.attempt), Records: w.acked}
	if w.acked > 0 {
		out.From, out.To = w.first, w.last+1
	}
	loc, err := json.Marshal(out)
	if err != nil {
		return connectors.TaskOutput{}, err
	}
	return connectors.TaskOutput{Rows: w.rows, Bytes: w.bytes, Checksum: w.sum, Location: string(loc)}, nil
}

// Abort leaves what the attempt staged to no commit.
func (w *taskWriter) Abort(context.Context) error {
	w.wg.Wait()
	return nil
}

// markerGroup is the consumer group whose offset, committed in a run's
// transaction, marks the run committed.
func markerGroup(runID string) string { return "sluice.commit." + runID }

// transactionalID is the transactional ID of the commits of pipeline.
func transactionalID(pipeline string) string { return "sluice." + pipeline }

// Commit copies the records the run's tasks staged into the topic in one
// transaction, unless a marker says an earlier commit did.
func (s *Sink) Commit(ctx context.Context, req connectors.CommitRequest) (connectors.CommitResult, error) {
	res := connectors.CommitResult{Location: s.cfg.Topic}
	var outs []staged
	for i, t := range req.Tasks {
		var st staged
		if err := json.Unmarshal([]byte(t.Location), &st); err != nil {
			return res, permanentf("task %d's output %q is not a kafka sink's", i, t.Location)
		}
		if st.Records > 0 {
			outs = append(outs, st)
		}
	}
	if len(outs) == 0 {
		return res, nil // nothing to copy, nothing to repeat
	}
	info, err := describeTopic(ctx, s.adm, s.cfg.Topic)
	if err != nil {
		return res, err
	}
	txn, err := s.cfg.newClient(
		kgo.TransactionalID(transactionalID(req.Pipeline)),
		kgo.TransactionTimeout(s.cfg.transactionTimeout()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.MaxBufferedRecords(maxBuffered), kgo.MaxBufferedBytes(maxBufferedBytes),
	)
	if err != nil {
		return res, err
	}
	defer txn.Close()
	// Initialising the producer ID fences an earlier leader's producer and
	// aborts what it left open, so the marker below is final.
	if _, _, err := txn.ProducerID(ctx); err != nil {
		return res, fmt.Errorf("init the transactional producer %s: %w", transactionalID(req.Pipeline), err)
	}
	done, err := committed(ctx, s.adm, markerGroup(req.RunID), s.cfg.Topic)
	if err != nil || done {
		return res, err
	}
	if err := txn.BeginTransaction(); err != nil {
		return res, fmt.Errorf("begin transaction: %w", err)
	}
	copied, err := s.copyStaged(ctx, txn, info, outs)
	if err == nil {
		err = commitMarker(ctx, txn, transactionalID(req.Pipeline), markerGroup(req.RunID), s.cfg.Topic, info.id, copied, req.RunID)
	}
	if err != nil {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if aerr := txn.EndTransaction(actx, kgo.TryAbort); aerr != nil {
			err = errors.Join(err, fmt.Errorf("abort the transaction: %w", aerr))
		}
		return res, err
	}
	if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return res, fmt.Errorf("commit the transaction of run %s: %w", req.RunID, err)
	}
	return res, nil
}

// copyStaged produces the records each output staged, in order, into the
// topic within txn's transaction, and returns how many it produced.
func (s *Sink) copyStaged(ctx context.Context, txn *kgo.Client, info topicInfo, outs []staged) (int64, error) {
	var (
		mu      sync.Mutex
		perr    error
		n       int64
		spread  int
		keyPart = kgo.StickyKeyPartitioner(nil).ForTopic(s.cfg.Topic)
		parts   = len(info.partitions)
	)
	done := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			if perr == nil {
				perr = err
			}
			mu.Unlock()
		}
	}
	for _, st := range outs {
		found := int64(0)
		err := readRange(ctx, txn, s.adm, st.offsetRange, false, func(recs []*kgo.Record) error {
			for _, r := range recs {
				attempt, user, ok := stagedHeaders(r)
				if !ok || attempt != st.Attempt {
					continue
				}
				found++
				out := &kgo.Record{Topic: s.cfg.Topic, Key: r.Key, Value: r.Value, Timestamp: r.Timestamp, Headers: user}
				var part int
				switch {
				case r.Key != nil:
					part = keyPart.Partition(out, parts)
				default:
					part = spread % parts
					spread++
				}
				out.Partition = info.partitions[part]
				txn.Produce(ctx, out, done)
				n++
			}
			return nil
		})
		if err != nil {
			return n, fmt.Errorf("copy staged records %s: %w", st.offsetRange, err)
		}
		if found != st.Records {
			return n, permanentf("staged records %s hold %d records of attempt %s, its task wrote %d (did retention delete them?)", st.offsetRange, found, st.Attempt, st.Records)
		}
	}
	if err := txn.Flush(ctx); err != nil {
		return n, fmt.Errorf("produce to %s: %w", s.cfg.Topic, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if perr != nil {
		return n, fmt.Errorf("produce to %s: %w", s.cfg.Topic, perr)
	}
	return n, nil
}

// stagedHeaders splits the headers of a staged record: the attempt that
// staged it (the last header) and the record's own headers before it.
// ok is false for a record of no attempt.
func stagedHeaders(r *kgo.Record) (attempt string, user []kgo.RecordHeader, ok bool) {
	hs := r.Headers
	if len(hs) == 0 || hs[len(hs)-1].Key != headerAttempt {
		return "", nil, false
	}
	return string(hs[len(hs)-1].Value), hs[:len(hs)-1], true
}

// committed reports whether the marker group holds an offset of topic,
// once no transaction that commits one is pending.
func committed(ctx context.Context, adm *kadm.Client, group, topic string) (bool, error) {
	off, err := groupOffset(ctx, adm, group, topic)
	return off >= 0, err
}

// retryUnstable calls fetch until it returns no error that a wait cures:
// an offset commit of a pending transaction, a retriable error. A group
// that does not exist (kfake says so where Kafka answers with no offsets)
// is no error.
func retryUnstable(ctx context.Context, fetch func() error) error {
	backoff := 100 * time.Millisecond
	for {
		err := fetch()
		switch {
		case err == nil, errors.Is(err, kerr.GroupIDNotFound):
			return nil
		case !errors.Is(err, kerr.UnstableOffsetCommit) && !kerr.IsRetriable(err):
			return err
		}
		if !sleepCtx(ctx, backoff) {
			return ctx.Err()
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// commitMarker commits an offset of group for partition 0 of topic
// within txn's open transaction: the marker that the transaction
// happened. Its metadata names what committed it.
func commitMarker(ctx context.Context, txn *kgo.Client, txnID, group, topic string, topicID [16]byte, offset int64, metadata string) error {
	return commitOffsets(ctx, txn, txnID, group, topic, topicID, map[int32]int64{0: offset}, metadata)
}

// commitOffsets commits offsets of the partitions of topic for group
// within txn's open transaction.
func commitOffsets(ctx context.Context, txn *kgo.Client, txnID, group, topic string, topicID [16]byte, offsets map[int32]int64, metadata string) error {
	id, epoch, err := txn.ProducerID(ctx)
	if err != nil {
		return fmt.Errorf("producer id: %w", err)
	}
	add := kmsg.NewPtrAddOffsetsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = txnID, id, epoch, group
	aresp, err := add.RequestWith(ctx, txn)
	if err == nil {
		err = kerr.ErrorForCode(aresp.ErrorCode)
	}
	if err != nil {
		return fmt.Errorf("add the offsets of %s to the transaction: %w", group, err)
	}
	req := kmsg.NewPtrTxnOffsetCommitRequest()
	req.TransactionalID, req.Group, req.ProducerID, req.ProducerEpoch = txnID, group, id, epoch
	req.Generation, req.MemberID = -1, ""
	t := kmsg.NewTxnOffsetCommitRequestTopic()
	t.Topic, t.TopicID = topic, topicID
	for part, offset := range offsets {
		p := kmsg.NewTxnOffsetCommitRequestTopicPartition()
		p.Partition, p.Offset, p.LeaderEpoch, p.Metadata = part, offset, -1, &metadata
		t.Partitions = append(t.Partitions, p)
	}
	req.Topics = append(req.Topics, t)
	resp, err := req.RequestWith(ctx, txn)
	if err != nil {
		return fmt.Errorf("commit the offset of %s in the transaction: %w", group, err)
	}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
				return fmt.Errorf("commit the offset of %s in the transaction: %w", group, err)
			}
		}
	}
	return nil
}

// Abort leaves a failed run's staged records to the staging topic's
// retention: no commit names them.
func (s *Sink) Abort(context.Context, string) error { return nil }
