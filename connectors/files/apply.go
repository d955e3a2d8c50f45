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
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/connectors"
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
	// Path is the root directory; created when missing.
	Path string
	// CloseAfter is how long after its end an hour is closed (once the
	// applier is caught up); 0 means 1 minute.
	CloseAfter time.Duration
	// Log receives closed hours and late events; nil discards them.
	Log *slog.Logger
}

// Validate checks the configuration without I/O.
func (c ApplierConfig) Validate() error {
	var errs []error
	if c.Path == "" {
		errs = append(errs, errors.New("path is required"))
	}
	if c.CloseAfter < 0 {
		errs = append(errs, errors.New("close_after must not be negative"))
	}
	return errors.Join(errs...)
}

// ParseApplierConfig decodes the sink configuration of a cdc_apply
// pipeline, {path, close_after}, and checks it without I/O; errors are
// *connectors.FieldError naming the field.
func ParseApplierConfig(raw json.RawMessage) (ApplierConfig, error) {
	var in struct {
		Path       string `json:"path"`
		CloseAfter string `json:"close_after"`
	}
	if err := decodeStrict(raw, []string{"close_after", "path"}, &in); err != nil {
		return ApplierConfig{}, err
	}
	c := ApplierConfig{Path: in.Path}
	if c.Path == "" {
		return c, &connectors.FieldError{Field: "path", Msg: "is required"}
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
// of JSON lines, one file per table, hour and batch:
//
//	<Path>/<schema>.<table>/date=YYYY-MM-DD/hour=HH/part-<seq>.jsonl
//
// where the hour is the event's commit time in UTC and <seq> is the stream
// sequence of the table's first event in the batch, zero-padded to 20
// digits. Each line is the event's JSON with the stream sequence of its
// message ("seq"): the events of one message share it, in change order
// (their position is in "commit_lsn" and "index").
//
// Apply writes a batch in this order, each file to a temporary name, fsynced
// and renamed, and each changed directory fsynced: the list of the batch's
// part files (PendingFile), the part files, then the offset (OffsetFile).
// The offset makes the batch count; until it is renamed into place the batch
// does not exist, and the next Apply first removes the part files the
// pending list names. Hence no event is ever written twice: a batch
// re-applied after a crash between its parts and its offset starts at the
// same first event per table (the first after the offset), so it writes the
// same part names again and replaces them; and a part of the crashed attempt
// that the new batch does not replace (the new batch ending earlier, or no
// longer reaching an hour) is removed before anything is written. This
// relies on batches of whole messages (see connectors.Applier): a later batch starts
// after the offset, so it never reuses a part name of an earlier one.
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
	cfg ApplierConfig
	log *slog.Logger

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
	if err := os.MkdirAll(cfg.Path, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", cfg.Path, err)
	}
	return &Applier{cfg: cfg, log: log.With("path", cfg.Path), open: map[string]time.Time{}}, nil
}

// BatchSize asks the runner for batches of up to 10,000 events, filled
// for up to a second: a batch is a file per table and hour, so larger
// batches make fewer, larger part files.
func (f *Applier) BatchSize() (int, time.Duration) { return 10_000, time.Second }

// Close does nothing: an Applier holds no open file between calls.
func (f *Applier) Close() error { return nil }

// Applied returns the sequence in the offset file (0 when there is none).
func (f *Applier) Applied(context.Context) (uint64, error) {
	return f.readOffset()
}

func (f *Applier) readOffset() (uint64, error) {
	b, err := os.ReadFile(filepath.Join(f.cfg.Path, OffsetFile))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read offset: %w", err)
	}
	seq, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("offset file %s: %w", filepath.Join(f.cfg.Path, OffsetFile), err)
	}
	return seq, nil
}

// pending is the content of PendingFile.
type pending struct {
	Last  uint64   `json:"last"`
	Parts []string `json:"parts"`
}

// recover removes the part files of a batch whose offset was not written.
func (f *Applier) recover() error {
	if f.recovered {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(f.cfg.Path, PendingFile))
	if errors.Is(err, fs.ErrNotExist) {
		f.recovered = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pending list: %w", err)
	}
	var p pending
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("pending list %s: %w", filepath.Join(f.cfg.Path, PendingFile), err)
	}
	applied, err := f.readOffset()
	if err != nil {
		return err
	}
	if p.Last > applied {
		dirs := map[string]bool{}
		for _, rel := range p.Parts {
			path := filepath.Join(f.cfg.Path, rel)
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove part of an unfinished batch: %w", err)
			}
			dirs[filepath.Dir(path)] = true
		}
		for d := range dirs {
			if err := syncDir(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
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
	if err := f.recover(); err != nil {
		return err
	}
	applied, err := f.readOffset()
	if err != nil {
		return err
	}
	for len(events) > 0 && events[0].Seq <= applied {
		events = events[1:]
	}
	if len(events) == 0 {
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
		hour := filepath.Join(table, "date="+t.Format("2006-01-02"), "hour="+t.Format("15"))
		rel := filepath.Join(hour, fmt.Sprintf("part-%020d.jsonl", first[table]))
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
	if err := writeAtomic(f.cfg.Path, PendingFile, b); err != nil {
		return fmt.Errorf("write pending list: %w", err)
	}
	created := map[string]bool{}
	dirs := map[string]bool{}
	for _, p := range parts {
		if err := ctx.Err(); err != nil {
			return err
		}
		dir := filepath.Join(f.cfg.Path, p.hour)
		if !created[dir] {
			if err := mkdirAllSync(f.cfg.Path, p.hour); err != nil {
				return err
			}
			created[dir] = true
		}
		if err := writeFileSync(filepath.Join(f.cfg.Path, p.rel), p.buf.Bytes()); err != nil {
			return fmt.Errorf("write part: %w", err)
		}
		dirs[dir] = true
	}
	for d := range dirs {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	if f.beforeOffset != nil {
		if err := f.beforeOffset(); err != nil {
			return err
		}
	}
	if err := writeAtomic(f.cfg.Path, OffsetFile, []byte(strconv.FormatUint(last, 10)+"\n")); err != nil {
		return fmt.Errorf("write offset %d: %w", last, err)
	}
	for _, p := range parts {
		if _, ok := f.open[p.hour]; ok {
			continue
		}
		if _, err := os.Stat(filepath.Join(f.cfg.Path, p.hour, SuccessFile)); err == nil {
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
		if err := f.scan(); err != nil {
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
		dir := filepath.Join(f.cfg.Path, hour)
		if err := writeFileSync(filepath.Join(dir, SuccessFile), nil); err != nil {
			return fmt.Errorf("close hour %s: %w", hour, err)
		}
		if err := syncDir(dir); err != nil {
			return err
		}
		delete(f.open, hour)
		f.log.Debug("cdc apply files: hour closed", "hour", hour)
	}
	return nil
}

// scan adds the hour directories on disk without SuccessFile to f.open.
func (f *Applier) scan() error {
	tables, err := os.ReadDir(f.cfg.Path)
	if err != nil {
		return fmt.Errorf("scan %s: %w", f.cfg.Path, err)
	}
	for _, t := range tables {
		if !t.IsDir() {
			continue
		}
		dates, err := os.ReadDir(filepath.Join(f.cfg.Path, t.Name()))
		if err != nil {
			return fmt.Errorf("scan: %w", err)
		}
		for _, d := range dates {
			day, ok := strings.CutPrefix(d.Name(), "date=")
			if !d.IsDir() || !ok {
				continue
			}
			hours, err := os.ReadDir(filepath.Join(f.cfg.Path, t.Name(), d.Name()))
			if err != nil {
				return fmt.Errorf("scan: %w", err)
			}
			for _, h := range hours {
				hh, ok := strings.CutPrefix(h.Name(), "hour=")
				if !h.IsDir() || !ok {
					continue
				}
				start, err := time.Parse("2006-01-02 15", day+" "+hh)
				if err != nil {
					continue // not ours
				}
				rel := filepath.Join(t.Name(), d.Name(), h.Name())
				if _, err := os.Stat(filepath.Join(f.cfg.Path, rel, SuccessFile)); err == nil {
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

// writeFileSync writes data to path through a temporary file that is
// fsynced and renamed; the caller fsyncs the directory.
func writeFileSync(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

// writeAtomic replaces dir/name with data durably.
func writeAtomic(dir, name string, data []byte) error {
	if err := writeFileSync(filepath.Join(dir, name), data); err != nil {
		return err
	}
	return syncDir(dir)
}

// mkdirAllSync creates root/rel and fsyncs the parent of every directory it
// creates.
func mkdirAllSync(root, rel string) error {
	dir := root
	for _, c := range strings.Split(rel, string(filepath.Separator)) {
		parent := dir
		dir = filepath.Join(dir, c)
		err := os.Mkdir(dir, 0o755)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
		if err := syncDir(parent); err != nil {
			return err
		}
	}
	return nil
}

var (
	_ connectors.Applier    = (*Applier)(nil)
	_ connectors.HourCloser = (*Applier)(nil)
	_ connectors.BatchSizer = (*Applier)(nil)
)
