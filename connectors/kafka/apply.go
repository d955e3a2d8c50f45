package kafka

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// The values of ApplierConfig.Envelope.
const (
	// EnvelopeDebezium writes Debezium's change event envelope: before,
	// after, source, op (c, u, d, r, t) and ts_ms, keyed by the key
	// columns' values as a JSON object.
	EnvelopeDebezium = "debezium"
	// EnvelopeSluice writes each event as Sluice's change event JSON (what
	// SLUICE_CDC carries), keyed the same way.
	EnvelopeSluice = "sluice"
)

// ApplierConfig configures the Applier of a cdc_apply pipeline into
// Kafka: its sink configuration.
type ApplierConfig struct {
	Cluster
	// TopicPrefix names the topics: <prefix>.<schema>.<table>; empty means
	// the upstream cdc pipeline's name.
	TopicPrefix string `json:"topic_prefix,omitempty"`
	// Envelope is debezium (the default) or sluice.
	Envelope string `json:"envelope,omitempty"`
	// Tombstones, with envelope debezium, follows each delete with a
	// tombstone (the key and a null value), so a compacted topic forgets
	// the row; nil means true, as Debezium does.
	Tombstones *bool `json:"tombstones,omitempty"`
	// Partitions is the partition count of the topics the applier creates
	// (a table's, and its state topic, which has one); 0 means 1.
	Partitions int32 `json:"partitions,omitempty"`
	// Replication of the topics it creates; 0 means the brokers' default.
	Replication int16 `json:"replication,omitempty"`
	// TransactionTimeout bounds the transaction of one batch; empty means
	// 1m.
	TransactionTimeout string `json:"transaction_timeout,omitempty"`
}

// Validate checks the configuration without I/O.
func (c ApplierConfig) Validate() error {
	if err := c.Cluster.Validate(); err != nil {
		return err
	}
	if c.TopicPrefix != "" {
		if err := checkTopic("topic_prefix", c.TopicPrefix); err != nil {
			return err
		}
	}
	switch c.Envelope {
	case "", EnvelopeDebezium, EnvelopeSluice:
	default:
		return &connectors.FieldError{Field: "envelope", Msg: fmt.Sprintf("unknown envelope %q (want debezium or sluice)", c.Envelope)}
	}
	if c.Tombstones != nil && c.Envelope == EnvelopeSluice {
		return &connectors.FieldError{Field: "tombstones", Msg: "is for envelope debezium"}
	}
	switch {
	case c.Partitions < 0:
		return &connectors.FieldError{Field: "partitions", Msg: "must be positive"}
	case c.Replication < 0:
		return &connectors.FieldError{Field: "replication", Msg: "must be positive (0: the brokers' default)"}
	}
	if d, err := durationOr(c.TransactionTimeout, 0); err != nil || d < 0 || d > 15*time.Minute {
		return &connectors.FieldError{Field: "transaction_timeout", Msg: fmt.Sprintf("%q is not a positive duration of at most 15m", c.TransactionTimeout)}
	}
	return nil
}

func parseApplierConfig(raw json.RawMessage) (ApplierConfig, error) {
	var c ApplierConfig
	if err := connectors.DecodeConfig(raw, &c); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// ValidateApplier checks the sink configuration of a cdc_apply pipeline
// without I/O.
func ValidateApplier(raw json.RawMessage) error {
	_, err := parseApplierConfig(raw)
	return err
}

func openApplier(_ context.Context, req connectors.StreamRequest) (connectors.Applier, error) {
	c, err := parseApplierConfig(req.Config)
	if err != nil {
		return nil, err
	}
	return NewApplier(c, req.Pipeline, req.Settings.Upstream)
}

// Applier writes the change events of a cdc_apply pipeline to a topic per
// table, <prefix>.<schema>.<table>, keyed by the row's key columns, so the
// changes of one row stay on one partition in commit order. Each batch is
// one Kafka transaction of the pipeline's transactional producer
// (sluice.cdc.<pipeline>) that also commits the batch's last stream
// sequence as the offset of the consumer group sluice.cdc.<pipeline> on
// the state topic <prefix>.sluice-state: the position is stored in Kafka
// with the events, so each event is in the topics exactly once, for
// read_committed consumers, across a worker killed mid-batch (the next
// worker's producer fences the dead one's and aborts its transaction).
// The state topic also keeps the last column description of each table
// (Relation), so typed values stay typed after a restart.
type Applier struct {
	cfg      ApplierConfig
	pipeline string
	prefix   string
	cl       *kgo.Client
	adm      *kadm.Client
	txnID    string

	applied   uint64
	opened    bool
	state     topicInfo
	topics    map[string][]int32          // partitions of the topics known to exist
	relations map[string]*protocol.Schema // table -> its last description
	columns   map[string]map[string]protocol.Column
}

// NewApplier opens the Applier of pipeline, whose events come from the
// cdc pipeline upstream; it connects lazily.
func NewApplier(c ApplierConfig, pipeline, upstream string) (*Applier, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	prefix := c.TopicPrefix
	if prefix == "" {
		prefix = upstream
	}
	if err := checkTopic("topic_prefix", prefix); err != nil {
		return nil, err
	}
	timeout, _ := durationOr(c.TransactionTimeout, time.Minute)
	txnID := "sluice.cdc." + pipeline
	cl, err := c.newClient(kgo.TransactionalID(txnID), kgo.TransactionTimeout(timeout), kgo.ProducerLinger(2*time.Millisecond),
		kgo.RecordPartitioner(keyOrManual{}))
	if err != nil {
		return nil, err
	}
	return &Applier{cfg: c, pipeline: pipeline, prefix: prefix, cl: cl, adm: kadm.NewClient(cl), txnID: txnID,
		topics: map[string][]int32{}, relations: map[string]*protocol.Schema{}, columns: map[string]map[string]protocol.Column{}}, nil
}

// Close closes the client; a batch not committed is aborted by the next
// Applier's producer.
func (a *Applier) Close() error {
	a.cl.Close()
	return nil
}

func (a *Applier) stateTopic() string { return a.prefix + ".sluice-state" }
func (a *Applier) group() string      { return "sluice.cdc." + a.pipeline }

// Applied fences any earlier producer of the pipeline (aborting its open
// transaction), then reads the position and the tables' descriptions
// from the state topic.
func (a *Applier) Applied(ctx context.Context) (uint64, error) {
	if err := ensureTopic(ctx, a.adm, a.stateTopic(), 1, a.cfg.Replication, map[string]*string{"cleanup.policy": ptr("compact")}); err != nil {
		return 0, err
	}
	info, err := describeTopic(ctx, a.adm, a.stateTopic())
	if err != nil {
		return 0, err
	}
	a.state = info
	if _, _, err := a.cl.ProducerID(ctx); err != nil {
		return 0, fmt.Errorf("init the transactional producer %s: %w", a.txnID, err)
	}
	offs, err := groupOffset(ctx, a.adm, a.group(), a.stateTopic())
	if err != nil {
		return 0, err
	}
	recs, err := ReadAll(ctx, a.cfg.Cluster, a.stateTopic(), true)
	if err != nil {
		return 0, fmt.Errorf("read the state topic %s: %w", a.stateTopic(), err)
	}
	for _, r := range recs {
		var s protocol.Schema
		if len(r.Value) == 0 || json.Unmarshal(r.Value, &s) != nil {
			continue
		}
		a.setRelation(string(r.Key), &s)
	}
	a.applied, a.opened = uint64(max(offs, 0)), true
	return a.applied, nil
}

func ptr[T any](v T) *T { return &v }

// groupOffset returns the offset group committed for partition 0 of
// topic, -1 when it has none, once no transaction commits one.
func groupOffset(ctx context.Context, adm *kadm.Client, group, topic string) (int64, error) {
	var off int64 = -1
	err := retryUnstable(ctx, func() error {
		resps, err := adm.FetchOffsets(kadm.RequireStable(ctx), group)
		if err == nil {
			err = resps.Error()
		}
		if err == nil {
			if o, ok := resps.Lookup(topic, 0); ok {
				off = o.At
			}
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("fetch the offsets of %s: %w", group, err)
	}
	return off, nil
}

func (a *Applier) setRelation(table string, s *protocol.Schema) {
	a.relations[table] = s
	cols := map[string]protocol.Column{}
	for _, c := range s.Columns {
		cols[c.Name] = c
	}
	a.columns[table] = cols
}

// topicOf names the topic of a table: <prefix>.<schema>.<table>, each
// character a topic name cannot hold replaced by '_'.
func (a *Applier) topicOf(schema, table string) string {
	clean := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r == '.' || r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
				return r
			}
			return '_'
		}, s)
	}
	t := a.prefix + "." + clean(schema) + "." + clean(table)
	return t[:min(len(t), 249)]
}

// Apply writes the events after the applied position in one transaction
// with the position of the last one.
func (a *Applier) Apply(ctx context.Context, events []connectors.Event) error {
	if !a.opened {
		if _, err := a.Applied(ctx); err != nil {
			return err
		}
	}
	var evs []connectors.Event
	for _, e := range events {
		if e.Seq > a.applied {
			evs = append(evs, e)
		}
	}
	if len(evs) == 0 {
		return nil
	}
	// The topics first: creating one inside a transaction would hold it.
	for _, e := range evs {
		t := a.topicOf(e.Schema, e.Table)
		if a.topics[t] != nil {
			continue
		}
		parts := max(a.cfg.Partitions, 1)
		if err := ensureTopic(ctx, a.adm, t, parts, a.cfg.Replication, nil); err != nil {
			return err
		}
		info, err := describeTopic(ctx, a.adm, t)
		if err != nil {
			return err
		}
		a.topics[t] = info.partitions
	}
	if err := a.cl.BeginTransaction(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	var (
		mu   sync.Mutex
		perr error
	)
	done := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			perr = cmp(perr, err)
			mu.Unlock()
		}
	}
	// A relation changed in this batch is kept in the state topic, in the
	// same transaction; until it commits the batch's relations are the
	// applier's own.
	prevRel := map[string]*protocol.Schema{}
	var out []*kgo.Record
	for _, e := range evs {
		table := e.Schema + "." + e.Table
		if e.Relation != nil {
			if _, ok := prevRel[table]; !ok {
				prevRel[table] = a.relations[table]
			}
			a.setRelation(table, e.Relation)
			rel, err := json.Marshal(e.Relation)
			if err != nil {
				return a.abort(ctx, fmt.Errorf("encode the relation of %s: %w", table, err))
			}
			out = append(out, &kgo.Record{Topic: a.stateTopic(), Partition: a.state.partitions[0], Key: []byte(table), Value: rel})
		}
		recs, err := a.records(e)
		if err != nil {
			return a.abort(ctx, err)
		}
		out = append(out, recs...)
	}
	restore := func() {
		for table, s := range prevRel {
			if s == nil {
				delete(a.relations, table)
				delete(a.columns, table)
			} else {
				a.setRelation(table, s)
			}
		}
	}
	for _, r := range out {
		a.cl.Produce(ctx, r, done)
	}
	err := a.cl.Flush(ctx)
	mu.Lock()
	err = cmp(err, perr)
	mu.Unlock()
	last := evs[len(evs)-1].Seq
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = commitMarker(ctx, a.cl, a.txnID, a.group(), a.stateTopic(), a.state.id, int64(last), "")
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		restore()
		return a.abort(ctx, err)
	}
	// The commit is not cut short by ctx: its outcome must be known.
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := a.cl.EndTransaction(ectx, kgo.TryCommit); err != nil {
		restore()
		a.opened = false // the position is read again from Kafka
		return fmt.Errorf("commit the transaction of events up to seq %d: %w", last, err)
	}
	a.applied = last
	return nil
}

func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// abort aborts the open transaction and returns err.
func (a *Applier) abort(ctx context.Context, err error) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if aerr := a.cl.AbortBufferedRecords(actx); aerr != nil {
		err = errors.Join(err, aerr)
	}
	if aerr := a.cl.EndTransaction(actx, kgo.TryAbort); aerr != nil {
		err = errors.Join(err, fmt.Errorf("abort the transaction: %w", aerr))
	}
	return err
}

// records returns the records of one event in the configured envelope.
func (a *Applier) records(e connectors.Event) ([]*kgo.Record, error) {
	topic := a.topicOf(e.Schema, e.Table)
	cols := a.columns[e.Schema+"."+e.Table]
	keyOf := func(row protocol.Row) []byte {
		if len(e.Key) == 0 || row == nil {
			return nil
		}
		b := []byte{'{'}
		for i, k := range e.Key {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			v, ok := row[k]
			if !ok {
				v = protocol.NullValue
			}
			b = appendValue(b, cols[k], v)
		}
		return append(b, '}')
	}
	ts := e.CommitTime
	if a.cfg.Envelope == EnvelopeSluice {
		var key []byte
		switch e.Op {
		case protocol.OpDelete:
			key = keyOf(e.Before)
		case protocol.OpInsert, protocol.OpUpdate, protocol.OpRead:
			key = keyOf(e.After)
		}
		v := e.ChangeEvent.AppendJSON(nil)
		if key == nil && (e.Op == protocol.OpTruncate || e.Op == protocol.OpSnapshot) {
			// An event of the whole table goes to every partition, in
			// order with the events of the keys each holds.
			var out []*kgo.Record
			for _, p := range a.topics[topic] {
				out = append(out, &kgo.Record{Topic: topic, Partition: p, Value: v, Timestamp: ts})
			}
			return out, nil
		}
		return []*kgo.Record{{Topic: topic, Key: key, Value: v, Timestamp: ts}}, nil
	}
	tombstones := a.cfg.Tombstones == nil || *a.cfg.Tombstones
	one := func(op string, before, after protocol.Row, key []byte) *kgo.Record {
		return &kgo.Record{Topic: topic, Key: key, Value: a.debezium(e, op, before, after, cols), Timestamp: ts}
	}
	del := func(before protocol.Row) []*kgo.Record {
		key := keyOf(before)
		out := []*kgo.Record{one("d", before, nil, key)}
		if tombstones && key != nil {
			out = append(out, &kgo.Record{Topic: topic, Key: key, Timestamp: ts})
		}
		return out
	}
	switch e.Op {
	case protocol.OpInsert:
		return []*kgo.Record{one("c", nil, e.After, keyOf(e.After))}, nil
	case protocol.OpRead:
		return []*kgo.Record{one("r", nil, e.After, keyOf(e.After))}, nil
	case protocol.OpUpdate:
		newKey := keyOf(e.After)
		if e.Before != nil {
			if oldKey := keyOf(e.Before); oldKey != nil && string(oldKey) != string(newKey) {
				// A key change is a delete of the old key and a create of
				// the new one, as Debezium writes it: each key's events
				// stay on its partition.
				return append(del(e.Before), one("c", nil, e.After, newKey)), nil
			}
		}
		return []*kgo.Record{one("u", e.Before, e.After, newKey)}, nil
	case protocol.OpDelete:
		return del(e.Before), nil
	case protocol.OpTruncate:
		return []*kgo.Record{one("t", nil, nil, nil)}, nil
	case protocol.OpSnapshot:
		return nil, nil // no Debezium event: read events follow
	}
	return nil, connectors.Permanent(fmt.Errorf("event seq %d: unknown op %q", e.Seq, e.Op))
}

// debezium renders the value of an event in Debezium's envelope.
func (a *Applier) debezium(e connectors.Event, op string, before, after protocol.Row, cols map[string]protocol.Column) []byte {
	b := []byte(`{"before":`)
	b = a.appendRow(b, e, before, cols)
	b = append(b, `,"after":`...)
	b = a.appendRow(b, e, after, cols)
	b = append(b, `,"source":{"version":"sluice-`...)
	b = strconv.AppendInt(b, protocol.Version, 10)
	b = append(b, `","connector":"postgresql","name":`...)
	b = appendJSONString(b, a.prefix)
	b = append(b, `,"ts_ms":`...)
	b = strconv.AppendInt(b, e.CommitTime.UnixMilli(), 10)
	b = append(b, `,"snapshot":`...)
	if e.Op == protocol.OpRead {
		b = append(b, `"true"`...)
	} else {
		b = append(b, `"false"`...)
	}
	b = append(b, `,"db":`...)
	b = appendJSONString(b, e.Database)
	b = append(b, `,"sequence":`...)
	b = appendJSONString(b, `["`+e.CommitLSN+`","`+e.LSN+`"]`)
	b = append(b, `,"schema":`...)
	b = appendJSONString(b, e.Schema)
	b = append(b, `,"table":`...)
	b = appendJSONString(b, e.Table)
	b = append(b, `,"txId":`...)
	b = strconv.AppendUint(b, uint64(e.Xid), 10)
	b = append(b, `,"lsn":`...)
	if lsn, ok := parseLSN(e.LSN); ok {
		b = strconv.AppendUint(b, lsn, 10)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"xmin":null},"op":"`...)
	b = append(b, op...)
	b = append(b, `","ts_ms":`...)
	b = strconv.AppendInt(b, e.CommitTime.UnixMilli(), 10)
	return append(b, `,"transaction":null}`...)
}

// appendRow appends a row as a JSON object, its columns in the table's
// order when its description is known, else by name; null for a nil row.
func (a *Applier) appendRow(b []byte, e connectors.Event, row protocol.Row, cols map[string]protocol.Column) []byte {
	if row == nil {
		return append(b, "null"...)
	}
	b = append(b, '{')
	n := 0
	add := func(name string, v protocol.Value) {
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = appendJSONString(b, name)
		b = append(b, ':')
		b = appendValue(b, cols[name], v)
	}
	seen := 0
	if rel := a.relations[e.Schema+"."+e.Table]; rel != nil {
		for _, c := range rel.Columns {
			if v, ok := row[c.Name]; ok {
				add(c.Name, v)
				seen++
			}
		}
	}
	if seen < len(row) {
		names := make([]string, 0, len(row))
		for k := range row {
			if _, known := cols[k]; !known || a.relations[e.Schema+"."+e.Table] == nil {
				names = append(names, k)
			}
		}
		slices.Sort(names)
		for _, k := range names {
			add(k, row[k])
		}
	}
	return append(b, '}')
}

// unavailable stands for a TOASTed value an update did not change, as
// Debezium writes it.
const unavailable = "__debezium_unavailable_value"

// appendValue appends v, a value in PostgreSQL's text form, as JSON of
// its column's type: numbers and booleans as JSON numbers and booleans,
// json documents embedded, bytea as base64, every other value (decimals,
// times, UUIDs, arrays) as its text. A column of unknown type is text.
func appendValue(b []byte, c protocol.Column, v protocol.Value) []byte {
	switch {
	case v.Unchanged:
		return appendJSONString(b, unavailable)
	case v.Null:
		return append(b, "null"...)
	}
	s := v.Text
	switch c.Type {
	case protocol.TypeBool:
		switch s {
		case "t", "true":
			return append(b, "true"...)
		case "f", "false":
			return append(b, "false"...)
		}
	case protocol.TypeInt16, protocol.TypeInt32, protocol.TypeInt64:
		if _, err := strconv.ParseInt(s, 10, 64); err == nil {
			return append(b, s...)
		}
	case protocol.TypeFloat32, protocol.TypeFloat64:
		if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
			return strconv.AppendFloat(b, f, 'g', -1, 64)
		}
	case protocol.TypeJSON:
		if json.Valid([]byte(s)) {
			return append(b, s...)
		}
	case protocol.TypeBytes:
		if raw, ok := decodeByteaHex(s); ok {
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, raw)
			return append(b, '"')
		}
	case protocol.TypeTimestampTZ:
		if t, ok := parsePGTimestampTZ(s); ok {
			b = append(b, '"')
			b = t.UTC().AppendFormat(b, time.RFC3339Nano)
			return append(b, '"')
		}
	}
	return appendJSONString(b, s)
}

// parseLSN parses a PostgreSQL LSN, "16/B374D848".
func parseLSN(s string) (uint64, bool) {
	hi, lo, ok := strings.Cut(s, "/")
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	return h<<32 | l, ok && err1 == nil && err2 == nil
}

// decodeByteaHex decodes bytea's hex output, \x0102.
func decodeByteaHex(s string) ([]byte, bool) {
	h, ok := strings.CutPrefix(s, `\x`)
	if !ok || len(h)%2 != 0 {
		return nil, false
	}
	out := make([]byte, len(h)/2)
	for i := range out {
		v, err := strconv.ParseUint(h[2*i:2*i+2], 16, 8)
		if err != nil {
			return nil, false
		}
		out[i] = byte(v)
	}
	return out, true
}

// parsePGTimestampTZ parses timestamptz's text output in the ISO style,
// "2026-11-25 10:00:00.123+01" (or +05:30).
func parsePGTimestampTZ(s string) (time.Time, bool) {
	for _, layout := range []string{"2006-01-02 15:04:05.999999999Z07", "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07:00:00"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// keyOrManual partitions a record with a key by the hash of its key, as
// Kafka's default partitioner does (a key's events stay on one partition,
// in order), and one without a key to the partition it names: the same
// events always land on the same partitions, however they are batched.
type keyOrManual struct{}

func (keyOrManual) ForTopic(topic string) kgo.TopicPartitioner {
	return keyOrManualTopic{key: kgo.StickyKeyPartitioner(nil).ForTopic(topic)}
}

type keyOrManualTopic struct{ key kgo.TopicPartitioner }

func (keyOrManualTopic) RequiresConsistency(*kgo.Record) bool { return true }

func (p keyOrManualTopic) Partition(r *kgo.Record, n int) int {
	if r.Key == nil {
		return int(r.Partition)
	}
	return p.key.Partition(r, n)
}
