//go:build unix

package noiseconn

import "syscall"

// readNonBlocking reads what waits on raw's socket into buf without waiting, and
// returns how many bytes it read: 0 if none wait, on EOF or on any error, which
// the caller's next, blocking read reports.
func readNonBlocking(raw syscall.RawConn, buf []byte) int {
	var n int
	var err error
	if raw.Read(func(fd uintptr) bool {
		n, err = syscall.Read(int(fd), buf)
		return true // do not wait for more
	}) != nil || err != nil {
		return 0
	}
	return max(n, 0)
}
