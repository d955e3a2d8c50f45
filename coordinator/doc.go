// Package coordinator is the control plane of Sluice. One or three
// coordinator nodes elect a leader with Raft (hashicorp/raft) and keep the
// control state in a replicated FSM: pipelines, runs, task states, dataset
// versions and watermarks. Only the leader plans runs into tasks, publishes
// them to the SLUICE_TASKS stream, consumes SLUICE_RESULTS, commits finished
// runs through their sink and serves the control API on sluice.api.<verb>.
// A new leader continues every unfinished run from the FSM and the durable
// streams, so no run is lost and none is committed twice. The coordinator
// never holds data rows. Client is the control API's client.
package coordinator
