package stun

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

func serve(t *testing.T) (*Server, *net.UDPConn) {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{}
	done := make(chan error, 1)
	go func() { done <- s.Serve(pc) }()
	t.Cleanup(func() {
		pc.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, pc
}

func TestBinding(t *testing.T) {
	s, pc := serve(t)
	uc, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	c, err := stun.NewClient(uc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 3 {
		var got stun.XORMappedAddress
		var cbErr error
		err := c.Do(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint), func(e stun.Event) {
			if e.Error != nil {
				cbErr = e.Error
				return
			}
			cbErr = got.GetFrom(e.Message)
		})
		if err != nil || cbErr != nil {
			t.Fatalf("binding: %v, %v", err, cbErr)
		}
		want := uc.LocalAddr().(*net.UDPAddr).AddrPort()
		ip, _ := netip.AddrFromSlice(got.IP)
		if netip.AddrPortFrom(ip.Unmap(), uint16(got.Port)) != want {
			t.Fatalf("mapped address %v:%d, want %v", got.IP, got.Port, want)
		}
	}
	if n := s.Counters().Requests; n != 3 {
		t.Errorf("%d requests counted, want 3", n)
	}
}

func TestMalformedIgnored(t *testing.T) {
	s, pc := serve(t)
	uc, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	good := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	badFP := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw
	badFP[len(badFP)-1] ^= 1
	indication := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodBinding, stun.ClassIndication)).Raw
	for _, b := range [][]byte{
		[]byte("not stun at all"),
		good[:len(good)-1], // truncated header
		append(append([]byte(nil), good[:2]...), append([]byte{0, 8}, good[4:]...)...), // says 8 attribute bytes, has none
		badFP,
		indication,
	} {
		if _, err := uc.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	// The server handles datagrams in order: once the good one is answered, the
	// others were dropped.
	if _, err := uc.Write(good); err != nil {
		t.Fatal(err)
	}
	uc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1500)
	n, err := uc.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	m := &stun.Message{Raw: buf[:n]}
	if err := m.Decode(); err != nil || m.Type != stun.BindingSuccess {
		t.Fatalf("first response: %v %v, want the good request's", err, m.Type)
	}
	if c := s.Counters(); c.Malformed != 4 || c.Ignored != 1 || c.Requests != 1 {
		t.Errorf("counters %+v, want 4 malformed, 1 ignored, 1 request", c)
	}
}

func FuzzHandle(f *testing.F) {
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewSoftware("x")).Raw)
	f.Add([]byte("garbage"))
	from := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 3478}
	s := &Server{}
	out := new(stun.Message)
	f.Fuzz(func(t *testing.T, b []byte) {
		resp := s.Handle(b, from, out)
		if resp == nil {
			return
		}
		m := &stun.Message{Raw: append([]byte(nil), resp...)}
		if err := m.Decode(); err != nil || m.Type != stun.BindingSuccess {
			t.Fatalf("response does not decode as a Binding success: %v", err)
		}
		var got stun.XORMappedAddress
		if err := got.GetFrom(m); err != nil || !got.IP.Equal(from.IP) || got.Port != from.Port {
			t.Fatalf("mapped %v:%d (%v), want %v", got.IP, got.Port, err, from)
		}
		in := &stun.Message{Raw: append([]byte(nil), b...)}
		if in.Decode() != nil || in.TransactionID != m.TransactionID {
			t.Fatal("response to another transaction")
		}
	})
}
