// Package protocol holds everything that crosses the wire between Sluice
// processes: tasks, task results, trigger envelopes, run events, worker
// heartbeats, and the names of the JetStream streams and subjects they travel
// on. Every message carries a version field; decoding rejects a version this
// build does not speak with a clear error. The package imports nothing of the
// project and only the standard library.
package protocol
