// Package cdcapply is the generic runner of cdc_apply pipelines: it reads
// the change events of one cdc pipeline from the SLUICE_CDC stream and
// hands them, in stream order and exactly once, to a connectors.Applier
// that makes them durable in a target.
//
// Run reads the events of the upstream pipeline (subjects
// sluice.cdc.<upstream>.>) through the durable pull consumer
// cdc_apply_<pipeline> and hands them to an Applier batch by batch, in stream
// order. A message holds one or more events (protocol.DecodeChangeEvents),
// all carrying the message's stream sequence, and a batch holds whole
// messages: up to Config.BatchSize events, or one message that alone holds
// more. Messages fetched beyond a batch wait, in order, for the next one;
// fetches are bounded by message count and bytes. The Applier is the source
// of truth for progress: it stores the stream sequence of the last message
// it made durable together with the events themselves (PostgreSQL: an
// upsert into sluice_cdc_offsets in the same transaction; files: an offset
// file renamed into place after the part files), and skips events at or
// below it. At start Run asks the Applier for that sequence and resets the
// consumer to the next one, so a batch applied but not acknowledged is not
// applied again, a message fetched but not applied is delivered again before
// anything after it, and the offset alone decides where applying resumes.
// Within one Run a gap in the consumer's delivery sequence (a message
// delivered to a pull request nobody read) also resets the consumer.
// Together: each event is applied exactly once and in stream order, across
// crashes and restarts at any point. Run acknowledges a batch (AckAll, so one
// ack covers the batch) only after Apply returned nil, and never a message
// still waiting for a later batch; the acknowledgement is bookkeeping, not a
// correctness condition.
//
// A message that does not hold valid change events stops Run with an error
// naming its stream sequence and subject; the messages before it are applied
// first, and nothing of it or after it is. Run does not skip it: an operator
// must remove it from the stream (or fix the build that cannot read it).
//
// The Applier is the connector's: connectors/postgres keeps a replica
// equal to the source tables, connectors/files writes a change log; the
// registry opens the one of a cdc_apply pipeline's sink kind
// (connectors.CDCTarget), and NewStream makes a Runner over it the Stream
// a worker holds under the pipeline's lease.
package cdcapply
