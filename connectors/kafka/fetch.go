package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// offsetRange is the bounded input of a task, or the staged output of
// one: offsets [From, To) of one partition of a topic.
type offsetRange struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	From      int64  `json:"from"`
	To        int64  `json:"to"`
	// Of is, in the task of a passthrough, how many partitions the topic
	// has: the target must have as many.
	Of int32 `json:"of,omitempty"`
}

func (r offsetRange) String() string {
	return fmt.Sprintf("%s/%d[%d,%d)", r.Topic, r.Partition, r.From, r.To)
}

// fetchBytes bounds the records one fetch of one partition returns.
const fetchBytes = 8 << 20

// readRange reads the records of r, in offset order, handing each fetch's
// to fn (which must not keep the slice). It sends its own Fetch requests
// to the partition's leader, so it knows exactly where it is: records of
// aborted transactions (when committed is set) and transaction markers
// are passed over, and the read ends once the fetch position reaches
// r.To even when no record has offset r.To-1. Records below the
// partition's log start (deleted by retention) are a permanent error
// naming them. ctx bounds the read.
func readRange(ctx context.Context, cl *kgo.Client, adm *kadm.Client, r offsetRange, committed bool, fn func([]*kgo.Record) error) error {
	var isolation int8
	opts := kgo.ProcessFetchPartitionOpts{Topic: r.Topic, Partition: r.Partition, IsolationLevel: kgo.ReadUncommitted()}
	if committed {
		isolation = 1
		opts.IsolationLevel = kgo.ReadCommitted()
	}
	decompress := kgo.DefaultDecompressor()
	var leader *kgo.Broker
	var topicID [16]byte
	backoff := 50 * time.Millisecond
	retry := func(err error) error {
		leader = nil
		if !sleepCtx(ctx, backoff) {
			return ctx.Err()
		}
		backoff = min(backoff*2, 2*time.Second)
		return nil
	}
	off := r.From
	for off < r.To {
		if err := ctx.Err(); err != nil {
			return err
		}
		if leader == nil {
			md, err := adm.Metadata(ctx, r.Topic)
			if err != nil {
				if rerr := retry(err); rerr != nil {
					return rerr
				}
				continue
			}
			td := md.Topics[r.Topic]
			p, ok := td.Partitions[r.Partition]
			switch {
			case td.Err != nil && errors.Is(td.Err, kerr.UnknownTopicOrPartition), td.Err == nil && !ok:
				return permanentf("read %s: the partition does not exist", r)
			case td.Err != nil || p.Err != nil || p.Leader < 0:
				if rerr := retry(err); rerr != nil {
					return rerr
				}
				continue
			}
			topicID = td.ID
			leader = cl.Broker(int(p.Leader))
		}
		req := kmsg.NewPtrFetchRequest()
		req.MaxWaitMillis = 500
		req.MinBytes = 1
		req.MaxBytes = fetchBytes
		req.IsolationLevel = isolation
		t := kmsg.NewFetchRequestTopic()
		t.Topic, t.TopicID = r.Topic, topicID
		p := kmsg.NewFetchRequestTopicPartition()
		p.Partition, p.FetchOffset, p.PartitionMaxBytes = r.Partition, off, fetchBytes
		t.Partitions = append(t.Partitions, p)
		req.Topics = append(req.Topics, t)
		kresp, err := leader.Request(ctx, req)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if rerr := retry(err); rerr != nil {
				return rerr
			}
			continue
		}
		resp := kresp.(*kmsg.FetchResponse)
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			if rerr := retry(err); rerr != nil {
				return rerr
			}
			continue
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			if rerr := retry(nil); rerr != nil {
				return rerr
			}
			continue
		}
		rp := &resp.Topics[0].Partitions[0]
		if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
			if errors.Is(err, kerr.OffsetOutOfRange) {
				if rp.LogStartOffset > off {
					return permanentf("read %s: records [%d, %d) were deleted (retention) before they were read: the partition starts at %d now", r, off, min(rp.LogStartOffset, r.To), rp.LogStartOffset)
				}
				return permanentf("read %s: offset %d is past the partition's end %d (was the topic deleted and created again?)", r, off, rp.HighWatermark)
			}
			if rerr := retry(err); rerr != nil {
				return rerr
			}
			continue
		}
		opts.Offset = off
		fp, next := kgo.ProcessFetchPartition(opts, rp, decompress, nil)
		if fp.Err != nil {
			return fmt.Errorf("read %s at offset %d: %w", r, off, fp.Err)
		}
		recs := fp.Records
		for len(recs) > 0 && recs[len(recs)-1].Offset >= r.To {
			recs = recs[:len(recs)-1]
		}
		if len(recs) > 0 {
			if err := fn(recs); err != nil {
				return err
			}
		}
		if next <= off {
			// Nothing new yet: the range ends at or before the end the
			// plan saw, so what is missing is being replicated (or a
			// transaction is still open under read_committed); wait.
			if committed && rp.LastStableOffset >= 0 && rp.LastStableOffset <= off || rp.HighWatermark <= off {
				if !sleepCtx(ctx, 50*time.Millisecond) {
					return ctx.Err()
				}
			}
			continue
		}
		off = next
		backoff = 50 * time.Millisecond
	}
	return nil
}

// sleepCtx waits d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// ReadAll reads every record of topic the cluster holds now, partition
// by partition in offset order: up to each partition's last stable
// offset with committed set (what read_committed consumers see), else
// its high watermark. It is for tests and tools that check a topic.
func ReadAll(ctx context.Context, c Cluster, topic string, committed bool) ([]*kgo.Record, error) {
	cl, err := c.newClient()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	info, err := describeTopic(ctx, adm, topic)
	if err != nil {
		return nil, err
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list the start offsets of %s: %w", topic, err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if committed {
		ends, err = adm.ListCommittedOffsets(ctx, topic)
	}
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list the end offsets of %s: %w", topic, err)
	}
	var out []*kgo.Record
	for _, p := range info.partitions {
		s, _ := starts.Lookup(topic, p)
		e, _ := ends.Lookup(topic, p)
		r := offsetRange{Topic: topic, Partition: p, From: s.Offset, To: e.Offset}
		if err := readRange(ctx, cl, adm, r, committed, func(recs []*kgo.Record) error {
			out = append(out, recs...)
			return nil
		}); err != nil {
			return nil, err
		}
	}
	return out, nil
}
