package noiseconn

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/flynn/noise"

	"github.com/cvlan/cvlan/controlplane/key"
)

// connPair returns two Conns joined over loopback TCP after an in-memory
// handshake, and the raw connection under the first one.
func connPair(t *testing.T, maxMsg int) (a, b *Conn, araw *net.TCPConn) {
	t.Helper()
	ik, rk := mustKey(t), mustKey(t)
	ini, err := noise.NewHandshakeState(noise.Config{CipherSuite: cipherSuite, Pattern: noise.HandshakeIK,
		Initiator: true, Prologue: []byte(Protocol), StaticKeypair: ik, PeerStatic: rk.Public})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := noise.NewHandshakeState(noise.Config{CipherSuite: cipherSuite, Pattern: noise.HandshakeIK,
		Prologue: []byte(Protocol), StaticKeypair: rk})
	if err != nil {
		t.Fatal(err)
	}
	msg1, _, _, err := ini.WriteMessage(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := resp.ReadMessage(nil, msg1); err != nil {
		t.Fatal(err)
	}
	msg2, rRecv, rSend, err := resp.WriteMessage(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, iSend, iRecv, err := ini.ReadMessage(nil, msg2)
	if err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	ac, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	bc := <-accepted
	if bc == nil {
		t.FailNow()
	}
	a = newConn(ac, nil, iSend, iRecv, pub(rk), maxMsg)
	b = newConn(bc, nil, rSend, rRecv, pub(ik), maxMsg)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b, ac.(*net.TCPConn)
}

func frameHeader(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

func TestReadErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		send func(t *testing.T, a *Conn, raw *net.TCPConn)
		want error
	}{
		{"clean EOF", func(t *testing.T, a *Conn, raw *net.TCPConn) {}, io.EOF},
		{"truncated frame", func(t *testing.T, a *Conn, raw *net.TCPConn) {
			raw.Write(append(frameHeader(100), make([]byte, 10)...))
		}, io.ErrUnexpectedEOF},
		{"truncated frame length", func(t *testing.T, a *Conn, raw *net.TCPConn) {
			raw.Write([]byte{0, 0})
		}, io.ErrUnexpectedEOF},
		{"oversized frame", func(t *testing.T, a *Conn, raw *net.TCPConn) {
			raw.Write(append(frameHeader(70000), make([]byte, 100)...))
		}, ErrFrameTooLarge},
		{"too small frame", func(t *testing.T, a *Conn, raw *net.TCPConn) {
			raw.Write(append(frameHeader(5), make([]byte, 5)...))
		}, ErrFrameTooSmall},
		{"garbage ciphertext", func(t *testing.T, a *Conn, raw *net.TCPConn) {
			raw.Write(append(frameHeader(40), randBytes(t, 40)...))
		}, ErrDecrypt},
		{"replayed frame", func(t *testing.T, a *Conn, raw *net.TCPConn) {
			frame, err := appendFrames(nil, a.send, append(frameHeader(2), "hi"...))
			if err != nil {
				t.Fatal(err)
			}
			raw.Write(append(frame, frame...))
		}, ErrDecrypt},
		{"oversized message", func(t *testing.T, a *Conn, raw *net.TCPConn) {
			a.wmu.Lock()
			defer a.wmu.Unlock()
			if err := a.writeStream(frameHeader(1 << 20)); err != nil {
				t.Fatal(err)
			}
		}, ErrMessageTooLarge},
		{"truncated message", func(t *testing.T, a *Conn, raw *net.TCPConn) {
			a.wmu.Lock()
			defer a.wmu.Unlock()
			if err := a.writeStream(frameHeader(100), make([]byte, 10)); err != nil {
				t.Fatal(err)
			}
		}, io.ErrUnexpectedEOF},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, b, raw := connPair(t, 1000)
			tt.send(t, a, raw)
			raw.CloseWrite()
			b.SetReadDeadline(time.Now().Add(testTimeout))
			msg, err := b.ReadMsg()
			if tt.name == "replayed frame" { // the first copy is a valid message
				if err != nil || string(msg) != "hi" {
					t.Fatalf("first copy: %q, %v", msg, err)
				}
				msg, err = b.ReadMsg()
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("ReadMsg = %q, %v; want %v", msg, err, tt.want)
			}
			if _, again := b.ReadMsg(); again != err {
				t.Errorf("second ReadMsg: %v, want the same error", again)
			}
			if err := b.WriteMsg([]byte("x")); !errors.Is(err, net.ErrClosed) {
				t.Errorf("WriteMsg after a read error: %v, want net.ErrClosed", err)
			}
			// The other side sees the connection closed.
			raw.SetReadDeadline(time.Now().Add(testTimeout))
			if _, err := io.Copy(io.Discard, raw); err != nil && !errors.Is(err, io.EOF) && !isReset(err) {
				t.Errorf("the peer read %v, want EOF or reset", err)
			}
		})
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

func TestMessageLimits(t *testing.T) {
	a, b, _ := connPair(t, 1000)
	if err := a.WriteMsg(make([]byte, 1001)); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("WriteMsg of 1001 bytes with a limit of 1000: %v", err)
	}
	if err := a.WriteMsg(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if m, err := b.ReadMsg(); err != nil || len(m) != 1000 {
		t.Fatalf("ReadMsg = %d bytes, %v", len(m), err)
	}
}

func TestWriteAfterClose(t *testing.T) {
	a, _, _ := connPair(t, 0)
	a.Close()
	err := a.WriteMsg([]byte("x"))
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteMsg after Close: %v", err)
	}
	if again := a.WriteMsg([]byte("y")); again != err {
		t.Errorf("second WriteMsg: %v, want the same error", again)
	}
	if _, err := a.ReadMsg(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadMsg after Close: %v", err)
	}
}

func TestReadFrame(t *testing.T) {
	in := append(frameHeader(16), make([]byte, 16)...)
	in = append(in, frameHeader(MaxFrame)...)
	in = append(in, bytes.Repeat([]byte{7}, MaxFrame)...)
	r := bytes.NewReader(in)
	buf := make([]byte, 0, 32)
	f, err := ReadFrame(r, buf)
	if err != nil || len(f) != 16 || &f[0] != &buf[:1][0] {
		t.Fatalf("first frame: %d bytes, %v (buffer reused: %v)", len(f), err, err == nil && &f[0] == &buf[:1][0])
	}
	if f, err = ReadFrame(r, f); err != nil || len(f) != MaxFrame || f[MaxFrame-1] != 7 {
		t.Fatalf("second frame: %d bytes, %v", len(f), err)
	}
	if _, err := ReadFrame(r, nil); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}
}

// FuzzReadFrame checks that any input gives frames that match their length
// prefixes, within the limits, or one of the documented errors.
func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{})
	f.Add(append(frameHeader(16), make([]byte, 16)...))
	f.Add(append(frameHeader(100), make([]byte, 10)...))
	f.Add(frameHeader(70000))
	f.Add(frameHeader(15))
	f.Add([]byte{0, 0, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		var buf []byte
		for {
			off := len(data) - r.Len()
			frame, err := ReadFrame(r, buf)
			if err != nil {
				if !(err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) ||
					errors.Is(err, ErrFrameTooLarge) || errors.Is(err, ErrFrameTooSmall)) {
					t.Fatalf("unexpected error %v", err)
				}
				if err == io.EOF && off != len(data) {
					t.Fatalf("io.EOF with %d bytes left", len(data)-off)
				}
				return
			}
			n := int(binary.BigEndian.Uint32(data[off:]))
			if len(frame) != n || n < MinFrame || n > MaxFrame || !bytes.Equal(frame, data[off+4:off+4+n]) {
				t.Fatalf("frame of %d bytes at %d, prefix says %d", len(frame), off, n)
			}
			buf = frame
		}
	})
}

// FuzzReadMsg checks that any decrypted stream gives messages that match their
// length prefixes and never exceed the limit, or one of the documented errors.
func FuzzReadMsg(f *testing.F) {
	f.Add([]byte{}, uint32(10))
	f.Add(append(frameHeader(3), "abc"...), uint32(3))
	f.Add(append(frameHeader(4), "abc"...), uint32(10))
	f.Add(frameHeader(1<<30), uint32(DefaultMaxMessage))
	f.Add(append(frameHeader(0), frameHeader(1)...), uint32(0))
	f.Fuzz(func(t *testing.T, data []byte, limit uint32) {
		limit %= 1 << 20
		r := bytes.NewReader(data)
		for {
			off := len(data) - r.Len()
			msg, err := ReadMsgFrom(r, int(limit))
			if err != nil {
				if !(err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrMessageTooLarge)) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			n := int(binary.BigEndian.Uint32(data[off:]))
			if len(msg) != n || n > int(limit) || !bytes.Equal(msg, data[off+4:off+4+n]) {
				t.Fatalf("message of %d bytes at %d, prefix says %d, limit %d", len(msg), off, n, limit)
			}
		}
	})
}

// FuzzUpgrade feeds arbitrary msg1 bytes to the server: it must never panic, never
// upgrade (a recorder cannot be hijacked), and call authorize only for the valid
// msg1s of the seeds: any change to one breaks its AEAD tags.
func FuzzUpgrade(f *testing.F) {
	seed := bytes.Repeat([]byte{0x42}, 64)
	ctrl, err := noise.DH25519.GenerateKeypair(bytes.NewReader(seed[:32]))
	if err != nil {
		f.Fatal(err)
	}
	machine, err := noise.DH25519.GenerateKeypair(bytes.NewReader(seed[32:]))
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	valid := map[string]bool{}
	// The seeds are the same in every fuzzing process: deterministic ephemerals.
	for i, hello := range [][]byte{[]byte("hello"), []byte("hi!"), bytes.Repeat([]byte{1}, 1000)} {
		eph := bytes.NewReader(bytes.Repeat([]byte{byte(i + 1)}, 32))
		msg1 := makeMsg1Rand(f, eph, ctrl, machine, now, hello)
		valid[string(msg1)] = true
		f.Add(msg1)
		f.Add(msg1[:len(msg1)-1])
	}
	f.Add(makeMsg1(f, ctrl, machine, now.Add(-time.Hour), nil))
	f.Add([]byte{})
	f.Add(make([]byte, handshakeOverhead))
	f.Fuzz(func(t *testing.T, msg1 []byte) {
		s := &Server{Key: ctrl, Now: func() time.Time { return now }}
		req := httptest.NewRequest(http.MethodPost, Path, nil)
		req.Header.Set("Upgrade", Protocol)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set(HandshakeHeader, base64.StdEncoding.EncodeToString(msg1))
		w := httptest.NewRecorder()
		called := false
		c, err := s.Upgrade(w, req, func(peer key.MachinePublic, hello []byte) ([]byte, bool) {
			called = true
			if !peer.Equal(pub(machine)) {
				t.Errorf("authorize called with %v", peer)
			}
			return hello, len(hello)%2 == 0
		})
		if c != nil || err == nil {
			t.Fatalf("Upgrade on a recorder returned a Conn")
		}
		if called && !valid[string(msg1)] {
			t.Fatalf("authorize called for a msg1 that is not one of ours")
		}
		if !called && (w.Code == http.StatusSwitchingProtocols || w.Header().Get(HandshakeHeader) != "") {
			t.Fatalf("HTTP %d with a handshake without authorize", w.Code)
		}
	})
}

// TestMessageSizes sends messages around every size boundary of the frame and
// buffer code, one at a time, and checks that each arrives whole and that the
// reading Conn then holds no pooled buffer.
func TestMessageSizes(t *testing.T) {
	const limit = 2 << 20
	a, b, _ := connPair(t, limit)
	for _, n := range []int{0, 1, smallFrame - 20, smallFrame - 19, smallFrame, smallWrite - 40, smallWrite,
		maxPlain - 4, maxPlain - 3, maxPlain, 2*maxPlain + 7, readBufSize + 1, writeBatch - 3, writeBatch + 1, limit} {
		want := randBytes(t, n)
		errc := make(chan error, 1)
		go func() { errc <- a.WriteMsg(want) }()
		b.SetReadDeadline(time.Now().Add(testTimeout))
		got, err := b.ReadMsg()
		if err != nil {
			t.Fatalf("reading the %d-byte message: %v", n, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("got %d bytes, want the %d sent", len(got), n)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if b.pool || b.r.buf != nil {
			t.Fatalf("after the %d-byte message: holding a pooled frame (%v) or read buffer (%v)", n, b.pool, b.r.buf != nil)
		}
	}
}
