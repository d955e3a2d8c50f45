package files

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/objstore"
)

// Names of the bookkeeping files at the root of a change log (Applier) and
// in its hour directories (which are closed with SuccessFile).
const (
	// OffsetFile holds the stream sequence of the last message written.
	OffsetFile = "_sluice_offset"
	// PendingFile lists the part files of the batch being written.
	PendingFile = "_sluice_pending"
)

// ApplierConfig configures an Applier. As the sink of a cdc_apply pipeline
// its configuration is {path, close_after} (ParseApplierConfig); the runner
// sets Log.
type ApplierConfig struct {
	// Path is the root directory, created when missing, or
	// s3://bucket/prefix.
	Path string
	// S3 says how to reach the store of an s3:// path, where the standard
	// AWS environment does not; never credentials.
	S3 objstore.Config
	// CloseAfter is how long after its end an hour is closed (once the
	// applier is caught up); 0 means 1 minute.
	CloseAfter time.Duration
	// Log receives closed hours and late events; nil discards them.
	Log *slog.Logger
}

// Validate checks the configuration without I/O.
func (c ApplierConfig) Validate() error {
	var errs []error
	if err := checkPath(c.Path, c.S3); err != nil {
		errs = append(errs, err)
	}
	if c.CloseAfter < 0 {
		errs = append(errs, errors.New("close_after must not be negative"))
	}
	return errors.Join(errs...)
}

// ParseApplierConfig decodes the sink configuration of a cdc_apply
// pipeline, {path, close_after, s3}, and checks it without I/O; errors
// are *connectors.FieldError naming the field.
func ParseApplierConfig(raw json.RawMessage) (ApplierConfig, error) {
	var in struct {
		Path       string          `json:"path"`
		CloseAfter string          `json:"close_after"`
		S3         objstore.Config `json:"s3"`
	}
	if err := decodeStrict(raw, []string{"close_after", "path", "s3"}, &in); err != nil {
		return ApplierConfig{}, err
	}
	c := ApplierConfig{Path: in.Path, S3: in.S3}
	if err := checkPath(c.Path, c.S3); err != nil {
		return c, err
	}
	if in.CloseAfter != "" {
		d, err := connectors.ParseDuration(in.CloseAfter)
		if err != nil || d < 0 {
			return c, &connectors.FieldError{Field: "close_after", Msg: fmt.Sprintf("%q is not a duration (examples: 1m, 10m)", in.CloseAfter)}
		}
		c.CloseAfter = d
	}
	return c, nil
}

// ValidateApplier checks the sink configuration of a cdc_apply pipeline
// without I/O.
func ValidateApplier(raw json.RawMessage) error {
	_, err := ParseApplierConfig(raw)
	return err
}

// openApplier opens the Applier of a cdc_apply pipeline's sink.
func openApplier(_ context.Context, req connectors.StreamRequest) (connectors.Applier, error) {
	c, err := ParseApplierConfig(req.Config)
	if err != nil {
		return nil, err
	}
	c.Log = req.Log
	return NewApplier(c)
}

// Applier writes the change events of a cdc_apply pipeline as a change log
// of JSON lines, one file per table, hour and batch, in a local directory
// or under an S3 prefix:
//
//	<Path>/<schema>.<table>/date=YYYY-MM-DD/hour=HH/part-<seq>.jsonl
//
// where the hour is the event's commit time in UTC and <seq> is the stream
// sequence of the table's first event in the batch, zero-padded to 20
// digits. Each line is the event's JSON with the stream sequence of its
// message ("seq"): the events of one message share it, in change order
// (their position is in "commit_lsn" and "index").
//
// Apply writes a batch in this order, each file whole (locally to a
// temporary name, fsynced and renamed, and each changed directory fsynced;
// on S3 in one PUT, which replaces an object atomically): the list of the
// batch's part files (PendingFile), the part files, then the offset
// (OffsetFile).
// The offset makes the batch count; until it is in place the batch
// does not exist, and the next Apply first removes the part files the
// pending list names. Hence no event is ever written twice: a batch
// re-applied after a crash between its parts and its offset starts at the
// same first event per table (the first after the offset), so it writes the
// same part names again and replaces them; and a part of the crashed attempt
// that the new batch does not replace (the new batch ending earlier, or no
// longer reaching an hour) is removed before anything is written. This
// relies on batches of whole messages (see connectors.Applier): a later batch starts
// after the offset, so it never reuses a part name of an earlier one.
// An Apply that fails before the offset (its ctx ended between parts)
// removes its parts at once; once every part is written, the offset is
// written whatever ctx says: a call applies its batch whole or leaves the
// log as it was.
//
// Closing hours: an hour is closed when the applier is caught up with the
// stream (every event of the upstream in SLUICE_CDC is applied) and the hour
// ended more than CloseAfter ago; CloseHours then writes an empty
// SuccessFile in the hour's directory of every table, after its part files.
// An hour is final once closed only if no event of it reaches the stream
// later than CloseAfter after the hour: CloseAfter must cover the upstream
// reader's lag. An event that still arrives for a closed hour is written,
// and logged as late.
//
// The methods of Applier may be called concurrently; the runner calls them
// one at a time.
type Applier struct {
	cfg   ApplierConfig
	log   *slog.Logger
	store logStore

	mu sync.Mutex
	// recovered reports whether the pending list was checked since the
	// applier was opened or an Apply failed.
	recovered bool
	// open maps the directory (relative to Path) of each hour written to
	// and not closed to its start; scanned reports whether it holds the
	// hours found on disk.
	open    map[string]time.Time
	scanned bool
	// beforeOffset, when set, runs between the parts and the offset (tests
	// simulate a crash there).
	beforeOffset func() error
}

// NewApplier returns an Applier writing under cfg.Path, creating it.
func NewApplier(cfg ApplierConfig) (*Applier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cdc apply files config: %w", err)
	}
	if cfg.CloseAfter == 0 {
		cfg.CloseAfter = time.Minute
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var store logStore
	if objstore.IsURL(cfg.Path) {
		r, err := openS3Root(cfg.Path, cfg.S3)
		if err != nil {
			return nil, err
		}
		store = s3Log{r}
	} else {
		p, err := localPath(cfg.Path)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(p, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", cfg.Path, err)
		}
		store = localLog(p)
	}
	return &Applier{cfg: cfg, log: log.With("path", cfg.Path), store: store, open: map[string]time.Time{}}, nil
}

// BatchSize asks the runner for batches of up to 10,000 events, filled
// for up to a second: a batch is a file per table and hour, so larger
// batches make fewer, larger part files.
func (f *Applier) BatchSize() (int, time.Duration) { return 10_000, time.Second }

// Close releases the idle connections of a change log on S3; one on disk
// holds no open file between calls.
func (f *Applier) Close() error { return f.store.close() }

// Applied returns the sequence in the offset file (0 when there is none).
func (f *Applier) Applied(ctx context.Context) (uint64, error) {
	return f.readOffset(ctx)
}

func (f *Applier) readOffset(ctx context.Context) (uint64, error) {
	b, err := f.store.read(ctx, OffsetFile)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read offset: %w", err)
	}
	seq, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("offset file %s: %w", f.store.describe(OffsetFile), err)
	}
	return seq, nil
}

// pending is the content of PendingFile.
type pending struct {
	Last  uint64   `json:"last"`
	Parts []string `json:"parts"`
}

// recover removes the part files of a batch whose offset was not written.
func (f *Applier) recover(ctx context.Context) error {
	if f.recovered {
		return nil
	}
	b, err := f.store.read(ctx, PendingFile)
	if errors.Is(err, fs.ErrNotExist) {
		f.recovered = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pending list: %w", err)
	}
	var p pending
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("pending list %s: %w", f.store.describe(PendingFile), err)
	}
	applied, err := f.readOffset(ctx)
	if err != nil {
		return err
	}
	if p.Last > applied {
		if err := f.store.remove(ctx, p.Parts); err != nil {
			return fmt.Errorf("remove parts of an unfinished batch: %w", err)
		}
		f.log.Info("cdc apply files: removed the parts of an unfinished batch", "parts", len(p.Parts), "last", p.Last, "offset", applied)
	}
	f.recovered = true
	return nil
}

// part is one part file of a batch.
type part struct {
	rel       string // relative to Path
	hour      string // the hour directory, relative to Path
	hourStart time.Time
	buf       bytes.Buffer
}

// Apply writes the events after the offset (see Applier for the protocol).
func (f *Applier) Apply(ctx context.Context, events []connectors.Event) (err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer func() {
		if err != nil {
			f.recovered = false // check the pending list again before the next batch
		}
	}()
	if err := f.recover(ctx); err != nil {
		return err
	}
	applied, err := f.readOffset(ctx)
	if err != nil {
		return err
	}
	if events = connectors.EventsAfter(events, applied); len(events) == 0 {
		return nil
	}
	var parts []*part
	byRel := map[string]*part{}
	first := map[string]uint64{} // table directory -> its first seq in the batch
	for i, ev := range events {
		if i > 0 && ev.Seq < events[i-1].Seq {
			return fmt.Errorf("events out of order: sequence %d after %d", ev.Seq, events[i-1].Seq)
		}
		table := pathToken(ev.Schema) + "." + pathToken(ev.Table)
		// Parts are named by the table's first event in the batch: the
		// first of the table after the offset, whatever the batch's size.
		// A batch re-applied after a crash before its offset therefore
		// rewrites the same names, and recover removed the parts of the
		// crashed attempt it will not rewrite: no event is written twice.
		if _, ok := first[table]; !ok {
			first[table] = ev.Seq
		}
		t := ev.CommitTime.UTC()
		start := t.Truncate(time.Hour)
		hour := path.Join(table, "date="+t.Format("2006-01-02"), "hour="+t.Format("15"))
		rel := path.Join(hour, fmt.Sprintf("part-%020d.jsonl", first[table]))
		p := byRel[rel]
		if p == nil {
			p = &part{rel: rel, hour: hour, hourStart: start}
			byRel[rel] = p
			parts = append(parts, p)
		}
		line, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("encode event %d: %w", ev.Seq, err)
		}
		p.buf.Write(line)
		p.buf.WriteByte('\n')
	}
	last := events[len(events)-1].Seq

	list := pending{Last: last}
	for _, p := range parts {
		list.Parts = append(list.Parts, p.rel)
	}
	b, err := json.Marshal(list)
	if err != nil {
		return fmt.Errorf("encode pending list: %w", err)
	}
	if err := f.store.write(ctx, []logFile{{PendingFile, b}}); err != nil {
		return fmt.Errorf("write pending list: %w", err)
	}
	files := make([]logFile, len(parts))
	for i, p := range parts {
		files[i] = logFile{p.rel, p.buf.Bytes()}
	}
	if err := f.store.write(ctx, files); err != nil {
		// The offset was not written: the batch is not applied, and its
		// parts go now, so that a failed call leaves the log as it was
		// (should this fail too, the next Apply's recovery removes them).
		f.store.remove(context.WithoutCancel(ctx), list.Parts)
		return fmt.Errorf("write part: %w", err)
	}
	if f.beforeOffset != nil {
		if err := f.beforeOffset(); err != nil {
			return err
		}
	}
	// Every part is written: the offset is written whatever ctx says, so
	// that a cancelled call leaves the batch whole. A failed write may
	// still have been stored (a lost response): the next Apply's recovery
	// reads the offset before it removes anything.
	if err := f.store.write(context.WithoutCancel(ctx), []logFile{{OffsetFile, []byte(strconv.FormatUint(last, 10) + "\n")}}); err != nil {
		return fmt.Errorf("write offset %d: %w", last, err)
	}
	for _, p := range parts {
		if _, ok := f.open[p.hour]; ok {
			continue
		}
		if f.store.exists(ctx, path.Join(p.hour, SuccessFile)) {
			f.log.Warn("cdc apply files: late events for a closed hour", "hour", p.hour, "part", p.rel)
			continue
		}
		f.open[p.hour] = p.hourStart
	}
	return nil
}

// CloseHours writes SuccessFile in every hour directory of every table
// whose hour ended more than CloseAfter before now, when caughtUp; it does
// nothing when not caughtUp. The first call also finds the open hours of
// earlier runs on disk.
func (f *Applier) CloseHours(ctx context.Context, now time.Time, caughtUp bool) error {
	if !caughtUp {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.scanned {
		if err := f.scan(ctx); err != nil {
			return err
		}
		f.scanned = true
	}
	var closing []string
	for hour, start := range f.open {
		if now.Sub(start.Add(time.Hour)) > f.cfg.CloseAfter {
			closing = append(closing, hour)
		}
	}
	slices.Sort(closing)
	for _, hour := range closing {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := f.store.write(ctx, []logFile{{path.Join(hour, SuccessFile), nil}}); err != nil {
			return fmt.Errorf("close hour %s: %w", hour, err)
		}
		delete(f.open, hour)
		f.log.Debug("cdc apply files: hour closed", "hour", hour)
	}
	return nil
}

// scan adds the hour directories without SuccessFile to f.open.
func (f *Applier) scan(ctx context.Context) error {
	tables, err := f.store.dirs(ctx, "")
	if err != nil {
		return fmt.Errorf("scan %s: %w", f.cfg.Path, err)
	}
	for _, t := range tables {
		dates, err := f.store.dirs(ctx, t)
		if err != nil {
			return fmt.Errorf("scan: %w", err)
		}
		for _, d := range dates {
			day, ok := strings.CutPrefix(d, "date=")
			if !ok {
				continue
			}
			hours, err := f.store.dirs(ctx, path.Join(t, d))
			if err != nil {
				return fmt.Errorf("scan: %w", err)
			}
			for _, h := range hours {
				hh, ok := strings.CutPrefix(h, "hour=")
				if !ok {
					continue
				}
				start, err := time.Parse("2006-01-02 15", day+" "+hh)
				if err != nil {
					continue // not ours
				}
				rel := path.Join(t, d, h)
				if f.store.exists(ctx, path.Join(rel, SuccessFile)) {
					continue
				}
				if _, ok := f.open[rel]; !ok {
					f.open[rel] = start
				}
			}
		}
	}
	return nil
}

// pathToken makes a schema or table name a safe path component.
func pathToken(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == 0 {
			return '_'
		}
		return r
	}, s)
	if s == "" || s == "." || s == ".." {
		return "_" + s
	}
	return s
}

var (
	_ connectors.Applier    = (*Applier)(nil)
	_ connectors.HourCloser = (*Applier)(nil)
	_ connectors.BatchSizer = (*Applier)(nil)
)
