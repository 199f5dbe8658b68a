package noiseconn

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
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
type Conn struct {
	nc     net.Conn
	peer   key.MachinePublic
	maxMsg int

	rmu   sync.Mutex
	r     io.Reader // frames, with any bytes buffered before the handshake ended
	recv  *noise.CipherState
	rerr  error
	frame []byte // ciphertext of the last frame
	plain []byte // plaintext of the last frame
	off   int    // bytes of plain already consumed

	wmu     sync.Mutex
	send    *noise.CipherState
	werr    error
	scratch []byte // plaintext of the first frame of a message
	wbuf    []byte // frames not yet written

	closeOnce sync.Once
	closeErr  error
}

func newConn(nc net.Conn, r io.Reader, send, recv *noise.CipherState, peer key.MachinePublic, maxMsg int) *Conn {
	if maxMsg <= 0 {
		maxMsg = DefaultMaxMessage
	}
	maxMsg = min(maxMsg, maxMaxMessage)
	if r == nil {
		r = bufio.NewReader(nc)
	}
	return &Conn{nc: nc, r: r, send: send, recv: recv, peer: peer, maxMsg: maxMsg}
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
		frame, err := ReadFrame(c.r, c.frame)
		if err != nil {
			return 0, err
		}
		c.frame = frame
		plain, err := c.recv.Decrypt(c.plain[:0], nil, frame)
		if err != nil {
			return 0, fmt.Errorf("frame of %d bytes: %w", len(frame), ErrDecrypt)
		}
		c.plain, c.off = plain, 0
	}
	n := copy(b, c.plain[c.off:])
	c.off += n
	return n, nil
}

// WriteMsg writes msg as one message. A message over the limit gives an error
// wrapping ErrMessageTooLarge and leaves the Conn usable; any other error closes it.
func (c *Conn) WriteMsg(msg []byte) error {
	if len(msg) > c.maxMsg {
		return fmt.Errorf("writing control message of %d bytes, limit %d: %w", len(msg), c.maxMsg, ErrMessageTooLarge)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	first := msg[:min(len(msg), maxPlain-4)]
	c.scratch = binary.BigEndian.AppendUint32(c.scratch[:0], uint32(len(msg)))
	c.scratch = append(c.scratch, first...)
	return c.writeStream(c.scratch, msg[len(first):])
}

// writeStream encrypts and writes parts of the plaintext stream; the caller holds
// c.wmu.
func (c *Conn) writeStream(parts ...[]byte) error {
	if c.werr != nil {
		return c.werr
	}
	err := c.emit(parts)
	if err == nil && len(c.wbuf) > 0 {
		_, err = c.nc.Write(c.wbuf)
	}
	c.wbuf = c.wbuf[:0]
	if err != nil {
		c.werr = fmt.Errorf("writing control message to %s: %w", c.nc.RemoteAddr(), err)
		c.Close()
		return c.werr
	}
	return nil
}

func (c *Conn) emit(parts [][]byte) error {
	for _, p := range parts {
		for len(p) > 0 {
			chunk := p[:min(len(p), maxPlain)]
			p = p[len(chunk):]
			var err error
			if c.wbuf, err = appendFrames(c.wbuf, c.send, chunk); err != nil {
				return err
			}
			if len(c.wbuf) >= writeBatch {
				if _, err := c.nc.Write(c.wbuf); err != nil {
					return err
				}
				c.wbuf = c.wbuf[:0]
			}
		}
	}
	return nil
}
