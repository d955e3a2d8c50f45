package postgres

import (
	"net"
	"syscall"
)

// setReadLowWater asks the kernel not to wake a reader of conn (a TCP
// connection) before n bytes are waiting, or the peer closed it (SO_RCVLOWAT;
// Linux caps n at half the largest receive buffer and grows the buffer to
// hold it). It does nothing for other connections or when the option is
// refused: reads then only wake more often.
func setReadLowWater(conn net.Conn, n int) {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, n)
	})
}
