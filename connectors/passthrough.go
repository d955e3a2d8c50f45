package connectors

import (
	"context"
	"io"
	"iter"

	"github.com/sluicehq/sluice/protocol"
)

// A passthrough pipeline (pattern passthrough) copies data as it is: its
// source reads raw units and its sink writes them undecoded. A unit is a
// whole object or a byte range of one with its relative name (a file of a
// tree), a chunk of a table in the database's own copy format (COPY ...
// (FORMAT binary)), or a record with its key and headers: what a unit is
// depends on the kinds, which say so when they register (Passthrough.Units),
// and a pipeline's source and sink must exchange the same units.
//
// A passthrough run goes as a full load does: the leader plans it
// (UnitSource.PlanUnits), publishes one task per partition, each worker
// reads its partition's units (UnitSource.ReadUnits) and writes them to the
// sink's staging (UnitSink.OpenUnits), and the leader commits the run
// (UnitSink.CommitUnits), or aborts it (UnitSink.AbortUnits). The source
// and the sink are opened by the kind's Source and Sink factories, which
// take both their full-load and their passthrough configuration. The
// runs of one passthrough pipeline go one at a time, each planned from
// the pipeline's watermark (PlanRequest.Watermark), which moves to the
// plan's in the Raft entry that commits the run. A sink that records what
// its target holds (Inventoried) hands that to the plan, so that a run
// copies only what is new or changed.
//
// On the worker, units go from ReadUnits's emit to WriteUnit undecoded. A
// passthrough therefore takes no data contract (its spec is refused with
// one, and a worker fails such a task): a copy with a contract is pattern
// transform, which reads rows.

// Unit is one piece of raw data a passthrough source hands its sink as it
// is: the bytes of an object or of a byte range of one, a chunk of rows in
// a database's copy format.
type Unit struct {
	// Name is where the unit goes in the target, relative to it: a file's
	// slash-separated path under the tree it was read from. A unit of the
	// one table a run copies may leave it empty.
	Name string
	// Offset, Length and Size place the unit's bytes in their object: the
	// unit holds bytes [Offset, Offset+Length) of an object of Size bytes,
	// so that a whole object has Offset 0 and Length Size, and the units of
	// one object split into byte ranges are reassembled by the sink. Length
	// and Size are -1 for a stream whose length is known once it is read
	// (a chunk of a table).
	Offset, Length, Size int64
	// Version identifies the source's version of the object the unit is
	// part of, as the source saw it when the run was planned (a file's
	// modification time, an object's ETag): a sink that records what it
	// holds (Inventoried) records it, and a later plan compares it.
	Version string
	// Columns names the columns of each row of a unit of rows, in order.
	Columns []string
	// Format names the encoding of a unit of rows ("binary" for COPY's
	// binary format, "text"); empty for bytes of an object.
	Format string
	// TextColumns names the columns of a unit of rows in a binary format
	// whose values are in their text form, as the text format would have
	// them unescaped (PlanRequest.TextColumns); the others' are in their
	// binary form.
	TextColumns []string
	// Meta holds what else the sink may keep beside the bytes, by the
	// names the kind documents (a file's "mode").
	Meta map[string]string
	// Body yields the unit's bytes: exactly Length of them, or, for a
	// stream, all of them until io.EOF. A source that finds the object
	// changed while it reads makes Body fail rather than end. The sink
	// reads it to its end (or to an error) before WriteUnit returns,
	// or not at all when it holds the unit already (staged by an
	// earlier attempt of the task); the source owns it.
	Body io.Reader
	// Position tells where the unit is in the source, for errors
	// ("data/part-7.parquet@0+67108864", "orders ctid[0:4096)").
	Position string
	// Remove marks a removal instead of data: the source no longer has
	// Name, and the target holds it (Inventory.Removable). The sink
	// removes it when the run commits. Body is nil.
	Remove bool
}

// EmitUnit receives the units of one partition, in source order. A
// returned error stops the read and is returned by ReadUnits, wrapped.
type EmitUnit func(ctx context.Context, u Unit) error

// UnitSource is the capability of a source that can be the source of a
// passthrough pipeline (see Passthrough). PlanUnits is called by the
// coordinator leader only, once per run (again for a new attempt), in
// place of Plan, with the same contract: bounded partitions, a watermark,
// a schema, Holds for a RunHolder. ReadUnits is called by workers,
// concurrently for different partitions of a run, and more than once for
// one partition when a task is retried: it must read the same units each
// time, or find them changed.
type UnitSource interface {
	// PlanUnits splits what the run copies into bounded partitions. For a
	// sink that records what its target holds, req.Target says what that
	// is: the plan leaves out what the target holds already (same size and
	// Version), and, where the target holds what the source no longer
	// has and the sink removes it (Inventory.Removable), plans its
	// removal. ctx bounds the planning only.
	PlanUnits(ctx context.Context, req PlanRequest) (Plan, error)
	// ReadUnits reads one partition and hands its units to emit in order;
	// each unit's Body is read by emit before it returns. ctx bounds the
	// whole read; ReadUnits returns ctx.Err() when it is cancelled.
	ReadUnits(ctx context.Context, p protocol.Partition, emit EmitUnit) error
}

// UnitWriter writes the units of one task attempt of a passthrough run to
// the sink's staging place. It is used by one goroutine. Either Close or
// Abort is called, once.
type UnitWriter interface {
	// WriteUnit writes one unit, reading its Body to the end; a unit of
	// Remove set records a removal instead. The bytes are staged, not
	// visible in the target before the run commits. A Body that fails
	// fails the write.
	WriteUnit(ctx context.Context, u Unit) error
	// Close makes what the attempt wrote durable in staging, verified,
	// replacing the output of any earlier attempt of the same task, and
	// reports it: Rows counts the units (rows, for units of rows), Bytes
	// their bytes.
	Close(ctx context.Context) (TaskOutput, error)
	// Abort discards what this attempt wrote; the output of an earlier
	// attempt that closed stays.
	Abort(ctx context.Context) error
}

// UnitSink is the capability of a sink that can be the sink of a
// passthrough pipeline (see Passthrough). OpenUnits is called by workers,
// concurrently for different tasks, and again for a retried task;
// CommitUnits and AbortUnits are called by the coordinator leader only,
// in place of Commit and Abort, with their contracts: a commit makes the
// whole run visible (nothing partial: each object whole, or the new
// version of a table at once), a commit repeated after a crash with the
// same request succeeds and changes nothing more, and an abort removes
// the run's staging and leaves the target as it was.
type UnitSink interface {
	OpenUnits(ctx context.Context, t TaskRef) (UnitWriter, error)
	CommitUnits(ctx context.Context, req CommitRequest) (CommitResult, error)
	AbortUnits(ctx context.Context, runID string) error
}

// Inventoried is implemented by passthrough sinks that record what their
// target holds, as a manifest of what they copied (each object's size and
// the source's Version it was copied from), so that a run copies only
// what is new or changed. The coordinator leader calls Inventory before
// it plans a passthrough run (PlanUnits gets the result as
// PlanRequest.Target); ctx bounds the call, which may list the target.
type Inventoried interface {
	// Inventory returns what the target holds as of the position
	// req.Watermark (empty before the first commit: only what the target
	// holds, none of it recorded), and the watermark a commit of run
	// req.RunID records: the run's plan reaches it, so that the next
	// run's req.Watermark names what that commit recorded. A watermark
	// naming a record that is gone is a permanent error.
	Inventory(ctx context.Context, req InventoryRequest) (inv Inventory, next string, err error)
}

// InventoryRequest asks a sink what its target holds.
type InventoryRequest struct {
	Pipeline string
	RunID    string
	// Watermark is the pipeline's watermark: the position of the last
	// committed run.
	Watermark string
}

// Inventory is what a passthrough target holds, by unit name.
type Inventory interface {
	// Lookup returns what the target holds under name. Held.Version is
	// empty when the target holds an object under name that the sink did
	// not record (or that changed since): a source copies it again.
	Lookup(name string) (Held, bool)
	// Removable yields, in name order, every name the target holds that
	// the sink removes when the source no longer has it: all of them
	// for a sink that mirrors its source, none otherwise.
	Removable() iter.Seq[string]
}

// Held is what a target holds under one name.
type Held struct {
	Size int64
	// Version is the source's Version the object was copied from; empty
	// when the sink does not know it.
	Version string
}

// Passthrough is what a kind registers to be the source or the sink of
// passthrough pipelines (Connector.Passthrough). Its source must be a
// UnitSource and its sink a UnitSink.
type Passthrough struct {
	// Units names the units the kind's source reads and its sink writes
	// ("objects": files with their relative names; "postgres-copy": a
	// table's rows in COPY's format): a pipeline's source and sink must
	// name the same.
	Units string
	// Noun is what a run's status calls the units it counts (plural:
	// "files", "records"); empty for rows.
	Noun string
	// Source and Sink say which roles the kind plays.
	Source, Sink bool
	// Rows says the units are rows a data contract can transform on the
	// worker (contract.CopyText: PostgreSQL COPY's text format, which
	// the source reads when PlanRequest.Transform asks for it): a
	// transform pipeline whose source and sink both say so, without an
	// incremental section, runs as a passthrough with its contract
	// applied to the units (TransformsUnits).
	Rows bool
	// ValidateSource and ValidateSink check a configuration of the role
	// without I/O, as the kind's Source and Sink factories take it; nil
	// accepts every configuration.
	ValidateSource Validator
	ValidateSink   Validator
}

// UnitNoun is what a run's status calls the units of a passthrough
// pipeline whose source is of kind: "" for rows (or no passthrough).
func (r *Registry) UnitNoun(kind string) string {
	if e, ok := r.kinds[kind]; ok && e.passthrough != nil {
		return e.passthrough.Noun
	}
	return ""
}

// TransformsUnits reports whether a transform pipeline (without an
// incremental section) from source to sink runs in units, as a
// passthrough with its data contract applied to them on the workers:
// both kinds exchange the same units of rows (Passthrough.Rows), and
// both configurations are ones a passthrough takes.
func (r *Registry) TransformsUnits(source, sink protocol.Endpoint) bool {
	s, ok := r.kinds[source.Kind]
	if !ok || s.passthrough == nil || !s.passthrough.Rows || !r.Has(source.Kind, RolePassthroughSource) {
		return false
	}
	k, ok := r.kinds[sink.Kind]
	if !ok || k.passthrough == nil || !k.passthrough.Rows || !r.Has(sink.Kind, RolePassthroughSink) || s.passthrough.Units != k.passthrough.Units {
		return false
	}
	if v := s.passthrough.ValidateSource; v != nil && v(source.Config) != nil {
		return false
	}
	if v := k.passthrough.ValidateSink; v != nil && v(sink.Config) != nil {
		return false
	}
	return true
}

// UnitsOf names the units of a kind's passthrough source or sink: "" when
// the kind has none.
func (r *Registry) UnitsOf(kind string) string {
	if e, ok := r.kinds[kind]; ok && e.passthrough != nil {
		return e.passthrough.Units
	}
	return ""
}
