// Package connectors defines the contracts between Sluice and the systems it
// reads from and writes to: a Source plans a run into bounded partitions and
// reads one partition; a Sink writes one partition idempotently to a staging
// place and commits a whole run atomically. Rows travel between them as
// Batches: Apache Arrow records, or encoded bytes passed straight through when
// the source and the sink speak the same format.
//
// What differs between systems is an optional capability beside the
// contract, never a switch on a kind name elsewhere: Readiness, RunHolder and
// SchemaChecker for runs; Positions (a source read by a position of its own,
// incremental.by) and SinkAppends (a sink that appends a run without a
// window), declared when a kind registers; for streamed pipelines (stream.go), CDCSource (the
// change reader of a cdc pipeline and how its initial snapshot run is made)
// and CDCTarget (the Applier of a cdc_apply pipeline, which connectors/cdcapply
// runs).
//
// One package per system (connectors/files, connectors/postgres, ...)
// implements the contracts and exports a Register function; a Registry, built
// by main, maps each kind and role (RoleSource, RoleSink, RoleCDCSource,
// RoleCDCTarget) to that code and is the only place that does. Adding a kind
// is a package under connectors/ that passes the conformance suite
// (connectors/conformance), a rule in deps_test.go, and one registration line
// in cmd/sluice; a package may also add a capability to another's kind (as
// connectors/pgcdc adds CDCSource to postgres).
package connectors
