// Package integration holds the tests that run Sluice against real servers:
// an embedded NATS server with JetStream and a 3-node Raft cluster in one
// process, and real processes (a NATS cluster from the nats-server binary,
// sluice coordinators and workers) for the fault tests. It has no code of
// its own outside tests.
package integration
