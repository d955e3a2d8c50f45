package connectors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Registry maps connector kinds to their code: the only place that does.
// main builds one and hands it to the coordinator and the workers; there is
// no global registry. What a kind can be is a Role: the coordinator,
// pipeline validation and workers ask whether a kind has a role, and open
// it through the registry, never by its name.
type Registry struct {
	kinds map[string]*entry
	// process names the process whose environment `${ENV}` references are
	// expanded from, for errors.
	process string
	// mu guards allowEnv, the variables besides SLUICE_* specs may
	// refer to (AllowEnv).
	mu       sync.Mutex
	allowEnv map[string]bool
	// secrets remembers what references expanded to when connectors
	// opened, for Scrub.
	secrets *scrubber
	rawSQL  rawSQLGate
	// paths are the roots connectors' local paths are confined to.
	paths pathRoots
}

// entry is what is registered of one kind, possibly by several packages.
type entry struct {
	source     SourceFactory
	sink       SinkFactory
	cdc        *CDCSource
	target     *CDCTarget
	validators map[Role]Validator
	partitions func(json.RawMessage) time.Duration
	snapshots  bool
	internal   bool
	positions  *Positions
	appends    bool
	values     bool
	merges     bool
	params     ParamsFunc
	feed       *EventFeed
	contracts  bool // the sink applies contracts itself
	// passthrough is what the kind registered of pattern passthrough.
	passthrough *Passthrough
	rawSQL      RawSQLFunc
	paths       PathsFunc
}

// Role says what a connector kind is used as in a pipeline.
type Role string

// The roles.
const (
	// RoleSource and RoleSink are the source and sink of a pipeline made
	// of runs (full_load, incremental).
	RoleSource Role = "source"
	RoleSink   Role = "sink"
	// RoleCDCSource is the source of a cdc pipeline (CDCSource).
	RoleCDCSource Role = "cdc source"
	// RoleCDCTarget is the sink of a cdc_apply pipeline (CDCTarget).
	RoleCDCTarget Role = "cdc target"
	// RoleDataset is the dataset of a compact pipeline: the sink of a
	// kind whose sinks compact what they write (Compactor).
	RoleDataset Role = "compacted dataset"
	// RolePassthroughSource and RolePassthroughSink are the source and
	// sink of a passthrough pipeline (Passthrough): opened by the kind's
	// Source and Sink factories, checked by the Passthrough validators.
	RolePassthroughSource Role = "passthrough source"
	RolePassthroughSink   Role = "passthrough sink"
)

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{kinds: map[string]*entry{}, secrets: &scrubber{min: minScrubLen}}
}

// SetProcess names the process the registry opens connectors in ("the
// coordinator a", "sluice dev (pid 4711)"), so that a `${NAME}` reference
// to a variable its environment lacks says whose environment that is.
// main calls it once, before the registry is used.
func (r *Registry) SetProcess(name string) { r.process = name }

// Connector is what a connector package registers: a kind and the roles it
// provides. A kind may be registered in parts, by several calls: a package
// adding a capability to another's kind (connectors/pgcdc adds CDCSource
// to the postgres kind, whose package it builds on).
type Connector struct {
	Kind string
	// Source and Sink are nil when the connector is not one.
	Source SourceFactory
	Sink   SinkFactory
	// ValidateSource and ValidateSink check a configuration for that role
	// without I/O; Validate serves a role that has none of its own. All may
	// be nil.
	ValidateSource Validator
	ValidateSink   Validator
	Validate       Validator
	// SourcePartitions returns the size of the time partitions a source
	// configuration is laid out by (1h for date=.../hour=..., 24h for
	// date=...), of which an incremental run reads exactly one, or 0 for a
	// source that is not laid out by time (or a configuration that is not
	// valid). Nil means never. It does no I/O.
	SourcePartitions func(config json.RawMessage) time.Duration
	// SourceSnapshots says the kind's source is a table whose commits
	// are its readiness markers (its Source implements Snapshots): a
	// readiness pipeline on it announces each new snapshot.
	SourceSnapshots bool
	// Positions, when set, says the source keeps a position of its own
	// and can be read by it (incremental.by: position; see Positions).
	Positions *Positions
	// SinkAppends says the sink commits a run in ModeAppend without a
	// Window: it appends the run's output exactly once (see
	// CommitRequest.Mode), which runs by position need. It goes with Sink.
	SinkAppends bool
	// SinkValueWindows says the sink commits windows of integer values
	// (Window.Values: an id or sequence delta column); SinkMerges that it
	// merges a window's rows by key (CommitRequest.Merge). They go with
	// Sink.
	SinkValueWindows bool
	SinkMerges       bool
	// SinkAppliesContract says the sink applies a pipeline's data contract
	// to each row itself (TaskRef.Contract), because its batches are not
	// the rows of one dataset (the read events of a cdc pipeline's
	// snapshot, rows of many tables): the worker then hands it the
	// contract instead of transforming its batches. It goes with Sink.
	SinkAppliesContract bool
	// CDCSource, when set, makes the kind the source of cdc pipelines;
	// CDCTarget the sink of cdc_apply pipelines.
	CDCSource *CDCSource
	CDCTarget *CDCTarget
	// Params, when set, checks the run parameters a source of the kind
	// takes (see ParamsFunc); it goes with Source.
	Params ParamsFunc
	// Feed, when set, makes the kind deliver events that start runs
	// (trigger: {<kind>: {...}}).
	Feed *EventFeed
	// ValidateDataset, when set, says that the kind's sinks compact their
	// datasets (they implement Compactor): a compact pipeline may name
	// one as its dataset, a sink configuration this checks without I/O.
	ValidateDataset Validator
	// Passthrough, when set, makes the kind the source or the sink (or
	// both) of passthrough pipelines, which copy its units as they are.
	Passthrough *Passthrough
	// Internal marks a kind that serves runs the cluster makes itself (the
	// initial snapshot run of a cdc pipeline) and that no spec names: the
	// kinds a message lists leave it out, and a spec naming it is refused
	// (see Internal).
	Internal bool
	// RawSQL, when set, names the fields of a configuration whose text
	// reaches SQL unquoted; a registry that refuses raw SQL
	// (RefuseRawSQL) refuses a configuration that sets one.
	RawSQL RawSQLFunc
	// Paths, when set, names the local paths of a configuration; a
	// registry that confines paths (ConfinePaths) refuses one outside its
	// roots.
	Paths PathsFunc
}

// Register adds a connector, or parts of one to a kind registered before.
// Registering a part of a kind twice, or a Connector without any part,
// panics: it is a wiring bug in main.
func (r *Registry) Register(c Connector) {
	e := r.kinds[c.Kind]
	if e == nil {
		e = &entry{validators: map[Role]Validator{}}
	}
	dup := func(what string) {
		panic(fmt.Sprintf("connectors: %s of kind %q registered twice", what, c.Kind))
	}
	pick := func(v Validator) Validator {
		switch {
		case v != nil:
			return v
		case c.Validate != nil:
			return c.Validate
		}
		return func(json.RawMessage) error { return nil }
	}
	add := func(role Role, v Validator) {
		if _, ok := e.validators[role]; ok {
			dup(string(role))
		}
		e.validators[role] = v
	}
	if c.Paths != nil {
		e.paths = c.Paths
	}
	if c.RawSQL != nil {
		e.rawSQL = c.RawSQL
	}
	parts := 0
	if c.Source != nil || c.ValidateSource != nil {
		if e.source != nil && c.Source != nil {
			dup("source")
		}
		if c.Source != nil {
			e.source = c.Source
		}
		add(RoleSource, pick(c.ValidateSource))
		parts++
	}
	if c.Sink != nil || c.ValidateSink != nil {
		if e.sink != nil && c.Sink != nil {
			dup("sink")
		}
		if c.Sink != nil {
			e.sink = c.Sink
		}
		add(RoleSink, pick(c.ValidateSink))
		e.appends = e.appends || c.SinkAppends
		e.values = e.values || c.SinkValueWindows
		e.merges = e.merges || c.SinkMerges
		e.contracts = e.contracts || c.SinkAppliesContract
		parts++
	}
	if c.SourceSnapshots {
		e.snapshots = true
		parts++
	}
	if c.SourcePartitions != nil {
		if e.partitions != nil {
			dup("source partitions")
		}
		e.partitions = c.SourcePartitions
		parts++
	}
	if c.Positions != nil {
		if e.positions != nil {
			dup("positions")
		}
		pos := *c.Positions
		e.positions = &pos
		parts++
	}
	if c.CDCSource != nil {
		if e.cdc != nil {
			dup(string(RoleCDCSource))
		}
		cdc := *c.CDCSource
		e.cdc = &cdc
		add(RoleCDCSource, pick(cdc.Validate))
		parts++
	}
	if c.CDCTarget != nil {
		if e.target != nil {
			dup(string(RoleCDCTarget))
		}
		target := *c.CDCTarget
		e.target = &target
		add(RoleCDCTarget, pick(target.Validate))
		parts++
	}
	if c.Params != nil {
		if e.params != nil {
			dup("params")
		}
		e.params = c.Params
		parts++
	}
	if c.Feed != nil {
		if e.feed != nil {
			dup("feed")
		}
		feed := *c.Feed
		e.feed = &feed
		parts++
	}
	if c.ValidateDataset != nil {
		add(RoleDataset, c.ValidateDataset)
		parts++
	}
	if c.Passthrough != nil {
		if e.passthrough != nil {
			dup("passthrough")
		}
		pt := *c.Passthrough
		e.passthrough = &pt
		if pt.Source {
			add(RolePassthroughSource, pick(pt.ValidateSource))
		}
		if pt.Sink {
			add(RolePassthroughSink, pick(pt.ValidateSink))
		}
		parts++
	}
	if parts == 0 {
		panic(fmt.Sprintf("connectors: kind %q registered without a source, sink or capability", c.Kind))
	}
	e.internal = e.internal || c.Internal
	r.kinds[c.Kind] = e
}

// WatchesSnapshots says whether a readiness pipeline on a source of kind
// announces the table's new snapshots (Connector.SourceSnapshots).
func (r *Registry) WatchesSnapshots(kind string) bool {
	e, ok := r.kinds[kind]
	return ok && e.snapshots
}

// PartitionSize returns the size of the time partitions a source of the
// given kind and configuration is laid out by, or 0 when it is not (see
// Connector.SourcePartitions).
func (r *Registry) PartitionSize(kind string, config json.RawMessage) time.Duration {
	e, ok := r.kinds[kind]
	if !ok || e.partitions == nil {
		return 0
	}
	return e.partitions(config)
}

// CheckPosition says whether a source of the given kind and
// configuration can be read by position, as incremental.by says (by is
// PositionBy or the kind's Positions.Name): nil when it can, else an
// error in the spec's terms. It does no I/O.
func (r *Registry) CheckPosition(kind string, config json.RawMessage, by string) error {
	e, ok := r.kinds[kind]
	if !ok || e.positions == nil {
		var kinds []string
		for _, k := range r.Kinds() {
			if r.kinds[k].positions != nil {
				kinds = append(kinds, k)
			}
		}
		return fmt.Errorf("a %s source keeps no position of its own to be read by (sources that do: %v); use incremental.delta_column or a source layout", kind, kinds)
	}
	if by != PositionBy && by != e.positions.Name {
		if e.positions.Name == "" {
			return fmt.Errorf("%q is not how a %s source is read: want %q", by, kind, PositionBy)
		}
		return fmt.Errorf("%q is not how a %s source is read: want %q (or %q)", by, kind, e.positions.Name, PositionBy)
	}
	if e.positions.Check != nil {
		return e.positions.Check(config)
	}
	return nil
}

// Lag counts what a source of the given kind and configuration holds
// past watermark (Positions.Lag); ok is false for a kind that cannot say.
func (r *Registry) Lag(ctx context.Context, kind string, config json.RawMessage, watermark string) (n int64, ok bool, err error) {
	e, found := r.kinds[kind]
	if !found || e.positions == nil || e.positions.Lag == nil {
		return 0, false, nil
	}
	cfg, err := r.expand(config)
	if err != nil {
		return 0, true, err
	}
	n, err = e.positions.Lag(ctx, cfg, watermark)
	return n, true, err
}

// SinkAppends reports whether a sink of the given kind appends runs
// without a window (Connector.SinkAppends).
func (r *Registry) SinkAppends(kind string) bool {
	e, ok := r.kinds[kind]
	return ok && e.sink != nil && e.appends
}

// SinkValueWindows reports whether a sink of the given kind commits
// windows of integer values (Connector.SinkValueWindows).
func (r *Registry) SinkValueWindows(kind string) bool {
	e, ok := r.kinds[kind]
	return ok && e.sink != nil && e.values
}

// SinkMerges reports whether a sink of the given kind merges windows by
// key (Connector.SinkMerges).
func (r *Registry) SinkMerges(kind string) bool {
	e, ok := r.kinds[kind]
	return ok && e.sink != nil && e.merges
}

// SinkAppliesContract reports whether a sink of the given kind applies a
// pipeline's data contract itself (Connector.SinkAppliesContract).
func (r *Registry) SinkAppliesContract(kind string) bool {
	e, ok := r.kinds[kind]
	return ok && e.sink != nil && e.contracts
}

// CDCSourceAppliesContract reports whether the change reader of a cdc
// source of the given kind applies a pipeline's data contract
// (CDCSource.AppliesContract).
func (r *Registry) CDCSourceAppliesContract(kind string) bool {
	e, ok := r.kinds[kind]
	return ok && e.cdc != nil && e.cdc.AppliesContract
}

// Kinds lists the registered kinds a spec may name, sorted: internal ones
// are left out.
func (r *Registry) Kinds() []string {
	var ks []string
	for _, k := range slices.Sorted(maps.Keys(r.kinds)) {
		if !r.kinds[k].internal {
			ks = append(ks, k)
		}
	}
	return ks
}

// Internal reports whether kind is registered as internal: only the
// cluster itself opens it, for runs it makes.
func (r *Registry) Internal(kind string) bool {
	e, ok := r.kinds[kind]
	return ok && e.internal
}

// KindsOf lists the kinds a spec may name that have role, sorted.
func (r *Registry) KindsOf(role Role) []string {
	var ks []string
	for _, k := range r.Kinds() {
		if r.Has(k, role) {
			ks = append(ks, k)
		}
	}
	return ks
}

// Has reports whether kind can be used in role.
func (r *Registry) Has(kind string, role Role) bool {
	e, ok := r.kinds[kind]
	if !ok {
		return false
	}
	switch role {
	case RoleSource:
		return e.source != nil
	case RoleSink:
		return e.sink != nil
	case RoleCDCSource:
		return e.cdc != nil && e.cdc.Open != nil
	case RoleCDCTarget:
		return e.target != nil && e.target.Open != nil
	case RoleDataset:
		_, ok := e.validators[RoleDataset]
		return ok && e.sink != nil
	case RolePassthroughSource:
		return e.passthrough != nil && e.passthrough.Source && e.source != nil
	case RolePassthroughSink:
		return e.passthrough != nil && e.passthrough.Sink && e.sink != nil
	}
	return false
}

// HasSource reports whether kind can be used as a source.
func (r *Registry) HasSource(kind string) bool { return r.Has(kind, RoleSource) }

// HasSink reports whether kind can be used as a sink.
func (r *Registry) HasSink(kind string) bool { return r.Has(kind, RoleSink) }

// HasInitialSnapshot reports whether kind, as the source of a cdc
// pipeline, says how its initial snapshot is made (CDCSource.Snapshot).
func (r *Registry) HasInitialSnapshot(kind string) bool {
	e, ok := r.kinds[kind]
	return ok && e.cdc != nil && e.cdc.Snapshot != nil
}

// Validate checks the configuration of a connector of the given kind in the
// given role, after expanding `${ENV}` references with lookup (nil: none is
// set). A field whose value refers to a variable lookup does not know
// cannot be judged here, where the variable may be unset while it is set
// where the connector runs: an error on such a field is not reported.
// A reference to a variable specs may not name (EnvAllowed) is an error
// naming it; the validator's errors quote a reference as written, never
// the value it expanded to.
func (r *Registry) Validate(kind string, role Role, config json.RawMessage, lookup func(string) (string, bool)) error {
	e, ok := r.kinds[kind]
	if !ok {
		return &FieldError{Field: "kind", Msg: fmt.Sprintf("unknown connector kind %q (known: %v)", kind, r.Kinds())}
	}
	v, ok := e.validators[role]
	if !ok {
		return &FieldError{Field: "kind", Msg: fmt.Sprintf("connector %q cannot be a %s (kinds: %v)", kind, role, r.KindsOf(role))}
	}
	if lookup == nil {
		lookup = func(string) (string, bool) { return "", false }
	}
	// The values expanded here are replaced by their references in the
	// validator's errors: an error quotes what the user wrote.
	seen := &scrubber{min: 1}
	var unset []string
	var denied error
	expanded, err := expandEnv(config, r.allowed(lookup, seen), func(field, name string) {
		if !r.EnvAllowed(name) {
			if denied == nil {
				denied = r.notAllowed(field, name)
			}
			return
		}
		unset = append(unset, field)
	})
	if err != nil {
		return err
	}
	if denied != nil {
		return denied
	}
	if err := r.checkRawSQL(e, expanded); err != nil {
		return err
	}
	if err := r.checkPaths(e, expanded); err != nil {
		return err
	}
	err = v(expanded)
	var fe *FieldError
	if errors.As(err, &fe) {
		for _, f := range unset {
			if fe.Field == f || strings.HasPrefix(f, fe.Field+".") || strings.HasPrefix(f, fe.Field+"[") {
				return nil
			}
		}
	}
	return seen.scrubErr(err)
}

// allowed wraps lookup: a variable specs may not refer to is not found,
// and each value found is remembered in seen.
func (r *Registry) allowed(lookup func(string) (string, bool), seen *scrubber) func(string) (string, bool) {
	return func(name string) (string, bool) {
		if !r.EnvAllowed(name) {
			return "", false
		}
		v, ok := lookup(name)
		if ok {
			seen.add(name, v)
		}
		return v, ok
	}
}

// OpenSource expands `${ENV}` references from the process environment and
// opens a source of the given kind.
func (r *Registry) OpenSource(ctx context.Context, kind string, config json.RawMessage) (Source, error) {
	var f SourceFactory
	if e, ok := r.kinds[kind]; ok {
		f = e.source
	}
	return open(ctx, kind, RoleSource, r, config, f)
}

// OpenSink expands `${ENV}` references from the process environment and
// opens a sink of the given kind.
func (r *Registry) OpenSink(ctx context.Context, kind string, config json.RawMessage) (Sink, error) {
	var f SinkFactory
	if e, ok := r.kinds[kind]; ok {
		f = e.sink
	}
	return open(ctx, kind, RoleSink, r, config, f)
}

// OpenCDCSource expands the `${ENV}` references of req.Config from the
// process environment and opens the change reader of a cdc pipeline whose
// source is of the given kind.
func (r *Registry) OpenCDCSource(ctx context.Context, kind string, req StreamRequest) (Stream, error) {
	var f StreamFactory
	if e, ok := r.kinds[kind]; ok && e.cdc != nil {
		f = e.cdc.Open
	}
	return open(ctx, kind, RoleCDCSource, r, req.Config, func(ctx context.Context, config json.RawMessage) (Stream, error) {
		req.Config = config
		return f(ctx, req)
	})
}

// OpenApplier expands the `${ENV}` references of req.Config from the
// process environment and opens the Applier of a cdc_apply pipeline whose
// sink is of the given kind.
func (r *Registry) OpenApplier(ctx context.Context, kind string, req StreamRequest) (Applier, error) {
	var f ApplierFactory
	if e, ok := r.kinds[kind]; ok && e.target != nil {
		f = e.target.Open
	}
	return open(ctx, kind, RoleCDCTarget, r, req.Config, func(ctx context.Context, config json.RawMessage) (Applier, error) {
		req.Config = config
		return f(ctx, req)
	})
}

// TargetStream returns the configuration of the JetStream stream a
// cdc_apply target of the given kind keeps (CDCTarget.Stream), req.Config's
// `${ENV}` references expanded from the process environment; ok is false
// when the kind keeps none. It does no other I/O.
func (r *Registry) TargetStream(kind string, req StreamRequest) (cfg jetstream.StreamConfig, ok bool, err error) {
	e, found := r.kinds[kind]
	if !found || e.target == nil || e.target.Stream == nil {
		return cfg, false, nil
	}
	expanded, err := r.expand(req.Config)
	if err != nil {
		return cfg, true, fmt.Errorf("%s %s stream: %w", kind, RoleCDCTarget, err)
	}
	req.Config = expanded
	cfg, err = e.target.Stream(req)
	if err != nil {
		return cfg, true, fmt.Errorf("%s %s stream: %w", kind, RoleCDCTarget, r.ScrubError(err))
	}
	return cfg, true, nil
}

// open opens a connector of kind in role with f, after expanding `${ENV}`
// references in config from the process environment. A kind that does not
// have the role (f nil) or a variable that is not set is a permanent error.
func open[T any, F ~func(context.Context, json.RawMessage) (T, error)](ctx context.Context, kind string, role Role, r *Registry, config json.RawMessage, f F) (T, error) {
	var zero T
	if !r.Has(kind, role) {
		return zero, Permanent(fmt.Errorf("open %s: kind %q cannot be a %s (kinds: %v)", role, kind, role, r.KindsOf(role)))
	}
	expanded, err := r.expand(config)
	if err != nil {
		return zero, Permanent(fmt.Errorf("open %s %s: %w", kind, role, err))
	}
	if err := r.checkRawSQL(r.kinds[kind], expanded); err != nil {
		return zero, Permanent(fmt.Errorf("open %s %s: %w", kind, role, err))
	}
	if err := r.checkPaths(r.kinds[kind], expanded); err != nil {
		return zero, Permanent(fmt.Errorf("open %s %s: %w", kind, role, err))
	}
	c, err := f(ctx, expanded)
	if err != nil {
		return zero, fmt.Errorf("open %s %s: %w", kind, role, r.ScrubError(err))
	}
	return c, nil
}

// CDCTables lists the tables a cdc source configuration of the given kind
// captures (see CDCSource.Tables); ok is false when the kind takes no
// incremental snapshots. It does no I/O and expands nothing.
func (r *Registry) CDCTables(kind string, config json.RawMessage) (tables []string, ok bool, err error) {
	e, found := r.kinds[kind]
	if !found || e.cdc == nil || e.cdc.Tables == nil {
		return nil, false, nil
	}
	tables, err = e.cdc.Tables(config)
	return tables, true, err
}

// InitialSnapshot returns the endpoints of the initial snapshot run of a
// cdc pipeline whose source is of the given kind (see CDCSource.Snapshot).
// It does no I/O and expands nothing.
func (r *Registry) InitialSnapshot(kind string, req SnapshotRequest) (SnapshotEndpoints, error) {
	if !r.HasInitialSnapshot(kind) {
		return SnapshotEndpoints{}, fmt.Errorf("initial snapshot: a cdc source of kind %q has none", kind)
	}
	return r.kinds[kind].cdc.Snapshot(req)
}

var envRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expand expands the `${ENV}` references of config from the process
// environment; an unset variable is a *FieldError naming the process, a
// variable specs may not refer to (EnvAllowed) one naming the variable.
// The values are remembered for Scrub.
func (r *Registry) expand(config json.RawMessage) (json.RawMessage, error) {
	process := r.process
	if process == "" {
		process = fmt.Sprintf("this process (pid %d)", os.Getpid())
	}
	var missing error
	out, err := expandEnv(config, r.allowed(os.LookupEnv, r.secrets), func(field, name string) {
		switch {
		case missing != nil:
		case !r.EnvAllowed(name):
			missing = r.notAllowed(field, name)
		default:
			missing = &FieldError{Field: field, Msg: fmt.Sprintf("environment variable %s is not set in the environment of %s, which opens this connector: set it where that process starts", name, process)}
		}
	})
	if err != nil {
		return nil, err
	}
	return out, missing
}

// Check asks a connector of kind in role to check what config names (see
// Checker), config's `${ENV}` references expanded from the process
// environment. checked is false when the kind has no check in that role.
func (r *Registry) Check(ctx context.Context, kind string, role Role, config json.RawMessage, req CheckRequest) (found string, checked bool, err error) {
	e, ok := r.kinds[kind]
	if !ok || !r.Has(kind, role) {
		return "", false, &FieldError{Field: "kind", Msg: fmt.Sprintf("connector %q cannot be a %s (kinds: %v)", kind, role, r.KindsOf(role))}
	}
	req.Role = role
	var fn CheckFunc
	switch role {
	case RoleCDCSource:
		fn = e.cdc.Check
	case RoleCDCTarget:
		fn = e.target.Check
	case RoleSource, RoleSink, RolePassthroughSource, RolePassthroughSink:
		fn = func(ctx context.Context, config json.RawMessage, req CheckRequest) (string, error) {
			var c io.Closer
			var chk Checker
			if role == RoleSource || role == RolePassthroughSource {
				src, err := e.source(ctx, config)
				if err != nil {
					return "", err
				}
				c, chk = src, asChecker(src)
			} else {
				sink, err := e.sink(ctx, config)
				if err != nil {
					return "", err
				}
				c, chk = sink, asChecker(sink)
			}
			defer c.Close()
			if chk == nil {
				return "", errNoCheck
			}
			return chk.Check(ctx, req)
		}
	}
	if fn == nil {
		return "", false, nil
	}
	expanded, err := r.expand(config)
	if err != nil {
		return "", true, err
	}
	found, err = fn(ctx, expanded, req)
	if errors.Is(err, errNoCheck) {
		return "", false, nil
	}
	// What a check refused goes back to whoever applied the spec:
	// scrubbed. What it found names tables and paths, which stay, a
	// password Redact finds aside.
	return Redact(found), true, r.ScrubError(err)
}

// errNoCheck: the opened connector is no Checker.
var errNoCheck = errors.New("no check")

func asChecker(v any) Checker {
	c, _ := v.(Checker)
	return c
}

// ExpandEnv replaces every `${NAME}` inside the string values of a JSON
// configuration with the value lookup gives. An unset variable is an error
// naming it; `$${NAME}` stays as the literal text `${NAME}`.
func ExpandEnv(config json.RawMessage, lookup func(string) (string, bool)) (json.RawMessage, error) {
	var missing error
	out, err := expandEnv(config, lookup, func(field, name string) {
		if missing == nil {
			missing = &FieldError{Field: field, Msg: fmt.Sprintf("environment variable %s is not set", name)}
		}
	})
	if err != nil {
		return nil, err
	}
	if missing != nil {
		return nil, missing
	}
	return out, nil
}

// expandEnv expands like ExpandEnv, calling unset for each reference to a
// variable lookup does not know (which expands to "").
func expandEnv(config json.RawMessage, lookup func(string) (string, bool), unset func(field, name string)) (json.RawMessage, error) {
	if len(config) == 0 {
		return config, nil
	}
	var v any
	if err := json.Unmarshal(config, &v); err != nil {
		return nil, fmt.Errorf("config is not JSON: %w", err)
	}
	var walk func(path string, v any) any
	walk = func(path string, v any) any {
		switch x := v.(type) {
		case string:
			return expandString(x, lookup, func(name string) { unset(path, name) })
		case map[string]any:
			for k, e := range x {
				x[k] = walk(joinPath(path, k), e)
			}
		case []any:
			for i, e := range x {
				x[i] = walk(fmt.Sprintf("%s[%d]", path, i), e)
			}
		}
		return v
	}
	v = walk("", v)
	return json.Marshal(v)
}

func joinPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func expandString(s string, lookup func(string) (string, bool), unset func(string)) string {
	const escaped = "\x00sluice-dollar\x00"
	s = strings.ReplaceAll(s, "$${", escaped)
	s = envRE.ReplaceAllStringFunc(s, func(m string) string {
		name := m[2 : len(m)-1]
		val, ok := lookup(name)
		if !ok {
			unset(name)
		}
		return val
	})
	return strings.ReplaceAll(s, escaped, "${")
}
