package kafka

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/arrowconv"
	"github.com/sluicehq/sluice/protocol"
)

// Source reads a topic: a task is one partition's offset range.
type Source struct {
	cfg SourceConfig
	cl  *kgo.Client
	adm *kadm.Client
}

// NewSource opens a source; it connects lazily.
func NewSource(c SourceConfig) (*Source, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	cl, err := c.newClient()
	if err != nil {
		return nil, err
	}
	return &Source{cfg: c, cl: cl, adm: kadm.NewClient(cl)}, nil
}

// Close closes the client.
func (s *Source) Close() error {
	s.cl.Close()
	return nil
}

// Plan splits the run into tasks of one partition's offset range each,
// at most RecordsPerTask offsets long, up to the end each partition has
// now (its last stable offset under read_committed). A full load reads
// each partition from Start; a run by position from the watermark (a
// partition it does not name, new since, from its first offset), at most
// MaxRecordsPerRun offsets in all, and returns the offsets it reaches as
// the watermark; a run with a window reads the offsets of the records
// whose timestamps lie in it, which needs the pipeline's delta column to
// be the column carrying the record timestamp.
func (s *Source) Plan(ctx context.Context, req connectors.PlanRequest) (connectors.Plan, error) {
	return s.plan(ctx, req, false)
}

// plan is Plan; with whole set, each partition is one task, whatever its
// range holds (a passthrough's: see PlanUnits), and each task's spec
// names how many partitions the topic has.
func (s *Source) plan(ctx context.Context, req connectors.PlanRequest, whole bool) (connectors.Plan, error) {
	topic := s.cfg.Topic
	var keep map[int32]int64 // positions of partitions a run does not read
	info, err := describeTopic(ctx, s.adm, topic)
	if err != nil {
		return connectors.Plan{}, err
	}
	all := int32(len(info.partitions))
	starts, err := s.listOffsets(ctx, "start", func() (kadm.ListedOffsets, error) { return s.adm.ListStartOffsets(ctx, topic) })
	if err != nil {
		return connectors.Plan{}, err
	}
	ends, err := s.listOffsets(ctx, "end", func() (kadm.ListedOffsets, error) {
		if s.cfg.committed() {
			return s.adm.ListCommittedOffsets(ctx, topic)
		}
		return s.adm.ListEndOffsets(ctx, topic)
	})
	if err != nil {
		return connectors.Plan{}, err
	}
	// A partition the offset listings do not have yet (just added) is
	// left to the next run.
	info.partitions = slices.DeleteFunc(info.partitions, func(p int32) bool {
		_, s := starts[p]
		_, e := ends[p]
		return !s || !e
	})
	if v, ok := req.Params[connectors.ParamPartition]; ok {
		// One partition of the topic: the others keep their position.
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || !slices.Contains(info.partitions, int32(n)) {
			return connectors.Plan{}, permanentf("params: partition %q is not a partition of %s (it has %d)", v, topic, len(info.partitions))
		}
		only := int32(n)
		info.partitions = []int32{only}
		if req.ByPosition {
			wm, err := parseWatermark(req.Watermark, topic)
			if err != nil {
				return connectors.Plan{}, err
			}
			keep = wm
			delete(keep, only)
		}
	}
	from := map[int32]int64{}
	to := map[int32]int64{}
	for _, p := range info.partitions {
		to[p] = ends[p]
	}
	var watermark string
	switch {
	case req.Window != nil:
		col := s.cfg.timestampColumn()
		if col == "" || req.DeltaColumn != col {
			return connectors.Plan{}, permanentf("a kafka source is read by windows of its records' timestamps: the delta column must be the column carrying them (%s)", timestampHint(s.cfg))
		}
		lo, err := s.offsetsAt(ctx, req.Window.From.UnixMilli())
		if err != nil {
			return connectors.Plan{}, err
		}
		hi, err := s.offsetsAt(ctx, req.Window.To.UnixMilli())
		if err != nil {
			return connectors.Plan{}, err
		}
		for _, p := range info.partitions {
			from[p], to[p] = lo[p], min(hi[p], ends[p])
		}
	case req.ByPosition:
		wm, err := parseWatermark(req.Watermark, topic)
		if err != nil {
			return connectors.Plan{}, err
		}
		first := map[int32]int64{}
		if len(wm) == 0 {
			if first, err = s.startOffsets(ctx, starts, ends); err != nil {
				return connectors.Plan{}, err
			}
		}
		for _, p := range info.partitions {
			off, ok := wm[p]
			switch {
			case len(wm) == 0:
				off = first[p]
			case !ok:
				off = starts[p] // a partition added since: all of it is new
			case off < starts[p]:
				if !s.cfg.SkipLost {
					return connectors.Plan{}, permanentf("partition %d of %s starts at offset %d now: records [%d, %d) were deleted (retention) before a run read them; set skip_lost: true to go on past them", p, topic, starts[p], off, starts[p])
				}
				off = starts[p]
			}
			from[p] = off
		}
		for p, off := range wm {
			if _, kept := keep[p]; kept {
				continue
			}
			if _, ok := to[p]; !ok {
				// Kafka never removes a partition; a topic deleted and
				// created again has fewer, or an offset listing lagged.
				return connectors.Plan{}, fmt.Errorf("the watermark names partition %d of %s, which the topic does not have now (was it deleted and created again?)", p, topic)
			}
			if off > to[p] {
				return connectors.Plan{}, permanentf("the watermark is at offset %d of partition %d of %s, past its end %d (was the topic deleted and created again?)", off, p, topic, to[p])
			}
		}
		limit := s.cfg.MaxRecordsPerRun
		if limit == 0 {
			limit = DefaultMaxRecordsPerRun
		}
		to = bound(from, to, limit)
		reached := maps.Clone(to)
		maps.Copy(reached, keep)
		watermark = formatWatermark(topic, reached)
	default:
		if from, err = s.startOffsets(ctx, starts, ends); err != nil {
			return connectors.Plan{}, err
		}
	}

	per := s.cfg.RecordsPerTask
	if per == 0 {
		per = req.Partitioning.TargetRows
	}
	if per <= 0 {
		per = DefaultRecordsPerTask
	}
	plan := connectors.Plan{Watermark: watermark, Schema: s.cfg.schema()}
	var of int32
	if whole {
		per = math.MaxInt64
		of = all
	}
	for _, p := range info.partitions {
		for lo, hi := from[p], from[p]; lo < to[p]; lo = hi {
			hi = to[p]
			if hi-lo > per {
				hi = lo + per
			}
			r := offsetRange{Topic: topic, Partition: p, From: lo, To: hi, Of: of}
			spec, err := json.Marshal(r)
			if err != nil {
				return connectors.Plan{}, err
			}
			plan.Partitions = append(plan.Partitions, protocol.Partition{
				Key: fmt.Sprintf("p%d[%d,%d)", p, r.From, r.To), Group: fmt.Sprintf("partition %d", p),
				Spec: spec, Rows: r.To - r.From,
			})
		}
	}
	return plan, nil
}

// Lag counts the offsets of the topic past watermark, up to each
// partition's end (its last stable offset under read_committed), from
// its first offset for a partition the watermark does not name (all of
// them for an empty watermark): what runs by position, and passthrough
// runs, have yet to read, as a consumer group's lag counts it.
func (s *Source) Lag(ctx context.Context, watermark string) (int64, error) {
	wm, err := parseWatermark(watermark, s.cfg.Topic)
	if err != nil {
		return 0, err
	}
	starts, err := s.listOffsets(ctx, "start", func() (kadm.ListedOffsets, error) { return s.adm.ListStartOffsets(ctx, s.cfg.Topic) })
	if err != nil {
		return 0, err
	}
	ends, err := s.listOffsets(ctx, "end", func() (kadm.ListedOffsets, error) {
		if s.cfg.committed() {
			return s.adm.ListCommittedOffsets(ctx, s.cfg.Topic)
		}
		return s.adm.ListEndOffsets(ctx, s.cfg.Topic)
	})
	if err != nil {
		return 0, err
	}
	var n int64
	for p, end := range ends {
		from, ok := wm[p]
		if !ok || from < starts[p] {
			from = starts[p]
		}
		n += max(end-from, 0)
	}
	return n, nil
}

func timestampHint(c SourceConfig) string {
	if c.format() == FormatRecord {
		return "timestamp"
	}
	return "_timestamp, with metadata: true"
}

// listOffsets returns what list gives per partition of the topic.
func (s *Source) listOffsets(ctx context.Context, what string, list func() (kadm.ListedOffsets, error)) (map[int32]int64, error) {
	lo, err := list()
	if err == nil {
		err = lo.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list the %s offsets of %s: %w", what, s.cfg.Topic, err)
	}
	out := map[int32]int64{}
	lo.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out, nil
}

// offsetsAt returns, per partition, the offset of the first record whose
// timestamp is at or after ms (the partition's end when none is).
func (s *Source) offsetsAt(ctx context.Context, ms int64) (map[int32]int64, error) {
	return s.listOffsets(ctx, "time", func() (kadm.ListedOffsets, error) { return s.adm.ListOffsetsAfterMilli(ctx, ms, s.cfg.Topic) })
}

// startOffsets returns where each partition is read from without a
// position, as Start says.
func (s *Source) startOffsets(ctx context.Context, starts, ends map[int32]int64) (map[int32]int64, error) {
	st, _ := parseStart(s.cfg.Start)
	switch {
	case st.latest:
		return ends, nil
	case !st.at.IsZero():
		at, err := s.offsetsAt(ctx, st.at.UnixMilli())
		if err != nil {
			return nil, err
		}
		for p, e := range ends {
			at[p] = min(max(at[p], starts[p]), e)
		}
		return at, nil
	}
	return starts, nil
}

// bound lowers the ends of the ranges [from, to) so that they hold at
// most limit offsets in all, sharing the limit evenly among the
// partitions that have more than their share.
func bound(from, to map[int32]int64, limit int64) map[int32]int64 {
	var ps []int32
	var total int64
	for p := range to {
		ps = append(ps, p)
		total += to[p] - from[p]
	}
	if total <= limit {
		return to
	}
	// The smallest ranges first: each takes all it has or its share.
	slices.SortFunc(ps, func(a, b int32) int {
		if d := (to[a] - from[a]) - (to[b] - from[b]); d != 0 {
			if d < 0 {
				return -1
			}
			return 1
		}
		return int(a - b)
	})
	out := map[int32]int64{}
	left := limit
	for i, p := range ps {
		share := left / int64(len(ps)-i)
		n := min(to[p]-from[p], share)
		out[p] = from[p] + n
		left -= n
	}
	return out
}

// formatWatermark renders the offsets a run by position reaches:
// "<topic>:<partition>=<offset>,...", partitions in order.
func formatWatermark(topic string, offsets map[int32]int64) string {
	ps := make([]int32, 0, len(offsets))
	for p := range offsets {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	var b strings.Builder
	b.WriteString(topic)
	b.WriteByte(':')
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d=%d", p, offsets[p])
	}
	return b.String()
}

// parseWatermark reads a watermark formatWatermark wrote for topic; an
// empty one is no position.
func parseWatermark(wm, topic string) (map[int32]int64, error) {
	out := map[int32]int64{}
	if wm == "" {
		return out, nil
	}
	t, rest, ok := strings.Cut(wm, ":")
	if !ok || t != topic {
		return nil, permanentf("watermark %q is not a position in topic %s (<topic>:<partition>=<offset>,...): was the pipeline read another way, or another topic, before?", wm, topic)
	}
	for pair := range strings.SplitSeq(rest, ",") {
		ps, os, ok := strings.Cut(pair, "=")
		p, perr := strconv.ParseInt(ps, 10, 32)
		o, oerr := strconv.ParseInt(os, 10, 64)
		if !ok || perr != nil || oerr != nil || p < 0 || o < 0 {
			return nil, permanentf("watermark %q: %q is not <partition>=<offset>", wm, pair)
		}
		out[int32(p)] = o
	}
	return out, nil
}

// Read reads one task's offset range and emits its records as JSONL rows,
// a batch per fetch.
func (s *Source) Read(ctx context.Context, p protocol.Partition, emit connectors.Emit) error {
	r, err := s.taskRange(p)
	if err != nil {
		return err
	}
	enc := newRowEncoder(s.cfg)
	typed, err := s.typedRows()
	if err != nil {
		return err
	}
	if typed != nil {
		defer typed.Release()
	}
	err = readRange(ctx, s.cl, s.adm, r, s.cfg.committed(), func(recs []*kgo.Record) error {
		// A batch's bytes are its own: a sink may keep them.
		size := 0
		for _, rec := range recs {
			size += len(rec.Value) + 2
		}
		buf := make([]byte, 0, size+size/8)
		for _, rec := range recs {
			var err error
			if buf, err = enc.appendRow(buf, rec); err != nil {
				return err
			}
		}
		b := connectors.Batch{
			Raw: buf, Format: connectors.FormatJSONL, Rows: int64(len(recs)),
			Position: fmt.Sprintf("%s/%d@%d", r.Topic, r.Partition, recs[0].Offset),
		}
		if typed == nil {
			return emit(ctx, b)
		}
		if _, err := typed.AppendJSONL(buf, b.Position, 1, nil); err != nil {
			return connectors.Permanent(err)
		}
		rec := typed.NewRecord()
		defer rec.Release()
		return emit(ctx, connectors.Batch{Record: rec, Format: connectors.FormatArrow, Rows: rec.NumRows(), Position: b.Position})
	})
	if err != nil {
		return fmt.Errorf("read %s: %w", r, err)
	}
	return nil
}

// taskRange returns the offset range task partition p reads.
func (s *Source) taskRange(p protocol.Partition) (offsetRange, error) {
	var r offsetRange
	if err := json.Unmarshal(p.Spec, &r); err != nil {
		return r, permanentf("partition %s: bad spec: %v", p.Key, err)
	}
	if r.Topic != s.cfg.Topic {
		return r, permanentf("partition %s is of topic %s, not %s", p.Key, r.Topic, s.cfg.Topic)
	}
	return r, nil
}

// typedRows returns the builder of the Arrow records a source of format
// json with declared columns emits, its rows typed by them (any sink
// takes them, PostgreSQL's too); nil for a source that emits JSON lines.
func (s *Source) typedRows() (*arrowconv.Builder, error) {
	sc := s.cfg.declared()
	if sc == nil || s.cfg.format() != FormatJSON {
		return nil, nil
	}
	as, err := arrowconv.Schema(sc)
	if err != nil {
		return nil, permanentf("columns: %v", err)
	}
	b, err := arrowconv.NewBuilder(memory.DefaultAllocator, as)
	if err != nil {
		return nil, permanentf("columns: %v", err)
	}
	return b, nil
}
