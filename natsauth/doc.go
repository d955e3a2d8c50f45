// Package natsauth holds who may do what on the NATS bus: the roles of a
// Sluice cluster (coordinator, worker, trigger publisher, observer, admin)
// with their publish and subscribe permissions, a nats-server
// configuration granting them, and the client options (credentials files,
// nkeys, user and password, TLS) every Sluice process connects with.
package natsauth
