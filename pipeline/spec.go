package pipeline

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/contract"
	"github.com/sluicehq/sluice/protocol"
)

// Spec is one pipeline: what to move, from where, to where, how to bound
// each task and when to run.
type Spec struct {
	Name        string            `json:"name"`
	Pattern     protocol.Pattern  `json:"pattern"`
	Description string            `json:"description,omitempty"`
	Source      protocol.Endpoint `json:"source"`
	// Sink is where runs commit: for a compact pipeline the dataset it
	// compacts (the spec's dataset field).
	Sink      protocol.Endpoint       `json:"sink"`
	Partition connectors.Partitioning `json:"partitioning,omitzero"`
	// Schedule is a standard 5-field cron expression (minute hour
	// day-of-month month day-of-week, UTC), a descriptor such as @hourly or
	// @daily, or "@every <duration>"; empty means the pipeline runs only
	// when asked or triggered. The coordinator leader starts one run per
	// tick, with the tick as its logical time.
	Schedule string `json:"schedule,omitempty"`
	// Trigger starts runs on events other than a message on the
	// pipeline's trigger subject: After starts a run each time a run of
	// another pipeline commits; Subject and Feed on events of other
	// systems (see Trigger).
	Trigger *Trigger `json:"trigger,omitempty"`
	Retry   Retry    `json:"retry,omitzero"`
	// Incremental configures the delta-column windows of a pipeline of
	// pattern incremental; it is required for that pattern and refused
	// for every other.
	Incremental *Incremental `json:"incremental,omitempty"`
	// CDC configures a pipeline of pattern cdc; a cdc_apply pipeline may
	// set its lease; refused for every other pattern.
	CDC *CDC `json:"cdc,omitempty"`
	// Contract is the pipeline's data contract: what its copy keeps of
	// each column (kept, dropped, hashed, masked, nulled, truncated,
	// tokenized), which rows it keeps, and whether a column it does not
	// classify stops the pipeline (strict). Workers apply it between the
	// read and the write. Nil copies everything as it is.
	Contract *contract.Spec `json:"contract,omitempty"`
	// Compact holds the settings of a compact pipeline (compact section);
	// refused for every other pattern.
	Compact *protocol.CompactSettings `json:"compact,omitempty"`
	// Readiness holds the settings of a readiness pipeline (readiness
	// section); required for that pattern and refused for every other.
	Readiness *Readiness `json:"readiness,omitempty"`
	// AllowLiteralSecrets lets the connector configurations hold a
	// password as written (postgres://user:pass@..., password: ...);
	// without it Validate refuses one, naming the field: it would be
	// stored in the cluster's state and sent with every task, where a
	// `${SLUICE_...}` reference is expanded only where a connector opens.
	AllowLiteralSecrets bool `json:"allow_literal_secrets,omitempty"`
	// Text is the YAML the spec was parsed from, as the user wrote it.
	Text string `json:"text,omitempty"`
}

// ParseSchedule parses a schedule as the coordinator does: a standard
// 5-field cron expression, a descriptor (@hourly, @daily, ...) or
// "@every <duration>" of at least a second.
func ParseSchedule(spec string) (cron.Schedule, error) {
	if strings.HasPrefix(strings.TrimSpace(spec), "TZ=") || strings.HasPrefix(strings.TrimSpace(spec), "CRON_TZ=") {
		return nil, errors.New("time zones are not supported: schedules are in UTC")
	}
	if ds, ok := strings.CutPrefix(strings.TrimSpace(spec), "@every "); ok {
		// The library rounds silently: refuse what it would change.
		d, err := time.ParseDuration(strings.TrimSpace(ds))
		if err == nil && (d < time.Second || d%time.Second != 0) {
			return nil, errors.New("@every needs a whole number of seconds, at least 1s")
		}
	}
	return cron.ParseStandard(spec)
}

func scheduleProblem(spec string) string {
	if _, err := ParseSchedule(spec); err != nil {
		return fmt.Sprintf("%q is not a schedule: %v (examples: \"0 * * * *\", \"@hourly\", \"@every 10m\")", spec, err)
	}
	return ""
}

// Retry bounds how often a failing task is tried.
type Retry struct {
	// MaxAttempts is how many deliveries a task gets before it is dead.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// Backoff is the delay before the first retry; it doubles each time.
	Backoff time.Duration `json:"backoff,omitempty"`
}

// Incremental configures an incremental pipeline. A run covers the window
// [lo, hi) with lo the pipeline's watermark (Start before the first
// committed run) and hi = min(now - Lag, lo + Window), computed by the
// coordinator leader when it creates the run.
//
// The source reads the window one of two ways. With a DeltaColumn it reads
// the rows whose column lies in the window. Without one the source is
// partition-based: laid out by time (the files source's layout, such as
// date={date}/hour={hour}), it reads the one partition the window is;
// Window must then equal the partition size, Start lie on a partition
// boundary, and a live window is created only whole (lo + Window <=
// now - Lag). A partition-based run waits on the coordinator until its
// partition is ready (its _SUCCESS, or the next partition), checked every
// ReadyCheck, and fails after ReadyTimeout.
//
// With By the source keeps a position of its own instead (Kafka offsets,
// an Iceberg snapshot, the files a landing directory received): a run has
// no window; it loads what is new since the pipeline's watermark, as the
// source plans it, and its commit appends the run's output and moves the
// watermark to the position the run reached. Only By may then be set.
type Incremental struct {
	// By, when set, makes the pipeline's runs read by the source's own
	// position: "position", or the name the source gives its position
	// ("modified" for files). Empty for runs by windows.
	By string `json:"by,omitempty"`
	// DeltaColumn is a timestamptz, timestamp or date column of the source
	// that grows when a row is inserted or updated (updated_at). Rows whose
	// DeltaColumn is NULL are never read. Empty for a partition-based
	// source.
	DeltaColumn string `json:"delta_column,omitempty"`
	// Window is the most one run covers; backfills are split into windows
	// of this length.
	Window time.Duration `json:"window"`
	// Lag is the late-data guard: a run never reads past now - Lag, so
	// rows committed on the source up to Lag after their DeltaColumn value
	// are still seen.
	Lag time.Duration `json:"lag,omitempty"`
	// Start is where the first run starts; it is required until the
	// pipeline has a watermark.
	Start time.Time `json:"start,omitzero"`
	// ReadyTimeout is how long a run waits for its source input to be
	// ready (a partition's _SUCCESS) before it fails; 0 means no limit.
	ReadyTimeout time.Duration `json:"ready_timeout,omitempty"`
	// ReadyCheck is how often the leader checks a waiting run's input;
	// 0 means DefaultReadyCheck.
	ReadyCheck time.Duration `json:"ready_check,omitempty"`

	// Span, set instead of Window, makes the windows ranges of integer
	// values of DeltaColumn (an id, a sequence, a version counter): a live
	// run covers [lo, lo + Span), ended where the column's values end when
	// the run is planned (never past a value the source does not hold
	// yet). Written in YAML as window: 1000000.
	Span int64 `json:"span,omitempty"`
	// StartValue is where the first run of integer windows starts (YAML
	// start: 0), required until the pipeline has a watermark.
	StartValue *int64 `json:"start_value,omitempty"`
	// MaxRows, for integer windows, bounds the rows of one live run: the
	// run ends its window after that many rows (all rows of one value
	// stay together). With it Span may be left out: each run loads what is
	// new, up to MaxRows rows.
	MaxRows int64 `json:"max_rows_per_run,omitempty"`
	// Lookback makes each live run read that many closed windows before
	// its own again (its window starts Lookback windows before the
	// watermark), so rows written late into them are found: replaced
	// with the window, or merged. The watermark moves as without it.
	Lookback int `json:"lookback,omitempty"`
	// Merge, when set, merges each window's rows into the target by key
	// instead of replacing the window's rows.
	Merge *Merge `json:"merge,omitempty"`
}

// Merge configures the merge of an incremental pipeline's windows by key:
// the target ends with one row per key, the one with the greatest
// DeltaColumn (the newest version), as dbt's incremental models with a
// unique_key or a MERGE do.
type Merge = connectors.Merge

// Values reports whether the pipeline's windows are ranges of integer
// values (Span or MaxRows set) rather than of time.
func (inc *Incremental) Values() bool { return inc != nil && (inc.Span > 0 || inc.MaxRows > 0) }

// DefaultReadyCheck is how often the leader checks whether the input of a
// waiting run is ready when incremental.ready_check is not set.
const DefaultReadyCheck = 5 * time.Second

// RunPattern is how the pipeline's runs load: its pattern, but for a
// Transformation Replicator (pattern transform), which loads as an
// incremental loader with an incremental section and as a full loader
// without, its contract applied to the rows.
func (s Spec) RunPattern() protocol.Pattern {
	if s.Pattern != protocol.PatternTransform {
		return s.Pattern
	}
	if s.Incremental != nil {
		return protocol.PatternIncremental
	}
	return protocol.PatternFullLoad
}

// incrementalOnly is the problem of an incremental section in a spec of
// another pattern (the verb's argument).
const incrementalOnly = "is only for patterns incremental and transform, not %s"

// PartitionBased reports whether the pipeline's runs read whole time
// partitions (no delta column, no position).
func (inc *Incremental) PartitionBased() bool {
	return inc != nil && inc.DeltaColumn == "" && inc.By == ""
}

// Positioned reports whether the pipeline's runs read by the source's own
// position (By) rather than by windows.
func (inc *Incremental) Positioned() bool { return inc != nil && inc.By != "" }

// knownPatterns are the patterns of the design; available says which of
// them this build can run. The External Trigger is no pattern of its own:
// it is how a run starts (a pipeline's trigger section), not what a run
// does, so "trigger" is refused as a pattern with that hint.
var knownPatterns = map[protocol.Pattern]bool{
	protocol.PatternFullLoad:    true,
	protocol.PatternIncremental: true,
	protocol.PatternCDC:         true,
	protocol.PatternCDCApply:    true,
	protocol.PatternPassthrough: true,
	protocol.PatternTransform:   true,
	protocol.PatternCompact:     true,
	protocol.PatternReadiness:   true,
}

// CheckPattern says whether this build can run pattern p.
func CheckPattern(p protocol.Pattern) error {
	avail, known := knownPatterns[p]
	switch {
	case p == "":
		return errors.New("is required")
	case p == "trigger":
		return fmt.Errorf("unknown pattern %q: a trigger starts the runs of the pipeline that loads; give that pipeline a trigger section (after, subject or a feed), or watch a dataset with pattern readiness (this build runs: %s)", p, patternList(true))
	case !known:
		return fmt.Errorf("unknown pattern %q (this build runs: %s)", p, patternList(true))
	case !avail:
		return fmt.Errorf("pattern %q is not available in this build yet (this build runs: %s)", p, patternList(true))
	}
	return nil
}

// Problem is one thing wrong with a spec: the field, as a dotted path, and
// the line it stands on (0 when the field is missing altogether).
type Problem struct {
	Field string
	Line  int
	Msg   string
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", p.Line, p.Field, p.Msg)
	}
	return fmt.Sprintf("%s: %s", p.Field, p.Msg)
}

// Error lists every problem found in one spec.
type Error struct {
	File     string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	name := e.File
	if name == "" {
		name = "pipeline spec"
	}
	fmt.Fprintf(&b, "%s: %d problem(s)", name, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Parse reads one spec from YAML. file names it in errors. Parse checks the
// shape and the fields every spec has; Validate checks the connector
// configurations against a registry.
func Parse(data []byte, file string) (Spec, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		return Spec{}, &Error{File: file, Problems: []Problem{{Field: "(document)", Line: yamlLine(err), Msg: err.Error()}}}
	}
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return Spec{}, &Error{File: file, Problems: []Problem{{Field: "(document)", Line: root.Line, Msg: "a pipeline spec is a YAML mapping"}}}
	}
	doc := root.Content[0]
	p := &parser{file: file}
	s := Spec{Text: string(data)}
	seen := map[string]*yaml.Node{} // top-level key -> the key's node
	for i := 0; i+1 < len(doc.Content); i += 2 {
		k, v := doc.Content[i], doc.Content[i+1]
		if _, dup := seen[k.Value]; dup {
			p.add(k.Value, k.Line, "appears twice")
			continue
		}
		seen[k.Value] = k
		switch k.Value {
		case "name":
			s.Name = p.str(k.Value, v)
			if s.Name != "" && !protocol.ValidName(s.Name) {
				p.add("name", v.Line, fmt.Sprintf("%q is not a valid name: use lower-case letters, digits, '_' and '-', at most 63", s.Name))
			}
		case "pattern":
			s.Pattern = protocol.Pattern(p.str(k.Value, v))
			if s.Pattern != "" {
				if err := CheckPattern(s.Pattern); err != nil {
					p.add("pattern", v.Line, err.Error())
				}
			}
		case "description":
			s.Description = p.str(k.Value, v)
		case "source":
			s.Source = p.endpoint("source", v)
		case "sink":
			s.Sink = p.endpoint("sink", v)
		case "partitioning":
			s.Partition = p.partitioning(v)
		case "schedule":
			s.Schedule = p.str(k.Value, v)
			if v.Kind == yaml.ScalarNode {
				if msg := scheduleProblem(s.Schedule); msg != "" {
					p.add("schedule", v.Line, msg)
				}
			}
		case "trigger":
			s.Trigger = p.trigger(v)
		case "retry":
			s.Retry = p.retry(v)
		case "incremental":
			s.Incremental = p.incremental(v)
		case "cdc":
			s.CDC = p.cdc(v)
		case "contract":
			s.Contract = p.contract(v)
		case datasetField:
			s.Sink = p.endpoint(datasetField, v)
		case "compact":
			s.Compact = p.compact(v)
		case readinessField:
			s.Readiness = p.readiness(v)
		case "allow_literal_secrets":
			if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!bool" {
				p.add(k.Value, v.Line, fmt.Sprintf("%q is not true or false", v.Value))
			} else {
				s.AllowLiteralSecrets = v.Value == "true"
			}
		default:
			p.add(k.Value, k.Line, "unknown field (known: name, pattern, description, source, sink, dataset, partitioning, schedule, trigger, retry, incremental, cdc, compact, contract, readiness, allow_literal_secrets)")
		}
	}
	required := []string{"name", "pattern", "source", "sink"}
	switch s.Pattern {
	case protocol.PatternCDC:
		required = required[:3] // the sink is the SLUICE_CDC stream
	case protocol.PatternCompact:
		required = []string{"name", "pattern", datasetField}
		if k, ok := seen["sink"]; ok {
			p.add("sink", k.Line, "a compact pipeline names the dataset it compacts under dataset, not sink")
		}
	case protocol.PatternReadiness:
		required = required[:3] // it watches its source and loads nothing
	}
	p.readinessShape(s, seen)
	if k, ok := seen[datasetField]; ok && s.Pattern != "" && s.Pattern != protocol.PatternCompact && s.Pattern != protocol.PatternReadiness {
		p.add(datasetField, k.Line, fmt.Sprintf("is only for pattern %s, not %s (the target of a run is its sink)", protocol.PatternCompact, s.Pattern))
	}
	for _, f := range required {
		if _, ok := seen[f]; !ok {
			p.add(f, 0, "is required")
		}
	}
	if s.Incremental != nil && s.RunPattern() == protocol.PatternIncremental && !p.hasDelta && !s.Incremental.Positioned() && !hasLayout(s.Source) {
		p.add("incremental.delta_column", p.incLine, "is required (or lay the source out by time partitions: source.layout)")
	}
	if k, ok := seen["incremental"]; ok && s.Pattern != "" && s.Pattern != protocol.PatternIncremental && s.Pattern != protocol.PatternTransform {
		p.add("incremental", k.Line, fmt.Sprintf(incrementalOnly, s.Pattern))
	} else if !ok && s.Pattern == protocol.PatternIncremental {
		p.add("incremental", 0, "is required for pattern incremental (delta_column, window, lag, start; or by: position)")
	}
	if s.Trigger != nil && s.Trigger.After != "" && s.Trigger.After == s.Name {
		p.add("trigger.after", p.afterLine, fmt.Sprintf("%q is this pipeline: a pipeline cannot run after itself", s.Name))
	}
	if len(p.problems) > 0 {
		return s, &Error{File: file, Problems: p.problems}
	}
	return s, nil
}

// Validate checks what every spec needs (a valid name, an available pattern,
// both connector kinds) and the connector configurations with the registry's
// validators, expanding `${ENV}` references with lookup (nil: none is set;
// a field that refers to an unset variable is left unjudged). Problems name the field and,
// when s was parsed from YAML, its line.
func (s Spec) Validate(reg *connectors.Registry, lookup func(string) (string, bool)) error {
	var problems []Problem
	lines := lineIndex(s.Text)
	if s.Name == "" || !protocol.ValidName(s.Name) {
		problems = append(problems, Problem{Field: "name", Line: lines["name"], Msg: fmt.Sprintf("%q is not a valid name: use lower-case letters, digits, '_' and '-', at most 63", s.Name)})
	}
	if err := CheckPattern(s.Pattern); err != nil {
		problems = append(problems, Problem{Field: "pattern", Line: lines["pattern"], Msg: err.Error()})
	}
	sides := []struct {
		name string
		e    protocol.Endpoint
	}{{"source", s.Source}, {"sink", s.Sink}}
	switch s.Pattern {
	case protocol.PatternCDC:
		sides = sides[:1] // the sink is the SLUICE_CDC stream
	case protocol.PatternCompact:
		sides = sides[1:]
		sides[0].name = datasetField
	case protocol.PatternReadiness:
		sides = sides[:1] // it loads nothing
	}
	for _, side := range sides {
		if side.e.Kind == "" {
			problems = append(problems, Problem{Field: side.name + ".kind", Line: lines.nearest(side.name + ".kind"), Msg: "is required"})
		}
	}
	check := func(side string, e protocol.Endpoint, role connectors.Role) {
		if e.Kind == "" {
			return
		}
		if !reg.Has(e.Kind, role) || reg.Internal(e.Kind) {
			problems = append(problems, Problem{Field: side + ".kind", Line: lines[side+".kind"],
				Msg: fmt.Sprintf("connector %q cannot be a %s (kinds: %v)", e.Kind, role, reg.KindsOf(role))})
			return
		}
		if !s.AllowLiteralSecrets {
			for _, f := range connectors.LiteralSecrets(e.Config) {
				field := side + "." + f
				problems = append(problems, Problem{Field: field, Line: lines.nearest(field),
					Msg: "holds a password as written, which would be stored in the cluster and sent with every task: write a reference such as ${SLUICE_PG_DSN} and set that variable where the coordinator and workers run, or set allow_literal_secrets: true"})
			}
		}
		if err := reg.Validate(e.Kind, role, e.Config, lookup); err != nil {
			var fe *connectors.FieldError
			if errors.As(err, &fe) {
				field := side
				if fe.Field != "" {
					field = side + "." + fe.Field
				}
				problems = append(problems, Problem{Field: field, Line: lines.nearest(field), Msg: fe.Msg})
				return
			}
			problems = append(problems, Problem{Field: side, Line: lines[side], Msg: err.Error()})
		}
	}
	// The roles each pattern's connectors play; the source of a cdc_apply
	// pipeline is the events of a cdc pipeline (streamProblems).
	switch s.Pattern {
	case protocol.PatternCDC:
		check("source", s.Source, connectors.RoleCDCSource)
	case protocol.PatternCDCApply:
		check("sink", s.Sink, connectors.RoleCDCTarget)
	case protocol.PatternCompact:
		check(datasetField, s.Sink, connectors.RoleDataset)
	case protocol.PatternReadiness:
		check("source", s.Source, connectors.RoleSource)
	case protocol.PatternPassthrough:
		check("source", s.Source, connectors.RolePassthroughSource)
		check("sink", s.Sink, connectors.RolePassthroughSink)
		problems = append(problems, s.unitProblems(lines, reg)...)
		if s.Contract != nil {
			// Its units are not decoded: no column could be
			// transformed, so none is copied with a contract.
			problems = append(problems, Problem{Field: "contract", Line: lines.nearest("contract"),
				Msg: "a passthrough copies data as it is and cannot apply a data contract: use pattern transform, a load with one"})
		}
	default:
		check("source", s.Source, connectors.RoleSource)
		check("sink", s.Sink, connectors.RoleSink)
	}
	problems = append(problems, s.streamProblems(lines, reg)...)
	var partition time.Duration
	if s.Source.Kind != "" && !s.Streamed() && reg.HasSource(s.Source.Kind) {
		partition = reg.PartitionSize(s.Source.Kind, s.Source.Config)
	}
	problems = append(problems, s.incrementalProblems(lines, partition)...)
	problems = append(problems, s.readinessProblems(lines, reg, partition)...)
	problems = append(problems, s.connectorProblems(lines, reg)...)
	problems = append(problems, s.triggerProblems(lines)...)
	problems = append(problems, s.externalTriggerProblems(lines, reg)...)
	problems = append(problems, s.contractProblems(lines, reg)...)
	problems = append(problems, s.compactProblems(lines)...)
	if len(problems) > 0 {
		return &Error{File: s.Name, Problems: problems}
	}
	return nil
}

// ResolvePaths makes relative filesystem paths in both endpoints absolute,
// relative to dir (the directory of the spec file): every string field
// named "path" or ending in "_path" or "_dir". Servers may run in another
// directory than the one `sluice apply` runs in. A dir that is not valid
// UTF-8 is an error.
func (s *Spec) ResolvePaths(dir string) error {
	// A configuration is JSON, which holds UTF-8 only: a directory named
	// otherwise would turn into another one.
	if !utf8.ValidString(dir) {
		return fmt.Errorf("resolve paths: the spec's directory %q is not valid UTF-8", dir)
	}
	return s.relativePaths(func(_, p string) (string, bool) { return filepath.Join(dir, p), true })
}

// RelativePaths lists the fields of both endpoints that hold a relative
// filesystem path ResolvePaths would resolve, as dotted paths
// ("source.path"), sorted. A spec sent without its file (the HTTP API) has
// no directory to resolve them against.
func (s Spec) RelativePaths() []string {
	var out []string
	_ = s.relativePaths(func(field, _ string) (string, bool) {
		out = append(out, field)
		return "", false
	})
	sort.Strings(out)
	return out
}

// relativePaths calls visit for every field holding a relative path, and
// replaces the value with the one visit returns when it says to.
func (s *Spec) relativePaths(visit func(field, path string) (resolved string, replace bool)) error {
	for _, side := range []struct {
		name string
		e    *protocol.Endpoint
	}{{"source", &s.Source}, {"sink", &s.Sink}} {
		e := side.e
		if len(e.Config) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(e.Config, &m); err != nil {
			return fmt.Errorf("resolve paths: %w", err)
		}
		changed := false
		for k, v := range m {
			str, ok := v.(string)
			if !ok || str == "" || strings.Contains(str, "${") {
				continue
			}
			if (k == "path" || strings.HasSuffix(k, "_path") || strings.HasSuffix(k, "_dir")) && !filepath.IsAbs(str) && !strings.Contains(str, "://") {
				if resolved, replace := visit(side.name+"."+k, str); replace {
					m[k] = resolved
					changed = true
				}
			}
		}
		if !changed {
			continue
		}
		b, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("resolve paths: %w", err)
		}
		e.Config = b
	}
	return nil
}

// Line returns the line of the spec's text a field (a dotted path, such as
// "source.table") or its closest parent was written on; 0 when the spec
// has no text or the field is not in it.
func (s Spec) Line(field string) int { return lineIndex(s.Text).nearest(field) }

// lines maps dotted field paths to the line they were written on.
type lines map[string]int

// nearest finds the line of field, or of its closest parent written.
func (l lines) nearest(field string) int {
	for f := field; f != ""; {
		if n, ok := l[f]; ok {
			return n
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			break
		}
		f = f[:i]
	}
	return 0
}

func lineIndex(text string) lines {
	l := lines{}
	if text == "" {
		return l
	}
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(text), &root); err != nil || len(root.Content) == 0 {
		return l
	}
	var walk func(path string, n *yaml.Node)
	walk = func(path string, n *yaml.Node) {
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := n.Content[i].Value
				if path != "" {
					p = path + "." + p
				}
				l[p] = n.Content[i].Line
				walk(p, n.Content[i+1])
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				l[p] = c.Line
				walk(p, c)
			}
		}
	}
	walk("", root.Content[0])
	return l
}

type parser struct {
	file     string
	problems []Problem
	// hasDelta tells whether the incremental section has a delta_column;
	// incLine is the line of its first field.
	hasDelta bool
	incLine  int
	// afterLine is the line of trigger.after.
	afterLine int
}

// hasLayout reports whether a source configuration is laid out by time
// partitions (has a "layout"); Validate asks the connector for the size.
func hasLayout(e protocol.Endpoint) bool {
	var m map[string]any
	if json.Unmarshal(e.Config, &m) != nil {
		return false
	}
	_, ok := m["layout"]
	return ok
}

func (p *parser) add(field string, line int, msg string) {
	p.problems = append(p.problems, Problem{Field: field, Line: line, Msg: msg})
}

// integer reads an integer from lo to hi. YAML would turn 2.5 into 2 for
// an int: only an integer as written is taken.
func (p *parser) integer(field string, v *yaml.Node, lo, hi int) (int, bool) {
	n, err := strconv.Atoi(strings.ReplaceAll(v.Value, "_", ""))
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || err != nil || n < lo || n > hi {
		want := fmt.Sprintf("an integer from %d to %d", lo, hi)
		if hi == math.MaxInt {
			want = fmt.Sprintf("an integer of %d or more", lo)
		}
		p.add(field, v.Line, fmt.Sprintf("%q is not %s", v.Value, want))
		return 0, false
	}
	return n, true
}

func (p *parser) str(field string, v *yaml.Node) string {
	if v.Kind != yaml.ScalarNode {
		p.add(field, v.Line, "must be a string")
		return ""
	}
	return v.Value
}

func (p *parser) endpoint(side string, v *yaml.Node) protocol.Endpoint {
	if v.Kind != yaml.MappingNode {
		p.add(side, v.Line, "must be a mapping with at least a \"kind\"")
		return protocol.Endpoint{}
	}
	var e protocol.Endpoint
	cfg := map[string]any{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		if k.Value == "kind" {
			e.Kind = p.str(side+".kind", val)
			continue
		}
		var x any
		if err := val.Decode(&x); err != nil {
			p.add(side+"."+k.Value, val.Line, err.Error())
			continue
		}
		cfg[k.Value] = jsonable(x)
	}
	if e.Kind == "" {
		p.add(side+".kind", v.Line, "is required")
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		p.add(side, v.Line, err.Error())
	}
	e.Config = b
	return e
}

// jsonable turns the map[any]any YAML may give into map[string]any.
func jsonable(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = jsonable(e)
		}
		return x
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case []any:
		for i, e := range x {
			x[i] = jsonable(e)
		}
		return x
	case time.Time:
		return x.Format(time.RFC3339Nano)
	}
	return v
}

func (p *parser) partitioning(v *yaml.Node) connectors.Partitioning {
	var out connectors.Partitioning
	if v.Kind != yaml.MappingNode {
		p.add("partitioning", v.Line, "must be a mapping")
		return out
	}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		field := "partitioning." + k.Value
		switch k.Value {
		case "target_bytes":
			n, err := ParseBytes(val.Value)
			if err != nil || val.Kind != yaml.ScalarNode {
				p.add(field, val.Line, fmt.Sprintf("%q is not a size (examples: 64MiB, 500k, 1048576)", val.Value))
				continue
			}
			out.TargetBytes = n
		case "target_rows":
			n, err := ParseBytes(val.Value) // same suffixes: 100k, 1M
			if err != nil || val.Kind != yaml.ScalarNode || n <= 0 {
				p.add(field, val.Line, fmt.Sprintf("%q is not a positive row count (examples: 100000, 500k)", val.Value))
				continue
			}
			out.TargetRows = n
		case "max_files":
			n, ok := p.integer(field, val, 1, math.MaxInt)
			if !ok {
				continue
			}
			out.MaxFiles = n
		default:
			p.add(field, k.Line, "unknown field (known: target_bytes, target_rows, max_files)")
		}
	}
	return out
}

// triggerProblems checks the schedule and the trigger section of a spec
// that may not come from Parse.
func (s Spec) triggerProblems(lines lines) []Problem {
	var out []Problem
	if s.Schedule != "" {
		if msg := scheduleProblem(s.Schedule); msg != "" {
			out = append(out, Problem{Field: "schedule", Line: lines["schedule"], Msg: msg})
		}
	}
	if tr := s.Trigger; tr != nil && !tr.External() {
		switch {
		case !protocol.ValidName(tr.After):
			out = append(out, Problem{Field: "trigger.after", Line: lines.nearest("trigger.after"),
				Msg: fmt.Sprintf("%q is not a valid pipeline name: use lower-case letters, digits, '_' and '-', at most 63", tr.After)})
		case tr.After == s.Name:
			out = append(out, Problem{Field: "trigger.after", Line: lines.nearest("trigger.after"),
				Msg: fmt.Sprintf("%q is this pipeline: a pipeline cannot run after itself", s.Name)})
		}
	}
	return out
}

func (p *parser) retry(v *yaml.Node) Retry {
	var out Retry
	if v.Kind != yaml.MappingNode {
		p.add("retry", v.Line, "must be a mapping")
		return out
	}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		field := "retry." + k.Value
		switch k.Value {
		case "max_attempts":
			n, ok := p.integer(field, val, 1, 100)
			if !ok {
				continue
			}
			out.MaxAttempts = n
		case "backoff":
			d, err := time.ParseDuration(val.Value)
			if err != nil || d <= 0 {
				p.add(field, val.Line, fmt.Sprintf("%q is not a positive duration (examples: 500ms, 5s)", val.Value))
				continue
			}
			out.Backoff = d
		default:
			p.add(field, k.Line, "unknown field (known: max_attempts, backoff)")
		}
	}
	return out
}

func (p *parser) incremental(v *yaml.Node) *Incremental {
	out := &Incremental{}
	if v.Kind != yaml.MappingNode {
		p.add("incremental", v.Line, "must be a mapping ("+incrementalFields+")")
		return out
	}
	has := map[string]bool{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		field := "incremental." + k.Value
		if has[k.Value] {
			p.add(field, k.Line, "appears twice")
			continue
		}
		has[k.Value] = true
		switch k.Value {
		case "by":
			out.By = p.str(field, val)
			if val.Kind == yaml.ScalarNode && strings.TrimSpace(out.By) == "" {
				p.add(field, val.Line, "must name what the source keeps: position (or its own name, such as modified for files)")
			}
		case "delta_column":
			out.DeltaColumn = p.str(field, val)
			if val.Kind == yaml.ScalarNode && strings.TrimSpace(out.DeltaColumn) == "" {
				p.add(field, val.Line, "must name a column")
			}
		case "window":
			if n, ok := wholeNumber(val); ok {
				if n <= 0 {
					p.add(field, val.Line, fmt.Sprintf("%q is not a positive number of values", val.Value))
					continue
				}
				out.Span = n
				continue
			}
			d, err := ParseDuration(val.Value)
			if err != nil || val.Kind != yaml.ScalarNode || d <= 0 {
				p.add(field, val.Line, fmt.Sprintf("%q is not a positive duration (examples: 1h, 15m, 1d) or number of values (1000000)", val.Value))
				continue
			}
			out.Window = d
		case "lag":
			d, err := ParseDuration(val.Value)
			if err != nil || val.Kind != yaml.ScalarNode || d < 0 {
				p.add(field, val.Line, fmt.Sprintf("%q is not a duration of 0 or more (examples: 0s, 5m, 1h)", val.Value))
				continue
			}
			out.Lag = d
		case "start":
			if n, ok := wholeNumber(val); ok {
				out.StartValue = &n
				continue
			}
			t, err := time.Parse(time.RFC3339Nano, val.Value)
			if err != nil || val.Kind != yaml.ScalarNode {
				p.add(field, val.Line, fmt.Sprintf("%q is not an RFC 3339 time (example: 2026-01-01T00:00:00Z)", val.Value))
				continue
			}
			out.Start = t.UTC()
		case "ready_timeout":
			d, err := ParseDuration(val.Value)
			if err != nil || val.Kind != yaml.ScalarNode || d < 0 {
				p.add(field, val.Line, fmt.Sprintf("%q is not a duration of 0 or more (examples: 0s for no limit, 30m, 6h)", val.Value))
				continue
			}
			out.ReadyTimeout = d
		case "ready_check":
			d, err := ParseDuration(val.Value)
			if err != nil || val.Kind != yaml.ScalarNode || d <= 0 {
				p.add(field, val.Line, fmt.Sprintf("%q is not a positive duration (examples: 5s, 1m)", val.Value))
				continue
			}
			out.ReadyCheck = d
		case "max_rows_per_run":
			n, err := ParseBytes(val.Value) // same suffixes: 100k, 1M
			if err != nil || val.Kind != yaml.ScalarNode || n <= 0 {
				p.add(field, val.Line, fmt.Sprintf("%q is not a positive row count (examples: 100000, 500k)", val.Value))
				continue
			}
			out.MaxRows = n
		case "lookback":
			n, ok := wholeNumber(val)
			if !ok || n < 0 || n > maxLookback {
				p.add(field, val.Line, fmt.Sprintf("%q is not a number of windows from 0 to %d", val.Value, maxLookback))
				continue
			}
			out.Lookback = int(n)
		case "merge":
			out.Merge = p.merge(val)
		default:
			p.add(field, k.Line, "unknown field (known: "+incrementalFields+")")
		}
	}
	if has["by"] {
		// The source's position bounds each run: no window, column or clock.
		for i := 0; i+1 < len(v.Content); i += 2 {
			if k := v.Content[i]; k.Value != "by" && slices.Contains(windowFields, k.Value) {
				p.add("incremental."+k.Value, k.Line, fmt.Sprintf("is not used with by: %s: the source keeps its own position and plans each run from it", out.By))
			}
		}
	} else if !has["window"] && !has["max_rows_per_run"] {
		p.add("incremental.window", v.Line, "is required")
	}
	// delta_column is required unless the source is partition-based: Parse
	// decides once the source is read too.
	p.hasDelta, p.incLine = has["delta_column"], v.Line
	return out
}

const incrementalFields = "by, delta_column, window, lag, start, ready_timeout, ready_check, max_rows_per_run, lookback, merge"

// windowFields are the fields of the incremental section that configure
// runs by windows, which a run by position has none of.
var windowFields = []string{"delta_column", "window", "lag", "start", "ready_timeout", "ready_check", "max_rows_per_run", "lookback", "merge"}

// maxLookback bounds incremental.lookback.
const maxLookback = 1000

// wholeNumber returns the integer a YAML scalar is written as (1000000,
// 1_000_000), or false for anything else (a duration, a time).
func wholeNumber(v *yaml.Node) (int64, bool) {
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.ReplaceAll(v.Value, "_", ""), 10, 64)
	return n, err == nil
}

// merge parses incremental.merge: {key: [col, ...], deleted: col}; key
// may be one column's name.
func (p *parser) merge(v *yaml.Node) *Merge {
	out := &Merge{}
	if v.Kind != yaml.MappingNode {
		p.add("incremental.merge", v.Line, "must be a mapping (key, deleted)")
		return out
	}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		field := "incremental.merge." + k.Value
		switch k.Value {
		case "key":
			switch val.Kind {
			case yaml.ScalarNode:
				out.Key = []string{val.Value}
			case yaml.SequenceNode:
				for _, c := range val.Content {
					out.Key = append(out.Key, p.str(field, c))
				}
			default:
				p.add(field, val.Line, "must be a column or a list of columns")
			}
		case "deleted":
			out.Deleted = p.str(field, val)
		default:
			p.add(field, k.Line, "unknown field (known: key, deleted)")
		}
	}
	return out
}

// ParseDuration parses a Go duration ("90m", "1h30m") or a whole number of
// days ("1d", "7d"), as connectors.ParseDuration.
func ParseDuration(s string) (time.Duration, error) { return connectors.ParseDuration(s) }

// incrementalProblems checks the incremental section against the pattern
// and the source: partition is the size of the source's time partitions,
// 0 for a source not laid out by time.
func (s Spec) incrementalProblems(lines lines, partition time.Duration) []Problem {
	var out []Problem
	inc := s.Incremental
	switch {
	case s.Pattern == protocol.PatternIncremental && inc == nil:
		return []Problem{{Field: "incremental", Line: 0, Msg: "is required for pattern incremental (delta_column, window, lag, start; or by: position)"}}
	case s.Pattern != protocol.PatternIncremental && s.Pattern != protocol.PatternTransform && s.Pattern != "" && inc != nil:
		return []Problem{{Field: "incremental", Line: lines["incremental"], Msg: fmt.Sprintf(incrementalOnly, s.Pattern)}}
	case inc == nil:
		return nil
	}
	add := func(field, msg string) {
		out = append(out, Problem{Field: field, Line: lines.nearest(field), Msg: msg})
	}
	if inc.Positioned() {
		if strings.TrimSpace(inc.By) == "" {
			add("incremental.by", "must name what the source keeps: position (or its own name, such as modified for files)")
		}
		set := map[string]bool{"delta_column": inc.DeltaColumn != "", "window": inc.Window != 0 || inc.Span != 0, "lag": inc.Lag != 0,
			"start": !inc.Start.IsZero() || inc.StartValue != nil, "ready_timeout": inc.ReadyTimeout != 0, "ready_check": inc.ReadyCheck != 0,
			"max_rows_per_run": inc.MaxRows != 0, "lookback": inc.Lookback != 0, "merge": inc.Merge != nil}
		for _, f := range windowFields {
			if set[f] {
				add("incremental."+f, fmt.Sprintf("is not used with by: %s: the source keeps its own position and plans each run from it", inc.By))
			}
		}
		return out
	}
	switch {
	case partition > 0 && inc.DeltaColumn != "":
		add("incremental.delta_column", "must be left out: the source is laid out by time partitions (source.layout) and a run reads one whole partition")
	case partition == 0 && strings.TrimSpace(inc.DeltaColumn) == "":
		add("incremental.delta_column", "is required (or lay the source out by time partitions: source.layout)")
	}
	if inc.Values() {
		out = append(out, s.valueProblems(lines, partition)...)
	} else if inc.Window <= 0 {
		add("incremental.window", "must be a positive duration, or a number of values for an integer delta column")
	} else if partition > 0 && inc.Window != partition {
		add("incremental.window", fmt.Sprintf("%s must equal the size of the source's partitions, %s (source.layout): one partition per run", inc.Window, partition))
	}
	if !inc.Values() && inc.StartValue != nil {
		add("incremental.start", "an integer start goes with a window of integer values (window: 1000000)")
	}
	if inc.Lookback < 0 || inc.Lookback > maxLookback {
		add("incremental.lookback", fmt.Sprintf("%d is not a number of windows from 0 to %d", inc.Lookback, maxLookback))
	} else if inc.Lookback > 0 && partition > 0 {
		add("incremental.lookback", "a partition-based pipeline reads one whole partition per run: re-run a partition with sluice run --window or a backfill")
	}
	if m := inc.Merge; m != nil {
		switch {
		case partition > 0:
			add("incremental.merge", "needs a delta column, whose greatest value wins: a partition-based pipeline has none")
		case len(m.Key) == 0:
			add("incremental.merge.key", "is required: the columns that identify a row")
		case slices.ContainsFunc(m.Key, func(k string) bool { return strings.TrimSpace(k) == "" }):
			add("incremental.merge.key", "must name columns")
		case slices.Contains(m.Key, inc.DeltaColumn):
			add("incremental.merge.key", fmt.Sprintf("must not hold the delta column %q: each key keeps the row with its greatest delta value", inc.DeltaColumn))
		}
	}
	if partition > 0 && !inc.Start.IsZero() && !inc.Start.UTC().Truncate(partition).Equal(inc.Start) {
		add("incremental.start", fmt.Sprintf("%s is not where a partition of %s starts (every %s from midnight UTC)", inc.Start.UTC().Format(time.RFC3339Nano), partition, partition))
	}
	if inc.Lag < 0 {
		add("incremental.lag", "must not be negative")
	}
	if inc.ReadyTimeout < 0 {
		add("incremental.ready_timeout", "must not be negative")
	}
	if inc.ReadyCheck < 0 {
		add("incremental.ready_check", "must not be negative")
	}
	return out
}

// unitProblems checks that the source and the sink of a passthrough
// pipeline exchange the same units (connectors.Passthrough.Units).
func (s Spec) unitProblems(lines lines, reg *connectors.Registry) []Problem {
	if !reg.Has(s.Source.Kind, connectors.RolePassthroughSource) || !reg.Has(s.Sink.Kind, connectors.RolePassthroughSink) {
		return nil // reported by the role checks
	}
	src, sink := reg.UnitsOf(s.Source.Kind), reg.UnitsOf(s.Sink.Kind)
	if src == sink {
		return nil
	}
	var kinds []string
	for _, k := range reg.KindsOf(connectors.RolePassthroughSink) {
		if reg.UnitsOf(k) == src {
			kinds = append(kinds, k)
		}
	}
	return []Problem{{Field: "sink.kind", Line: lines.nearest("sink.kind"),
		Msg: fmt.Sprintf("a %s sink writes %s, not the %s a %s source reads: a passthrough copies as it is (sinks that can: %v)", s.Sink.Kind, sink, src, s.Source.Kind, kinds)}}
}

// valueProblems checks the incremental section of integer windows.
func (s Spec) valueProblems(lines lines, partition time.Duration) []Problem {
	var out []Problem
	inc := s.Incremental
	add := func(field, msg string) {
		out = append(out, Problem{Field: field, Line: lines.nearest(field), Msg: msg})
	}
	if partition > 0 {
		add("incremental.window", "a source laid out by time partitions is read by time windows, not by integer values")
	}
	switch {
	case inc.Window != 0 && inc.Span == 0:
		add("incremental.max_rows_per_run", "is for windows of integer values (window: 1000000), not time windows")
	case inc.Window != 0:
		add("incremental.window", "set a duration or a number of values, not both")
	}
	if inc.Span < 0 {
		add("incremental.window", "must be a positive number of values")
	}
	if inc.MaxRows < 0 {
		add("incremental.max_rows_per_run", "must be a positive row count")
	}
	if !inc.Start.IsZero() {
		add("incremental.start", "a window of integer values starts at an integer (start: 0)")
	}
	if inc.Lag != 0 {
		add("incremental.lag", "is for time windows: a window of integer values ends where the column's values end when its run is planned (lookback finds values committed late)")
	}
	if inc.Lookback > 0 && inc.Span <= 0 {
		add("incremental.lookback", "needs a window of values to look back by (window: 1000000)")
	}
	return out
}

// connectorProblems checks a load against its connectors: a source
// configuration that only a run by position reads (Positions.Only) is
// refused in a pipeline whose runs do not go by position; in an
// incremental pipeline a source read by position must keep one, and the
// sink must do what the pipeline's commits ask (append runs without a
// window, windows of integer values, merges by key).
func (s Spec) connectorProblems(lines lines, reg *connectors.Registry) []Problem {
	inc := s.Incremental
	var out []Problem
	switch s.RunPattern() {
	case protocol.PatternFullLoad, protocol.PatternIncremental:
		// A source configuration that only a run by position reads.
		if !inc.Positioned() && s.Source.Kind != "" && reg.HasSource(s.Source.Kind) {
			if fe := reg.PositionOnly(s.Source.Kind, s.Source.Config); fe != nil {
				field := "source." + fe.Field
				out = append(out, Problem{Field: field, Line: lines.nearest(field), Msg: fe.Msg})
			}
		}
	}
	if s.RunPattern() != protocol.PatternIncremental || inc == nil {
		return out
	}
	sink := func(can func(string) bool, what string) {
		if s.Sink.Kind == "" || !reg.HasSink(s.Sink.Kind) || can(s.Sink.Kind) {
			return
		}
		var kinds []string
		for _, k := range reg.KindsOf(connectors.RoleSink) {
			if can(k) {
				kinds = append(kinds, k)
			}
		}
		out = append(out, Problem{Field: "sink.kind", Line: lines.nearest("sink.kind"),
			Msg: fmt.Sprintf("a %s sink cannot %s (sinks that can: %v)", s.Sink.Kind, what, kinds)})
	}
	if inc.Values() {
		sink(reg.SinkValueWindows, "commit windows of integer values")
	}
	if inc.Merge != nil {
		sink(reg.SinkMerges, "merge windows by key")
	}
	if !inc.Positioned() || strings.TrimSpace(inc.By) == "" {
		return out
	}
	if s.Source.Kind != "" && reg.HasSource(s.Source.Kind) {
		if err := reg.CheckPosition(s.Source.Kind, s.Source.Config, s.Incremental.By); err != nil {
			out = append(out, Problem{Field: "incremental.by", Line: lines.nearest("incremental.by"), Msg: err.Error()})
		}
	}
	sink(reg.SinkAppends, fmt.Sprintf("append runs without a window, as incremental.by: %s needs", inc.By))
	return out
}

func patternList(availableOnly bool) string {
	var ps []string
	for k, avail := range knownPatterns {
		if avail || !availableOnly {
			ps = append(ps, string(k))
		}
	}
	sort.Strings(ps)
	return strings.Join(ps, ", ")
}

func yamlLine(err error) int {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return 0
	}
	var n int
	if _, scanErr := fmt.Sscanf(err.Error(), "yaml: line %d:", &n); scanErr == nil {
		return n
	}
	return 0
}

// Load parses a spec and validates it against reg in one go, so that one
// error lists every problem of the file: those of its shape and those of
// its connector configurations. A contract file it names is refused (see
// LoadFrom).
func Load(data []byte, file string, reg *connectors.Registry, lookup func(string) (string, bool)) (Spec, error) {
	return LoadFrom(data, file, "", reg, lookup)
}

// LoadFrom is Load for a spec read from a file in directory dir, whose
// contract file, if it names one, is read relative to dir into the spec
// (ReadContractFile); dir "" refuses a contract file.
func LoadFrom(data []byte, file, dir string, reg *connectors.Registry, lookup func(string) (string, bool)) (Spec, error) {
	s, err := Parse(data, file)
	var pe *Error
	if err != nil && !errors.As(err, &pe) {
		return s, err
	}
	var problems []Problem
	if pe != nil {
		problems = pe.Problems
	} else if cerr := s.ReadContractFile(dir); cerr != nil {
		var ce *Error
		if !errors.As(cerr, &ce) {
			return s, cerr
		}
		problems = ce.Problems
	}
	seen := map[string]bool{}
	for _, p := range problems {
		seen[p.Field] = true
	}
	if verr := s.Validate(reg, lookup); verr != nil {
		var ve *Error
		if !errors.As(verr, &ve) {
			return s, verr
		}
		for _, p := range ve.Problems {
			if !seen[p.Field] {
				problems = append(problems, p)
			}
		}
	}
	if len(problems) > 0 {
		sort.SliceStable(problems, func(i, j int) bool {
			if (problems[i].Line == 0) != (problems[j].Line == 0) {
				return problems[j].Line == 0
			}
			return problems[i].Line < problems[j].Line
		})
		return s, &Error{File: file, Problems: problems}
	}
	return s, nil
}
