// Package worker runs Sluice tasks. A Worker is a stateless process that
// pulls tasks from the one durable JetStream consumer all workers share, runs
// as many at once as it has slots (read a partition from the source, write it
// to the sink's staging place), keeps each running task alive with
// in-progress acks, and publishes each task's result before it acknowledges
// the task. Adding a worker adds throughput; removing one, even with kill -9,
// only delays its tasks until JetStream redelivers them.
//
// A worker also holds the streams of cdc and cdc_apply pipelines the
// coordinator leader assigns it under a lease (stream.go): it opens each
// through the connector registry (the change reader of a cdc pipeline's
// source kind, or the Applier of a cdc_apply pipeline's sink kind driven by
// the connectors/cdcapply runner), renews the lease with the stream's
// status, and stops the stream when the lease is lost.
package worker
