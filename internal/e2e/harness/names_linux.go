package harness

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// A name made by this package is "cv", the pid of the test process in base 36
// zero-padded to pidWidth characters, a harness sequence number in base 36 padded to
// seqWidth, and then a suffix: "cv009ix01" + "wg" (interface), "cv009ix01-a"
// (namespace), "cv009ix01-123456" (temporary directory). The fixed widths let a later
// process read the pid back without a separator, which matters because interface names
// are at most 15 bytes.
const (
	nameStart = "cv"
	pidWidth  = 5 // base 36 of PID_MAX_LIMIT (4194304) is "2hzi8"
	seqWidth  = 2
	prefixLen = len(nameStart) + pidWidth + seqWidth

	// maxIfName is the longest interface name Linux accepts (IFNAMSIZ-1).
	maxIfName = 15

	// pidMaxLimit is the kernel's hard upper bound for pid_max.
	pidMaxLimit = 4194304

	// maxSeq is the largest harness sequence number; 0 is reserved for names that
	// belong to the process rather than to one harness (the binaries directory).
	maxSeq = 36*36 - 1
)

// base36 formats n in base 36, left-padded with zeros to width characters.
func base36(n, width int) string {
	s := strconv.FormatInt(int64(n), 36)
	if len(s) < width {
		s = strings.Repeat("0", width-len(s)) + s
	}
	return s
}

// prefixFor returns the name prefix of harness seq in process pid.
func prefixFor(pid, seq int) string {
	return nameStart + base36(pid, pidWidth) + base36(seq%(maxSeq+1), seqWidth)
}

// pidPrefix returns the part of prefixFor that depends on the pid only.
func pidPrefix(pid int) string { return nameStart + base36(pid, pidWidth) }

var pidMax = sync.OnceValue(func() int {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		return pidMaxLimit
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 || n > pidMaxLimit {
		return pidMaxLimit
	}
	return n
})

// ownerPID returns the pid encoded in a name that has the shape of the names this
// package makes, followed by sep (or by anything at all if sep is 0); ok is false for
// every other name, which the sweep then leaves alone.
func ownerPID(name string, sep byte) (pid int, ok bool) {
	if len(name) <= prefixLen || !strings.HasPrefix(name, nameStart) {
		return 0, false
	}
	for i := len(nameStart); i < prefixLen; i++ {
		c := name[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'z') {
			return 0, false
		}
	}
	if sep != 0 && name[prefixLen] != sep {
		return 0, false
	}
	n, err := strconv.ParseInt(name[len(nameStart):len(nameStart)+pidWidth], 36, 64)
	if err != nil || n < 1 || n >= int64(pidMax()) {
		return 0, false
	}
	return int(n), true
}

// pidAlive reports whether a process with this pid exists (in our pid namespace).
func pidAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// validName reports whether s is a non-empty name of lowercase letters, digits and,
// if dash is set, dashes.
func validName(s string, dash bool) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && dash:
		default:
			return false
		}
	}
	return true
}
