package noiseconn

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/flynn/noise"

	"github.com/cvlan/cvlan/controlplane/key"
)

// writeBatch is how many bytes of frames WriteMsg gathers before writing them out.
const writeBatch = 256 << 10

// Conn is an established control channel. One goroutine may call ReadMsg while any
// number call WriteMsg; writes are serialized, each message written whole. The first
// read or write error is final: the Conn closes its connection and returns that
// error from every later call of the same kind.
//
// An idle Conn holds no buffers beyond its last small frame: reads go through a
// pooled buffer only while bytes wait in it, and writes encrypt into a pooled
// buffer that goes back once written. A server keeps thousands of them.
type Conn struct {
	nc     net.Conn
	peer   key.MachinePublic
	maxMsg int

	rmu   sync.Mutex
	r     lazyReader // frames, with any bytes buffered before the handshake ended
	recv  *noise.CipherState
	rerr  error
	frame []byte // the last frame, decrypted in place; a pooled one while large
	pool  bool   // frame is from framePool
	plain []byte // plaintext of the last frame: frame[:len-tag]
	off   int    // bytes of plain already consumed

	wmu  sync.Mutex
	send *noise.CipherState
	werr error

	closeOnce sync.Once
	closeErr  error
}

// newConn returns a Conn over nc; ahead holds bytes already read from nc.
func newConn(nc net.Conn, ahead []byte, send, recv *noise.CipherState, peer key.MachinePublic, maxMsg int) *Conn {
	if maxMsg <= 0 {
		maxMsg = DefaultMaxMessage
	}
	maxMsg = min(maxMsg, maxMaxMessage)
	return &Conn{nc: nc, r: newLazyReader(nc, ahead), send: send, recv: recv, peer: peer, maxMsg: maxMsg}
}

// readAhead returns a copy of the bytes br has buffered, so as not to keep br.
func readAhead(br *bufio.Reader) []byte {
	ahead, _ := br.Peek(br.Buffered())
	return bytes.Clone(ahead)
}

// Peer returns the static key of the other side: the machine's key on the
// controller, the pinned controller key on the agent. The handshake proved it.
func (c *Conn) Peer() key.MachinePublic { return c.peer }

// RemoteAddr returns the address of the other side of the connection.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// SetReadDeadline sets the deadline for ReadMsg. Reaching it is a read error, and
// read errors are final.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// SetWriteDeadline sets the deadline for WriteMsg. Reaching it is a write error, and
// write errors are final.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.nc.SetWriteDeadline(t) }

// Close closes the connection; pending and later ReadMsg and WriteMsg calls fail.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.nc.Close() })
	return c.closeErr
}

// ReadMsg returns the next message. It returns io.EOF if the peer closed the
// connection between messages; any other error wraps its cause (ErrDecrypt,
// ErrFrameTooLarge, ErrFrameTooSmall, ErrMessageTooLarge, io.ErrUnexpectedEOF, a
// network error) and closes the Conn.
func (c *Conn) ReadMsg() ([]byte, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.rerr != nil {
		return nil, c.rerr
	}
	msg, err := ReadMsgFrom(plainReader{c}, c.maxMsg)
	if err != nil {
		if err != io.EOF {
			err = fmt.Errorf("reading control message from %s: %w", c.nc.RemoteAddr(), err)
		}
		c.rerr = err
		c.Close()
		return nil, err
	}
	return msg, nil
}

// plainReader reads the decrypted stream; the caller holds c.rmu.
type plainReader struct{ c *Conn }

func (p plainReader) Read(b []byte) (int, error) {
	c := p.c
	for c.off == len(c.plain) {
		if err := c.readFrame(); err != nil {
			return 0, err
		}
	}
	n := copy(b, c.plain[c.off:])
	c.off += n
	if c.off == len(c.plain) && c.pool {
		// Consumed: a large buffer goes back, so that an idle Conn holds none.
		framePool.Put((*[MaxFrame]byte)(c.frame[:MaxFrame]))
		c.frame, c.plain, c.off, c.pool = nil, nil, 0, false
	}
	return n, nil
}

// smallFrame is the largest frame read into a buffer of the Conn's own; larger
// ones are read into a pooled buffer.
const smallFrame = 512

var framePool = sync.Pool{New: func() any { return new([MaxFrame]byte) }}

// readFrame reads and decrypts the next frame into c.plain.
func (c *Conn) readFrame() error {
	n, err := readFrameLen(&c.r)
	if err != nil {
		return err
	}
	buf := c.frame
	if c.pool = n > smallFrame; c.pool {
		buf = framePool.Get().(*[MaxFrame]byte)[:]
	} else if cap(buf) < n {
		// Sized to need: keepalives, all most idle Conns ever read, take 64.
		buf = make([]byte, (n+63)&^63)
	}
	c.frame = buf[:n]
	if err := readFrameBody(&c.r, c.frame); err != nil {
		return err
	}
	// In place: the plaintext overwrites the ciphertext.
	plain, err := c.recv.Decrypt(c.frame[:0], nil, c.frame)
	if err != nil {
		return fmt.Errorf("frame of %d bytes: %w", n, ErrDecrypt)
	}
	c.plain, c.off = plain, 0
	return nil
}

// WriteMsg writes msg as one message. A message over the limit gives an error
// wrapping ErrMessageTooLarge and leaves the Conn usable; any other error closes it.
func (c *Conn) WriteMsg(msg []byte) error {
	if len(msg) > c.maxMsg {
		return fmt.Errorf("writing control message of %d bytes, limit %d: %w", len(msg), c.maxMsg, ErrMessageTooLarge)
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(msg)))
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeStream(hdr[:], msg)
}

// writeStream encrypts and writes parts of the plaintext stream; the caller holds
// c.wmu.
func (c *Conn) writeStream(parts ...[]byte) error {
	if c.werr != nil {
		return c.werr
	}
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	buf := getWriteBuf(framedLen(n))
	out, err := (*buf)[:0], error(nil)
	for err == nil && len(parts) > 0 {
		if out, err = sealFrame(out, c.send, &parts); err == nil && (len(out) >= writeBatch || len(parts) == 0) {
			_, err = c.nc.Write(out)
			out = out[:0]
		}
	}
	putWriteBuf(buf)
	if err != nil {
		c.werr = fmt.Errorf("writing control message to %s: %w", c.nc.RemoteAddr(), err)
		c.Close()
		return c.werr
	}
	return nil
}

// Write buffers: a small one fits a message of a few packets, a large one a
// batch of frames and one more.
const (
	smallWrite = 4 << 10
	largeWrite = writeBatch + 4 + MaxFrame
)

var (
	smallWritePool = sync.Pool{New: func() any { b := make([]byte, smallWrite); return &b }}
	largeWritePool = sync.Pool{New: func() any { b := make([]byte, largeWrite); return &b }}
)

// framedLen is the size of n bytes of plaintext as frames.
func framedLen(n int) int {
	frames := (n + maxPlain - 1) / maxPlain
	return n + frames*(4+MinFrame)
}

func getWriteBuf(n int) *[]byte {
	if n <= smallWrite {
		return smallWritePool.Get().(*[]byte)
	}
	return largeWritePool.Get().(*[]byte)
}

func putWriteBuf(b *[]byte) {
	if cap(*b) == smallWrite {
		smallWritePool.Put(b)
	} else {
		largeWritePool.Put(b)
	}
}

// readBufSize is the size of the pooled buffers that reads from a socket go
// through.
const readBufSize = 16 << 10

var readBufPool = sync.Pool{New: func() any { return new([readBufSize]byte) }}

// lazyReader reads a connection's frames without holding a buffer while the
// connection is idle. A connection that buffers itself (TLS, a WebSocket) is read
// directly. A socket is read through a pooled buffer, for one system call per
// many frames on a busy connection, but only when a non-blocking read finds
// bytes waiting; otherwise the read blocks on the caller's slice. The buffer goes
// back to the pool once empty.
type lazyReader struct {
	ahead []byte          // read from the connection before the handshake ended
	r     io.Reader       // the connection
	raw   syscall.RawConn // r's socket, if it is one
	buf   *[readBufSize]byte
	i, n  int // buf[i:n] waits
}

func newLazyReader(nc net.Conn, ahead []byte) lazyReader {
	l := lazyReader{ahead: ahead, r: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			l.raw = raw
		}
	}
	return l
}

func (l *lazyReader) Read(p []byte) (int, error) {
	switch {
	case len(l.ahead) > 0:
		k := copy(p, l.ahead)
		l.ahead = l.ahead[k:]
		return k, nil
	case l.buf != nil:
		k := copy(p, l.buf[l.i:l.n])
		if l.i += k; l.i == l.n {
			readBufPool.Put(l.buf)
			l.buf = nil
		}
		return k, nil
	case l.raw != nil && len(p) < readBufSize:
		buf := readBufPool.Get().(*[readBufSize]byte)
		if m := readNonBlocking(l.raw, buf[:]); m > 0 {
			k := copy(p, buf[:m])
			if k < m {
				l.buf, l.i, l.n = buf, k, m
			} else {
				readBufPool.Put(buf)
			}
			return k, nil
		}
		readBufPool.Put(buf)
	}
	// Nothing waits, or nothing is known to: a blocking read holds no buffer of
	// ours. It also reports EOF, errors and deadlines as the connection does.
	return l.r.Read(p)
}
