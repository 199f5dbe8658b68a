//go:build !unix

package noiseconn

import "syscall"

// readNonBlocking reads nothing here: every read blocks on the caller's slice.
func readNonBlocking(raw syscall.RawConn, buf []byte) int { return 0 }
