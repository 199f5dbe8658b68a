package framed

import (
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

func TestDeadline(t *testing.T) {
	var expired atomic.Int32
	d := &deadline{expire: func() { expired.Add(1) }}

	// No deadline: calls go on.
	if err := d.begin(); err != nil {
		t.Fatal(err)
	}
	d.end()

	// One that passed before a call fails it, without closing anything.
	d.set(time.Now().Add(-time.Second))
	eventually(t, "the past deadline", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.passed
	})
	if err := d.begin(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("begin after the deadline: %v", err)
	}
	if n := expired.Load(); n != 0 {
		t.Fatalf("expired %d times with no call in progress", n)
	}

	// Moving it clears it; one that passes during a call ends the call, and the
	// call's error says it was the deadline.
	d.set(time.Now().Add(20 * time.Millisecond))
	if err := d.begin(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deadline to end the call", func() bool { return expired.Load() == 1 })
	if err := d.failed(errors.New("use of closed connection")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("error of the ended call: %v", err)
	}
	d.end()

	// A deadline moved away before it passes never fires.
	d.set(time.Now().Add(10 * time.Millisecond))
	d.set(time.Time{})
	if err := d.begin(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	d.end()
	if n := expired.Load(); n != 1 {
		t.Fatalf("expired %d times, want 1", n)
	}
	d.stop()
}
