package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestPathWatch drives the watch with samples a second apart and checks when it
// reports a peer's path as failed.
func TestPathWatch(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	type step struct {
		sec  int
		mode int
		hs   int   // handshake at this second; -1 none
		tx   int64 // tx bytes
		rx   int64 // rx bytes
		want string
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"idle peer is never reported", []step{
			{0, 0, -1, 0, 0, ""}, {5, 0, -1, 0, 0, ""}, {20, 0, -1, 0, 0, ""}, {40, 0, -1, 0, 0, ""},
		}},
		{"sending without a handshake: reported after the timeout, then again after another", []step{
			{0, 0, -1, 0, 0, ""}, {1, 0, -1, 148, 0, ""}, {6, 0, -1, 296, 0, ""}, {11, 0, -1, 444, 0, "0"},
			{12, 0, -1, 592, 0, ""}, {16, 0, -1, 740, 0, ""}, {21, 0, -1, 888, 0, "0"},
		}},
		{"a handshake on the path stops it", []step{
			{0, 0, -1, 0, 0, ""}, {1, 0, -1, 148, 0, ""}, {6, 0, 6, 400, 0, ""}, {20, 0, 6, 900, 0, ""}, {30, 0, 6, 1500, 0, ""},
		}},
		{"a new path restarts the clock, and a handshake from before it does not count", []step{
			{0, 0, 0, 0, 0, ""}, {1, 1, 0, 148, 0, ""}, {2, 1, 0, 296, 0, ""}, {8, 1, 0, 444, 0, ""}, {12, 1, 0, 592, 0, "1"},
		}},
		{"the first path seen counts a handshake from before the watch", []step{
			{10, 0, 0, 0, 0, ""}, {15, 0, 0, 100, 0, ""}, {30, 0, 0, 200, 0, ""}, {50, 0, 0, 300, 0, ""},
		}},
		{"hearing from the peer proves a new path without a handshake", []step{
			{0, 0, 0, 0, 0, ""}, {1, 1, 0, 0, 0, ""}, {2, 1, 0, 100, 0, ""}, {10, 1, 0, 200, 50, ""}, {20, 1, 0, 300, 50, ""},
			{30, 1, 0, 400, 50, "1"},
		}},
		{"a stale handshake does not prove the path", []step{
			{0, 2, 0, 0, 0, ""}, {200, 2, 0, 10, 0, ""}, {205, 2, 0, 20, 0, ""}, {211, 2, 0, 30, 0, "2"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newPathWatch(10 * time.Second)
			for _, s := range tc.steps {
				var hs time.Time
				if s.hs >= 0 {
					hs = at(s.hs)
				}
				var got []string
				for _, r := range w.observe(at(s.sec), []pathSample{{nodeID: "nd_b", mode: s.mode, lastHandshake: hs, txBytes: s.tx, rxBytes: s.rx}}) {
					if r.PeerNodeId != "nd_b" {
						t.Fatalf("report about %q", r.PeerNodeId)
					}
					got = append(got, fmt.Sprint(r.Failed))
				}
				if g := strings.Join(got, ","); g != s.want {
					t.Fatalf("at %ds: reported %q, want %q", s.sec, g, s.want)
				}
			}
		})
	}
	w := newPathWatch(10 * time.Second)
	w.observe(t0, []pathSample{{nodeID: "nd_b"}})
	w.observe(t0, nil)
	if len(w.peers) != 0 {
		t.Fatal("a peer gone from the map is still watched")
	}
}
