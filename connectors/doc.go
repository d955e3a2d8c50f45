// Package connectors defines the contracts between Sluice and the systems it
// reads from and writes to: a Source plans a run into bounded partitions and
// reads one partition; a Sink writes one partition idempotently to a staging
// place and commits a whole run atomically. Rows travel between them as
// Batches: Apache Arrow records, or encoded bytes passed straight through when
// the source and the sink speak the same format. One package per system
// (connectors/files, connectors/postgres, ...) implements the contracts; a
// Registry maps connector kinds to constructors and is built by main.
package connectors
