package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/pipeline"
)

// columnsYAML declares the values' columns to the Sluice source, as the
// bare loop's Arrow schema has them.
const columnsYAML = "[{name: id, type: int64}, {name: customer, type: string}, {name: amount, type: float64}, {name: paid, type: bool}]"

// order is a source record's value.
type order struct {
	ID       int64   `json:"id"`
	Customer string  `json:"customer"`
	Amount   float64 `json:"amount"`
	Paid     bool    `json:"paid"`
}

var orderSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "customer", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "amount", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	{Name: "paid", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
}, nil)

// fill produces the source records, keyed by id, spread over the
// partitions, and returns the bytes of their values.
func (b *bench) fill(ctx context.Context) (int64, error) {
	var size int64
	const batch = 10_000
	recs := make([]*kgo.Record, 0, batch)
	for i := int64(1); i <= b.cfg.records; i++ {
		v, err := json.Marshal(order{ID: i, Customer: fmt.Sprintf("customer-%d", i%5000), Amount: float64(i%100000) / 100, Paid: i%3 != 0})
		if err != nil {
			return 0, err
		}
		size += int64(len(v))
		recs = append(recs, &kgo.Record{Topic: srcTopic, Key: fmt.Appendf(nil, "%d", i), Value: v})
		if len(recs) == batch || i == b.cfg.records {
			if err := b.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				return 0, fmt.Errorf("produce the source: %w", err)
			}
			recs = recs[:0]
		}
	}
	return size, nil
}

// consumeAll reads every record of srcTopic up to its current end with a
// fresh client, calling fn on each fetch's records.
func (b *bench) consumeAll(ctx context.Context, fn func([]*kgo.Record) error) (int64, error) {
	ends, err := kadm.NewClient(b.cl).ListEndOffsets(ctx, srcTopic)
	if err != nil {
		return 0, err
	}
	left := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[o.Partition] = o.Offset
		}
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.brokers...), kgo.ConsumeTopics(srcTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	var n int64
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return n, err
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("fetch %s/%d: %w", t, p, err) })
		if ferr != nil {
			return n, ferr
		}
		recs := fs.Records()
		n += int64(len(recs))
		if err := fn(recs); err != nil {
			return n, err
		}
		for _, r := range recs {
			if end, ok := left[r.Partition]; ok && r.Offset+1 >= end {
				delete(left, r.Partition)
			}
		}
	}
	return n, nil
}

// bareParquetLoop is (a): consume, decode, append to Arrow builders, and
// write one Parquet file as the files sink writes its (zstd level 1, row
// groups of at most 1M rows).
func (b *bench) bareParquetLoop(ctx context.Context, _ *devcluster.Cluster) error {
	m := b.ms["bare_consume_to_parquet"]
	secs, err := timed(m, func() error {
		f, err := os.Create(b.bareParquet)
		if err != nil {
			return err
		}
		defer f.Close()
		w := bufio.NewWriterSize(f, 1<<20)
		props := parquet.NewWriterProperties(parquet.WithCompression(compress.Codecs.Zstd), parquet.WithCompressionLevel(1),
			parquet.WithMaxRowGroupLength(1<<20), parquet.WithStats(true))
		fw, err := pqarrow.NewFileWriter(orderSchema, w, props, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
		if err != nil {
			return err
		}
		bld := array.NewRecordBuilder(memory.DefaultAllocator, orderSchema)
		defer bld.Release()
		ids, cust := bld.Field(0).(*array.Int64Builder), bld.Field(1).(*array.StringBuilder)
		amt, paid := bld.Field(2).(*array.Float64Builder), bld.Field(3).(*array.BooleanBuilder)
		flush := func() error {
			rec := bld.NewRecordBatch()
			defer rec.Release()
			return fw.WriteBuffered(rec)
		}
		var o order
		n, err := b.consumeAll(ctx, func(recs []*kgo.Record) error {
			for _, r := range recs {
				o = order{}
				if err := json.Unmarshal(r.Value, &o); err != nil {
					return fmt.Errorf("decode %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err)
				}
				ids.Append(o.ID)
				cust.Append(o.Customer)
				amt.Append(o.Amount)
				paid.Append(o.Paid)
				if ids.Len() == 64<<10 {
					if err := flush(); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if n != b.cfg.records {
			return fmt.Errorf("bare loop read %d records, want %d", n, b.cfg.records)
		}
		if err := flush(); err != nil {
			return err
		}
		if err := fw.Close(); err != nil {
			return err
		}
		return w.Flush()
	})
	if err != nil {
		return fmt.Errorf("(a): %w", err)
	}
	rows, err := parquetRows(b.bareParquet)
	if err != nil || rows != b.cfg.records {
		return fmt.Errorf("(a): the Parquet file holds %d rows (%v), want %d", rows, err, b.cfg.records)
	}
	if fi, err := os.Stat(b.bareParquet); err == nil {
		m.bytes = fi.Size()
	}
	m.Verified = "row count of the Parquet file equals the topic's records"
	fmt.Fprintf(b.stdout, " bare parquet %.2fs", secs)
	return nil
}

// parquetRows returns the rows a Parquet file's footer counts.
func parquetRows(path string) (int64, error) {
	r, err := file.OpenParquetFile(path, false)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	return r.NumRows(), nil
}

// sluiceToParquet is (b), checked: the committed dataset holds the
// topic's record count, and its checksum read back is the run's.
func (b *bench) sluiceToParquet(ctx context.Context, c *devcluster.Cluster) error {
	m := b.ms["sluice_kafka_to_parquet"]
	var tasks int
	var checksum string
	secs, err := timed(m, func() error {
		st, err := runPipeline(ctx, c, parquetPipeline)
		tasks, checksum = st.Tasks, st.Checksum
		if err == nil && st.Rows != b.cfg.records {
			err = fmt.Errorf("run %s: %d rows, want %d", st.RunID, st.Rows, b.cfg.records)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("(b): %w", err)
	}
	cur, err := files.Current(b.sluiceParquet)
	if err != nil {
		return err
	}
	got, err := files.ReadChecksum(cur, "parquet")
	if err != nil || got.Rows != b.cfg.records || got.String() != checksum {
		return fmt.Errorf("(b): %s holds %d rows %s (%v); the run reported %s, the topic has %d records", cur, got.Rows, got, err, checksum, b.cfg.records)
	}
	m.Tasks = tasks
	m.bytes = dirSize(cur)
	m.Verified = "row count of the committed Parquet files equals the topic's records; their checksum read back (files.ReadChecksum) is the run's"
	fmt.Fprintf(b.stdout, ", sluice parquet %.2fs", secs)
	return nil
}

// dirSize is the size of the files under dir.
func dirSize(dir string) int64 {
	var n int64
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && !e.IsDir() {
			n += fi.Size()
		}
	}
	return n
}

// bareProduceLoop is (c): consume and produce each record (key, value,
// timestamp) to bareOutTopic's same partition in one transaction, as a
// run of the Kafka sink is visible at once.
func (b *bench) bareProduceLoop(ctx context.Context, _ *devcluster.Cluster) error {
	m := b.ms["bare_consume_produce"]
	before, err := b.endOffsets(ctx, bareOutTopic)
	if err != nil {
		return err
	}
	secs, err := timed(m, func() error {
		txn, err := kgo.NewClient(kgo.SeedBrokers(b.brokers...), kgo.TransactionalID("bench-bare"),
			kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5e6))
		if err != nil {
			return err
		}
		defer txn.Close()
		if err := txn.BeginTransaction(); err != nil {
			return err
		}
		var perr error
		done := func(_ *kgo.Record, err error) {
			if err != nil && perr == nil {
				perr = err
			}
		}
		if _, err := b.consumeAll(ctx, func(recs []*kgo.Record) error {
			for _, r := range recs {
				txn.Produce(ctx, &kgo.Record{Topic: bareOutTopic, Partition: r.Partition, Key: r.Key, Value: r.Value, Timestamp: r.Timestamp}, done)
			}
			return nil
		}); err != nil {
			return err
		}
		if err := txn.Flush(ctx); err != nil {
			return err
		}
		if perr != nil {
			return perr
		}
		return txn.EndTransaction(ctx, kgo.TryCommit)
	})
	if err != nil {
		return fmt.Errorf("(c): %w", err)
	}
	if err := b.checkAppended(ctx, bareOutTopic, before, int64(b.cfg.partitions)); err != nil {
		return fmt.Errorf("(c): %w", err)
	}
	m.Verified = "the target topic grew by the source's records and one commit marker a partition, no transaction left open"
	fmt.Fprintf(b.stdout, ", bare produce %.2fs", secs)
	return nil
}

// sluiceToKafka is (d), checked like (c).
func (b *bench) sluiceToKafka(ctx context.Context, c *devcluster.Cluster) error {
	return b.runIntoTopic(ctx, c, b.ms["sluice_kafka_to_kafka"], kafkaPipeline, sluiceOutTopic, "(d)", "sluice kafka", int64(b.cfg.partitions))
}

// sluicePassthrough is (e), checked like (c): a new passthrough pipeline
// copies the whole topic into passOutTopic, partition to partition, in
// transactions of at most records-per-task records of one partition each.
func (b *bench) sluicePassthrough(ctx context.Context, c *devcluster.Cluster) error {
	ends, err := kadm.NewClient(b.cl).ListEndOffsets(ctx, srcTopic)
	if err != nil {
		return err
	}
	var txns int64
	ends.Each(func(o kadm.ListedOffset) { txns += (o.Offset + b.cfg.perTask - 1) / b.cfg.perTask })
	b.passes++
	name := fmt.Sprintf("%s-%d", passPipeline, b.passes)
	text := fmt.Sprintf("name: %s\npattern: passthrough\nsource: {kind: kafka, brokers: [%q], topic: %s, records_per_task: %d}\nsink: {kind: kafka, brokers: [%q], topic: %s}\n",
		name, b.brokers[0], srcTopic, b.cfg.perTask, b.brokers[0], passOutTopic)
	spec, err := pipeline.Load([]byte(text), "bench", b.reg, os.LookupEnv)
	if err != nil {
		return err
	}
	if _, err := c.Client.Apply(ctx, spec); err != nil {
		return fmt.Errorf("apply %s: %w", name, err)
	}
	return b.runIntoTopic(ctx, c, b.ms["sluice_kafka_passthrough"], name, passOutTopic, "(e)", "sluice passthrough", txns)
}

// runIntoTopic times a run of pipeline name into topic as m, checking it
// like (c), with markers transaction markers.
func (b *bench) runIntoTopic(ctx context.Context, c *devcluster.Cluster, m *measurement, name, topic, label, short string, markers int64) error {
	before, err := b.endOffsets(ctx, topic)
	if err != nil {
		return err
	}
	var tasks int
	secs, err := timed(m, func() error {
		st, err := runPipeline(ctx, c, name)
		tasks = st.Tasks
		if err == nil && st.Rows != b.cfg.records {
			err = fmt.Errorf("run %s: %d rows, want %d", st.RunID, st.Rows, b.cfg.records)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	if err := b.checkAppended(ctx, topic, before, markers); err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	m.Tasks = tasks
	m.Verified = "the target topic grew by the source's records and one commit marker a transaction, no transaction left open"
	fmt.Fprintf(b.stdout, ", %s %.2fs", short, secs)
	return nil
}

// checkAppended checks that topic grew by the source's records and
// markers commit markers (one a partition of each transaction), all of it
// committed: the last stable offset of every partition is its end.
func (b *bench) checkAppended(ctx context.Context, topic string, before, markers int64) error {
	after, err := b.endOffsets(ctx, topic)
	if err != nil {
		return err
	}
	if want := b.cfg.records + markers; after-before != want {
		return fmt.Errorf("%s grew by %d offsets, want %d records and %d commit markers", topic, after-before, b.cfg.records, markers)
	}
	return nil
}

// endOffsets sums the end offsets of topic's partitions, after checking
// that no transaction is open in any (its last stable offset is its end).
func (b *bench) endOffsets(ctx context.Context, topic string) (int64, error) {
	adm := kadm.NewClient(b.cl)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, err
	}
	stable, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		return 0, err
	}
	var sum int64
	var oerr error
	ends.Each(func(o kadm.ListedOffset) {
		sum += o.Offset
		if s, ok := stable.Lookup(topic, o.Partition); !ok || s.Offset != o.Offset {
			oerr = fmt.Errorf("%s/%d: last stable offset %d, end %d: a transaction is open", topic, o.Partition, s.Offset, o.Offset)
		}
		if o.Err != nil {
			oerr = o.Err
		}
	})
	return sum, oerr
}
