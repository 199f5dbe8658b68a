package wg

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/internal/golden"
)

var (
	self = testKey(1)
	pubs = func() map[string]key.NodePublic {
		m := map[string]key.NodePublic{}
		for i, n := range []string{"p1", "p2", "p3", "p4", "p5", "p6", "p2r"} {
			m[n] = testKey(byte(10 + 10*i)).NodePublic()
		}
		return m
	}()
)

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, x := range s {
		out[i] = netip.MustParsePrefix(x)
	}
	return out
}

func peer(name, endpoint string, keepalive time.Duration, allowed ...string) Peer {
	p := Peer{PublicKey: pubs[name], AllowedIPs: prefixes(allowed...), PersistentKeepalive: keepalive}
	if endpoint != "" {
		p.Endpoint = netip.MustParseAddrPort(endpoint)
	}
	return p
}

// states are desired configurations the tests walk between.
var states = map[string]Config{
	"none": {PrivateKey: self, ListenPort: 51820},
	"A": {PrivateKey: self, ListenPort: 51820, Peers: []Peer{
		peer("p1", "10.0.0.2:51820", 25*time.Second, "100.64.0.2/32", "fd00::2/128"),
		peer("p2", "10.0.0.3:51820", 25*time.Second, "100.64.0.3/32"),
		peer("p3", "", 0, "100.64.0.4/32", "10.1.0.0/16"),
		peer("p4", "[2001:db8::5]:51820", 0, "100.64.0.5/32"),
		peer("p6", "10.0.0.7:51820", 0, "100.64.0.7/32"),
	}},
	// B changes p1's endpoint, p2's allowed IPs and p3's keepalive, keeps p4, removes
	// p6 and adds p5.
	"B": {PrivateKey: self, ListenPort: 51820, Peers: []Peer{
		peer("p1", "10.0.0.22:51820", 25*time.Second, "100.64.0.2/32", "fd00::2/128"),
		peer("p2", "10.0.0.3:51820", 25*time.Second, "100.64.0.3/32", "fd00::3/128"),
		peer("p3", "", 10*time.Second, "100.64.0.4/32", "10.1.0.0/16"),
		peer("p4", "[2001:db8::5]:51820", 0, "100.64.0.5/32"),
		peer("p5", "10.0.0.6:51820", 0, "100.64.0.6/32"),
	}},
	// A with p2's key rotated: same addresses, same endpoint.
	"A rotated": {PrivateKey: self, ListenPort: 51820, Peers: []Peer{
		peer("p1", "10.0.0.2:51820", 25*time.Second, "100.64.0.2/32", "fd00::2/128"),
		peer("p2r", "10.0.0.3:51820", 25*time.Second, "100.64.0.3/32"),
		peer("p3", "", 0, "100.64.0.4/32", "10.1.0.0/16"),
		peer("p4", "[2001:db8::5]:51820", 0, "100.64.0.5/32"),
		peer("p6", "10.0.0.7:51820", 0, "100.64.0.7/32"),
	}},
	// A on a new node key and port.
	"A rekeyed": {PrivateKey: testKey(2), ListenPort: 51821, Peers: []Peer{
		peer("p1", "10.0.0.2:51820", 25*time.Second, "100.64.0.2/32", "fd00::2/128"),
		peer("p2", "10.0.0.3:51820", 25*time.Second, "100.64.0.3/32"),
		peer("p3", "", 0, "100.64.0.4/32", "10.1.0.0/16"),
		peer("p4", "[2001:db8::5]:51820", 0, "100.64.0.5/32"),
		peer("p6", "10.0.0.7:51820", 0, "100.64.0.7/32"),
	}},
	// C moves 100.64.0.7/32 from p6 to p1 and lists allowed IPs in another order.
	"C": {PrivateKey: self, ListenPort: 51820, Peers: []Peer{
		peer("p1", "10.0.0.2:51820", 25*time.Second, "fd00::2/128", "100.64.0.7/32", "100.64.0.2/32"),
		peer("p6", "10.0.0.7:51820", 0),
	}},
}

func setAndLog(t *testing.T, w *strings.Builder, d *Device, f *fakeClient, title string, cfg Config) {
	t.Helper()
	fmt.Fprintf(w, "# %s\n", title)
	f.transcript = nil
	err := d.Set(cfg)
	for _, line := range f.transcript {
		fmt.Fprintln(w, line)
	}
	switch {
	case errors.Is(err, ErrNoChanges):
		fmt.Fprintln(w, "(no changes)")
	case err != nil:
		fmt.Fprintf(w, "error: %v\n", err)
	}
	if errors.Is(err, ErrNoChanges) != (len(f.transcript) == 0) {
		t.Errorf("%s: Set = %v with transcript %q", title, err, f.transcript)
	}
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	golden.Check(t, name, got)
}

func TestGolden(t *testing.T) {
	keys := "# keys: "
	for _, n := range []string{"p1", "p2", "p3", "p4", "p5", "p6", "p2r"} {
		keys += fmt.Sprintf("%s=%s ", n, short(wgtypes.Key(pubs[n].Raw())))
	}
	keys += fmt.Sprintf("self=%s\n", short(wgtypes.Key(self.NodePublic().Raw())))
	for _, tc := range []struct {
		name  string
		steps []string // state names; "roam" moves p1; "restart" starts a new Device
	}{
		{"fresh", []string{"A", "A"}},
		{"peer_changes", []string{"A", "B", "B", "A"}},
		{"key_rotation", []string{"A", "A rotated", "A rotated"}},
		{"own_key_and_port", []string{"A", "A rekeyed", "A rekeyed"}},
		{"moved_prefix", []string{"A", "C", "C"}},
		{"roaming", []string{"A", "roam", "A", "restart", "A", "A"}},
		{"remove_all", []string{"A", "none", "none"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake("cvlan0")
			d := newTestDevice(f)
			var w strings.Builder
			w.WriteString(keys)
			for _, s := range tc.steps {
				switch s {
				case "roam":
					fmt.Fprintln(&w, "# p1 roams to 192.0.2.9:4000")
					f.roam(pubs["p1"], "192.0.2.9:4000")
					continue
				case "restart":
					fmt.Fprintln(&w, "# restart: a new Device on the same interface")
					d = newTestDevice(f)
					continue
				}
				setAndLog(t, &w, d, f, "Set "+s, states[s])
				if diff := f.check(states[s]); diff != "" && tc.name != "roaming" {
					t.Errorf("after Set %s: %s", s, diff)
				}
			}
			checkGolden(t, tc.name, w.String())
		})
	}
}

// mentions reports which of the named peers appear in the transcript.
func mentions(transcript []string, names ...string) []string {
	var out []string
	for _, n := range names {
		s := short(wgtypes.Key(pubs[n].Raw()))
		if slices.ContainsFunc(transcript, func(l string) bool { return strings.Contains(l, s) }) {
			out = append(out, n)
		}
	}
	return out
}

func TestUnchangedPeerUntouched(t *testing.T) {
	f := newFake("cvlan0")
	d := newTestDevice(f)
	if err := d.Set(states["A"]); err != nil {
		t.Fatal(err)
	}
	f.transcript = nil
	if err := d.Set(states["B"]); err != nil {
		t.Fatal(err)
	}
	if got := mentions(f.transcript, "p4"); len(got) != 0 {
		t.Errorf("the unchanged peer p4 was configured: %q", f.transcript)
	}
	if got := mentions(f.transcript, "p1", "p2", "p3", "p5", "p6"); len(got) != 5 {
		t.Errorf("changed peers configured: %v, want all of p1 p2 p3 p5 p6: %q", got, f.transcript)
	}
}

func TestKeyRotation(t *testing.T) {
	f := newFake("cvlan0")
	d := newTestDevice(f)
	if err := d.Set(states["A"]); err != nil {
		t.Fatal(err)
	}
	f.transcript = nil
	if err := d.Set(states["A rotated"]); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"peer " + short(wgtypes.Key(pubs["p2"].Raw())) + " remove",
		"peer " + short(wgtypes.Key(pubs["p2r"].Raw())) + " add endpoint=10.0.0.3:51820 allowed-ips=100.64.0.3/32 keepalive=25s",
	}
	if !slices.Equal(f.transcript, want) {
		t.Errorf("transcript:\n%s\nwant:\n%s", strings.Join(f.transcript, "\n"), strings.Join(want, "\n"))
	}
}

// TestRandomWalk applies the states in random orders and checks that each Set reaches
// its state, that a second Set changes nothing, and that a peer configured the same in
// both states is never touched.
func TestRandomWalk(t *testing.T) {
	names := make([]string, 0, len(states))
	for n := range states {
		names = append(names, n)
	}
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	for walk := range 50 {
		f := newFake("cvlan0")
		d := newTestDevice(f)
		var path []string
		prev := Config{}
		for range 12 {
			name := names[rng.IntN(len(names))]
			path = append(path, name)
			cfg := states[name]
			f.transcript = nil
			if err := d.Set(cfg); err != nil && !errors.Is(err, ErrNoChanges) {
				t.Fatalf("walk %d %q: %v", walk, path, err)
			}
			if diff := f.check(cfg); diff != "" {
				t.Fatalf("walk %d %q: %s", walk, path, diff)
			}
			for _, p := range cfg.Peers {
				if !prev.PrivateKey.IsZero() && unchanged(prev, cfg, p.PublicKey) {
					s := short(wgtypes.Key(p.PublicKey.Raw()))
					if slices.ContainsFunc(f.transcript, func(l string) bool { return strings.Contains(l, s) }) {
						t.Fatalf("walk %d %q: unchanged peer %s touched: %q", walk, path, s, f.transcript)
					}
				}
			}
			f.transcript = nil
			if err := d.Set(cfg); !errors.Is(err, ErrNoChanges) {
				t.Fatalf("walk %d %q: second Set = %v, changed %q", walk, path, err, f.transcript)
			}
			prev = cfg
		}
	}
}

// unchanged reports whether peer k is configured the same in a and b, and no prefix
// of it belongs to another peer in a (which would have moved it away).
func unchanged(a, b Config, k key.NodePublic) bool {
	find := func(c Config) (Peer, bool) {
		i := slices.IndexFunc(c.Peers, func(p Peer) bool { return p.PublicKey.Equal(k) })
		if i < 0 {
			return Peer{}, false
		}
		return c.Peers[i], true
	}
	pa, ok1 := find(a)
	pb, ok2 := find(b)
	if !ok1 || !ok2 || pa.Endpoint != pb.Endpoint || pa.PersistentKeepalive != pb.PersistentKeepalive {
		return false
	}
	sa, sb := slices.Clone(pa.AllowedIPs), slices.Clone(pb.AllowedIPs)
	cmp := func(x, y netip.Prefix) int { return strings.Compare(x.String(), y.String()) }
	slices.SortFunc(sa, cmp)
	slices.SortFunc(sb, cmp)
	return slices.Equal(sa, sb)
}

func TestValidate(t *testing.T) {
	p1, p2 := pubs["p1"], pubs["p2"]
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "no private key"},
		{Config{PrivateKey: self, ListenPort: 70000}, "listen port 70000"},
		{Config{PrivateKey: self, Peers: []Peer{{}}}, "zero public key"},
		{Config{PrivateKey: self, Peers: []Peer{{PublicKey: self.NodePublic()}}}, "own key"},
		{Config{PrivateKey: self, Peers: []Peer{{PublicKey: p1}, {PublicKey: p1}}}, "peer " + p1.String() + ": listed twice"},
		{Config{PrivateKey: self, Peers: []Peer{{PublicKey: p1, Endpoint: netip.MustParseAddrPort("10.0.0.1:0")}}}, "peer " + p1.String() + ": endpoint"},
		{Config{PrivateKey: self, Peers: []Peer{{PublicKey: p1, Endpoint: netip.AddrPortFrom(netip.Addr{}, 5)}}}, "want an address and a port"},
		{Config{PrivateKey: self, Peers: []Peer{{PublicKey: p1, PersistentKeepalive: -time.Second}}}, "keepalive -1s out of range"},
		{Config{PrivateKey: self, Peers: []Peer{{PublicKey: p1, AllowedIPs: []netip.Prefix{{}}}}}, "invalid prefix"},
		{Config{PrivateKey: self, Peers: []Peer{{PublicKey: p1, AllowedIPs: prefixes("::ffff:1.2.3.4/128")}}}, "invalid prefix"},
		{Config{PrivateKey: self, Peers: []Peer{{PublicKey: p1, AllowedIPs: prefixes("10.0.0.0/8", "10.1.2.3/8")}}}, "allowed IP 10.0.0.0/8 listed twice"},
		{Config{PrivateKey: self, Peers: []Peer{
			{PublicKey: p1, AllowedIPs: prefixes("100.64.0.1/32")},
			{PublicKey: p2, AllowedIPs: prefixes("100.64.0.1/32")},
		}}, "peer " + p2.String() + ": allowed IP 100.64.0.1/32 also belongs to peer " + p1.String()},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate = %v, want an error containing %q", err, tc.want)
		}
		f := newFake("cvlan0")
		if err := newTestDevice(f).Set(tc.cfg); err == nil || len(f.transcript) != 0 {
			t.Errorf("Set of an invalid config = %v, transcript %q", err, f.transcript)
		}
	}
	if err := states["A"].Validate(); err != nil {
		t.Errorf("Validate(A) = %v", err)
	}
}

// TestRefusedPeer checks that a peer the device refuses is named in the error and
// does not keep the other peers from being configured.
func TestRefusedPeer(t *testing.T) {
	f := newFake("cvlan0")
	f.refuse = map[wgtypes.Key]bool{wgtypes.Key(pubs["p2"].Raw()): true}
	d := newTestDevice(f)
	err := d.Set(states["A"])
	if err == nil || !strings.Contains(err.Error(), "peer "+pubs["p2"].String()) {
		t.Fatalf("Set = %v, want an error naming p2 (%s)", err, pubs["p2"])
	}
	if got := mentions(f.transcript, "p1", "p3", "p4", "p6"); len(got) != 4 {
		t.Errorf("configured %v, want p1 p3 p4 p6: %q", got, f.transcript)
	}
	f.refuse = nil
	f.transcript = nil
	if err := d.Set(states["A"]); err != nil {
		t.Fatal(err)
	}
	if got := mentions(f.transcript, "p1", "p2", "p3", "p4", "p6"); !slices.Equal(got, []string{"p2"}) {
		t.Errorf("retry configured %v, want only p2: %q", got, f.transcript)
	}
}

func TestStats(t *testing.T) {
	f := newFake("cvlan0")
	d := newTestDevice(f)
	if err := d.Set(states["B"]); err != nil {
		t.Fatal(err)
	}
	hs := time.Unix(1_800_000_000, 5)
	for i := range f.dev.Peers {
		p := &f.dev.Peers[i]
		if p.PublicKey == wgtypes.Key(pubs["p1"].Raw()) {
			p.LastHandshakeTime, p.ReceiveBytes, p.TransmitBytes = hs, 100, 200
		}
	}
	stats, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if len(stats) != len(states["B"].Peers) {
		t.Fatalf("%d peers, want %d", len(stats), len(states["B"].Peers))
	}
	for i, s := range stats {
		if i > 0 && stats[i-1].PublicKey.String() >= s.PublicKey.String() {
			t.Errorf("stats not in key order")
		}
		switch {
		case s.PublicKey.Equal(pubs["p1"]):
			want := PeerStats{PublicKey: pubs["p1"], Endpoint: netip.MustParseAddrPort("10.0.0.22:51820"), LastHandshake: hs, RxBytes: 100, TxBytes: 200}
			if s != want {
				t.Errorf("p1: %+v, want %+v", s, want)
			}
		case s.PublicKey.Equal(pubs["p4"]):
			if s.Endpoint != netip.MustParseAddrPort("[2001:db8::5]:51820") || !s.LastHandshake.IsZero() {
				t.Errorf("p4: %+v", s)
			}
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stats(); !errors.Is(err, ErrClosed) {
		t.Errorf("Stats after Close = %v, want ErrClosed", err)
	}
	if err := d.Set(states["B"]); !errors.Is(err, ErrClosed) {
		t.Errorf("Set after Close = %v, want ErrClosed", err)
	}
}
