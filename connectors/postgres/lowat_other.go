//go:build !linux

package postgres

import "net"

// setReadLowWater does nothing here: a reader wakes for every write of the
// server.
func setReadLowWater(net.Conn, int) {}
