// Package kafka is the "kafka" connector, on franz-go: topics as sources
// and sinks of runs.
//
// As a source it plans a run into tasks of one partition's offset range
// each, read with Fetch requests sent to the partition's leader, so a task
// reads exactly its offsets every time (records of aborted transactions
// and transaction markers passed over under read_committed). A full load
// reads every partition up to its end at planning; a run by position
// (incremental.by: position) reads from the pipeline's watermark, the
// offset vector "<topic>:<partition>=<offset>,...", which moves in the
// Raft entry that commits the run; a run by windows reads the records
// whose timestamps lie in its window. Rows are the values (JSON objects),
// or whole records with their metadata.
//
// As a sink it appends each run to a topic in one Kafka transaction (see
// Sink): tasks stage their records in a staging topic, and the leader's
// commit copies them into the topic with a marker that makes a repeated
// commit copy nothing. As the sink of a passthrough from a kafka source
// it writes each record once, straight into the partition of its source's
// number, in transactions that commit the source offsets they reach (see
// pass.go): atomic per transaction, not per run.
//
// As the sink of a cdc_apply pipeline (see Applier) it writes each table's
// change events to <prefix>.<schema>.<table>, keyed by primary key (a
// key's events on one partition, in commit order), in Debezium's envelope
// or Sluice's, each batch one Kafka transaction. An event of the whole
// table has no key: in Sluice's envelope a snapshot's start
// (protocol.OpSnapshot) and a truncate go to every partition, so each
// partition's consumer sees them in order with its keys' events and can
// drop the rows a snapshot did not read again; in Debezium's envelope a
// snapshot is its read events ("op":"r") alone, as Debezium writes it,
// and a truncate one "op":"t" on partition 0. Rows of a table without a
// key go to partition 0.
//
// Connection settings come from the spec (brokers) and, for credentials,
// from the environment of the process that opens the connector (see
// Cluster).
package kafka
