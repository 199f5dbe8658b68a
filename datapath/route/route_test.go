package route

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/cvlan/cvlan/datapath/nl"
	"github.com/cvlan/cvlan/internal/golden"
)

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, x := range s {
		out[i] = netip.MustParsePrefix(x)
	}
	return out
}

// states are desired states of cvlan0 that the tests walk between.
var states = map[string]Config{
	"empty": {Interface: "cvlan0", MTU: 1420},
	"v4": {
		Interface: "cvlan0", MTU: 1420,
		Addresses: prefixes("100.64.0.2/32"),
		Routes:    prefixes("100.64.0.0/24"),
	},
	"dual": {
		Interface: "cvlan0", MTU: 1420,
		Addresses: prefixes("100.64.0.2/32", "fd00::2/128"),
		Routes:    prefixes("100.64.0.0/24", "10.1.0.0/16", "fd00::/64"),
	},
	"renumbered": {
		Interface: "cvlan0", MTU: 1380,
		Addresses: prefixes("100.64.0.9/32", "fd00::9/128"),
		Routes:    prefixes("100.64.0.0/24", "fd00::/64", "fd01::/48"),
	},
	"v6 only": {
		Interface: "cvlan0", MTU: 1420,
		Addresses: prefixes("fd00::2/128"),
		Routes:    prefixes("fd00::/64", "100.64.0.0/24"),
	},
	"two addresses": {
		Interface: "cvlan0", MTU: 1420,
		Addresses: prefixes("100.64.0.2/32", "100.64.1.2/32", "fd00::2/128"),
		Routes:    prefixes("100.64.0.0/23", "0.0.0.0/0"),
	},
}

// setAndLog runs Set and appends its transcript, or its result, to w.
func setAndLog(t *testing.T, w *strings.Builder, r *Router, f *fakeKernel, title string, cfg Config) {
	t.Helper()
	fmt.Fprintf(w, "# %s\n", title)
	f.transcript = nil
	err := r.Set(cfg)
	for _, line := range f.transcript {
		fmt.Fprintln(w, line)
	}
	switch {
	case errors.Is(err, ErrNoChanges):
		fmt.Fprintln(w, "(no changes)")
	case err != nil:
		fmt.Fprintf(w, "error: %v\n", err)
	}
	if err == nil && len(f.transcript) == 0 {
		t.Errorf("%s: Set returned nil but changed nothing", title)
	}
	if errors.Is(err, ErrNoChanges) && len(f.transcript) != 0 {
		t.Errorf("%s: Set returned ErrNoChanges after changing %q", title, f.transcript)
	}
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	golden.Check(t, name, got)
}

func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*fakeKernel)
		steps []string // names in states
	}{
		{"fresh", nil, []string{"dual", "dual"}},
		{"transitions", nil, []string{"v4", "dual", "renumbered", "v6 only", "two addresses", "empty", "dual"}},
		{"after crash", func(f *fakeKernel) {
			// A previous run added some of "dual" and left a stale route and address;
			// someone else added a route through the link, which is not ours.
			l := f.links["cvlan0"]
			l.up, l.mtu = true, 1420
			l.addrs = append(l.addrs, address{prefix: netip.MustParsePrefix("100.64.0.2/32")},
				address{prefix: netip.MustParsePrefix("100.64.7.7/32")})
			l.routes = append(l.routes,
				fakeRoute{route{dst: netip.MustParsePrefix("100.64.0.0/24"), src: netip.MustParseAddr("100.64.0.2"), scope: 253}, Protocol},
				fakeRoute{route{dst: netip.MustParsePrefix("10.9.0.0/16"), scope: 253}, Protocol},
				fakeRoute{route{dst: netip.MustParsePrefix("192.168.5.0/24"), scope: 253}, 4 /* static */},
				fakeRoute{route{dst: netip.MustParsePrefix("10.1.0.0/16"), gw: netip.MustParseAddr("100.64.0.1")}, Protocol})
		}, []string{"dual", "dual"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeKernel()
			f.addLink("cvlan0")
			if tc.setup != nil {
				tc.setup(f)
			}
			r := &Router{k: f}
			var w strings.Builder
			for _, s := range tc.steps {
				setAndLog(t, &w, r, f, "Set "+s, states[s])
				if d := f.check(states[s]); d != "" {
					t.Errorf("after Set %s: %s", s, d)
				}
			}
			checkGolden(t, strings.ReplaceAll(tc.name, " ", "_"), w.String())
		})
	}
}

// TestRandomWalk applies the states in random orders, from a fresh link each time, and
// checks that each Set reaches its state and that a second Set changes nothing.
func TestRandomWalk(t *testing.T) {
	names := make([]string, 0, len(states))
	for n := range states {
		names = append(names, n)
	}
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	for walk := range 50 {
		f := newFakeKernel()
		f.addLink("cvlan0")
		r := &Router{k: f}
		var path []string
		for range 12 {
			name := names[rng.IntN(len(names))]
			path = append(path, name)
			cfg := states[name]
			if err := r.Set(cfg); err != nil && !errors.Is(err, ErrNoChanges) {
				t.Fatalf("walk %d %q: %v", walk, path, err)
			}
			if d := f.check(cfg); d != "" {
				t.Fatalf("walk %d %q: %s", walk, path, d)
			}
			f.transcript = nil
			if err := r.Set(cfg); !errors.Is(err, ErrNoChanges) {
				t.Fatalf("walk %d %q: second Set = %v, changed %q", walk, path, err, f.transcript)
			}
		}
	}
}

func TestSetErrors(t *testing.T) {
	f := newFakeKernel()
	f.addLink("cvlan0")
	r := &Router{k: f}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Interface: "cvlan9"}, "reading interface cvlan9: link cvlan9: not found"},
		{Config{}, `interface name ""`},
		{Config{Interface: "a-very-long-interface"}, "want 1 to 15 characters"},
		{Config{Interface: "cvlan0", MTU: -1}, "MTU -1 out of range"},
		{Config{Interface: "cvlan0", MTU: 1000, Addresses: prefixes("fd00::1/128")}, "below IPv6's minimum"},
		{Config{Interface: "cvlan0", Addresses: []netip.Prefix{{}}}, "invalid prefix"},
		{Config{Interface: "cvlan0", Addresses: prefixes("::ffff:1.2.3.4/128")}, "IPv4-mapped"},
		{Config{Interface: "cvlan0", Addresses: prefixes("0.0.0.0/32")}, "unspecified"},
		{Config{Interface: "cvlan0", Addresses: prefixes("100.64.0.1/32", "100.64.0.1/32")}, "listed twice"},
		{Config{Interface: "cvlan0", Routes: prefixes("100.64.0.1/24")}, "host bits set (did you mean 100.64.0.0/24?)"},
		{Config{Interface: "cvlan0", Routes: prefixes("fd00::/64", "fd00::/64")}, "route fd00::/64 listed twice"},
	} {
		err := r.Set(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Set(%+v) = %v, want an error containing %q", tc.cfg, err, tc.want)
		}
		if tc.cfg.Interface == "cvlan9" && !errors.Is(err, nl.ErrNotFound) {
			t.Errorf("Set on a missing link = %v, want it to wrap nl.ErrNotFound", err)
		}
	}
	if len(f.transcript) != 0 {
		t.Errorf("invalid configs changed the kernel: %q", f.transcript)
	}
}

// TestErrorThenRetry checks that a Set that fails half-way is completed by the next.
func TestErrorThenRetry(t *testing.T) {
	f := newFakeKernel()
	f.addLink("cvlan0")
	r := &Router{k: f}
	failing := &failingKernel{fakeKernel: f, failAt: 3}
	r.k = failing
	cfg := states["dual"]
	if err := r.Set(cfg); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("Set = %v, want the injected failure", err)
	}
	r.k = f
	if err := r.Set(cfg); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if d := f.check(cfg); d != "" {
		t.Fatal(d)
	}
}

// failingKernel fails the failAt-th change.
type failingKernel struct {
	*fakeKernel
	failAt, n int
}

func (k *failingKernel) fail() error {
	k.n++
	if k.n == k.failAt {
		return errors.New("injected failure")
	}
	return nil
}

func (k *failingKernel) addRoute(dev string, r route) error {
	if err := k.fail(); err != nil {
		return err
	}
	return k.fakeKernel.addRoute(dev, r)
}

func (k *failingKernel) addAddr(dev string, a address) error {
	if err := k.fail(); err != nil {
		return err
	}
	return k.fakeKernel.addAddr(dev, a)
}
