package framed

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// wsConn is the relay's side of a WebSocket as the net.Conn under noiseconn: each
// Write is one binary message, and Read returns the bytes of the binary messages
// in order. Unlike websocket.NetConn, it holds next to nothing on an idle
// connection, which is what a relay has thousands of:
//
//   - Read waits for a message in the library's Reader, holding no buffer, then
//     reads the whole message into a pooled buffer that goes back once read;
//   - the library writes through a 16-byte bufio.Writer into a heldWriter, which
//     gathers a message in a pooled buffer and writes it out at once;
//   - deadlines are timers, and no context is passed to the library, which
//     registers (and keeps the memory of) a callback on any context that can end.
//
// A deadline that passes during a Read or Write closes the connection, the only
// way to end a blocked call of the library; one that passed before fails the
// next call. Close closes the connection without the WebSocket close handshake,
// which can wait 10 s for an unresponsive peer: noiseconn's messages are whole
// units, and the peer sees the end of the stream.
type wsConn struct {
	ws            *websocket.Conn
	out           *heldWriter
	local, remote net.Addr

	// Read state: one reader at a time (noiseconn's).
	msg *[]byte // the message being read, pooled; nil between messages
	off int
	rdl deadline

	wmu sync.Mutex
	wdl deadline
}

// newWSConn returns the wsConn over ws, which Accept made with hj.
func newWSConn(ws *websocket.Conn, hj *wsHijacker) *wsConn {
	ws.SetReadLimit(wsReadLimit)
	c := &wsConn{ws: ws, out: hj.out, local: hj.nc.LocalAddr(), remote: hj.nc.RemoteAddr()}
	c.rdl.expire = c.closeNow
	c.wdl.expire = c.closeNow
	return c
}

func (c *wsConn) closeNow() { c.ws.CloseNow() }

func (c *wsConn) Read(p []byte) (int, error) {
	if c.msg == nil {
		if err := c.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, (*c.msg)[c.off:])
	if c.off += n; c.off == len(*c.msg) {
		putMsgBuf(c.msg)
		c.msg = nil
	}
	return n, nil
}

// next reads the next non-empty binary message into c.msg.
func (c *wsConn) next() error {
	if err := c.rdl.begin(); err != nil {
		return err
	}
	defer c.rdl.end()
	for {
		typ, r, err := c.ws.Reader(context.Background())
		if err != nil {
			switch websocket.CloseStatus(err) {
			case websocket.StatusNormalClosure, websocket.StatusGoingAway:
				err = io.EOF
			}
			return c.rdl.failed(err)
		}
		if typ != websocket.MessageBinary {
			c.ws.CloseNow()
			return fmt.Errorf("WebSocket %v message: want binary", typ)
		}
		buf := getMsgBuf()
		*buf, err = readAll(r, (*buf)[:0])
		if err != nil {
			putMsgBuf(buf)
			return c.rdl.failed(err)
		}
		if len(*buf) > 0 {
			c.msg, c.off = buf, 0
			return nil
		}
		putMsgBuf(buf)
	}
}

// readAll appends what r gives until io.EOF to b.
func readAll(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.wdl.begin(); err != nil {
		return 0, err
	}
	defer c.wdl.end()
	c.out.hold()
	err := c.ws.Write(context.Background(), websocket.MessageBinary, p)
	if ferr := c.out.release(); err == nil {
		err = ferr
	}
	if err != nil {
		return 0, c.wdl.failed(err)
	}
	return len(p), nil
}

func (c *wsConn) Close() error {
	c.rdl.stop()
	c.wdl.stop()
	return c.ws.CloseNow()
}

func (c *wsConn) LocalAddr() net.Addr  { return c.local }
func (c *wsConn) RemoteAddr() net.Addr { return c.remote }

func (c *wsConn) SetDeadline(t time.Time) error {
	c.rdl.set(t)
	c.wdl.set(t)
	return nil
}

func (c *wsConn) SetReadDeadline(t time.Time) error  { c.rdl.set(t); return nil }
func (c *wsConn) SetWriteDeadline(t time.Time) error { c.wdl.set(t); return nil }

// deadline is a wsConn's read or write deadline.
type deadline struct {
	expire func() // ends the call in progress: closes the connection

	mu     sync.Mutex
	when   time.Time
	timer  *time.Timer
	active bool // a call is in progress
	passed bool
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.when, d.passed = t, false
	switch {
	case t.IsZero():
		if d.timer != nil {
			d.timer.Stop()
		}
	case d.timer == nil:
		d.timer = time.AfterFunc(time.Until(t), d.fire)
	default:
		d.timer.Reset(time.Until(t))
	}
}

// fire runs when the timer does; it may be for a deadline since moved.
func (d *deadline) fire() {
	d.mu.Lock()
	if d.when.IsZero() || time.Now().Before(d.when) {
		d.mu.Unlock()
		return
	}
	d.passed = true
	active := d.active
	d.mu.Unlock()
	if active {
		d.expire()
	}
}

func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
	}
}

// begin starts a call, unless the deadline passed.
func (d *deadline) begin() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.passed {
		return os.ErrDeadlineExceeded
	}
	d.active = true
	return nil
}

func (d *deadline) end() {
	d.mu.Lock()
	d.active = false
	d.mu.Unlock()
}

// failed returns the error of a call: a timeout if the deadline ended it.
func (d *deadline) failed(err error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.passed && !errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w (%v)", os.ErrDeadlineExceeded, err)
	}
	return err
}

// wsHijacker gives the WebSocket library, which keeps the buffers of the
// connection it hijacks for the connection's life, a small reader and a 16-byte
// writer over a heldWriter, instead of net/http's 4 KiB ones.
type wsHijacker struct {
	http.ResponseWriter
	nc  net.Conn
	out *heldWriter
}

// wsReadBuf is the WebSocket library's read buffer on the relay: it reads frame
// headers through it, and the rest, read into a whole-message buffer, around it.
const wsReadBuf = 64

func (w *wsHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if err := brw.Writer.Flush(); err != nil {
		nc.Close()
		return nil, nil, err
	}
	// The library takes what the reader has buffered, then reads nc itself: the
	// bytes net/http read ahead must be in the new reader's buffer.
	ahead, _ := brw.Reader.Peek(brw.Reader.Buffered())
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(ahead)), nc), max(wsReadBuf, len(ahead)))
	br.Peek(len(ahead))
	w.nc, w.out = nc, &heldWriter{w: nc}
	return nc, bufio.NewReadWriter(br, bufio.NewWriterSize(w.out, 16)), nil
}

// heldWriter is the writer under the WebSocket library's bufio.Writer. While a
// wsConn.Write runs it gathers what the library writes (the frame header, then
// the payload) in a pooled buffer and writes it out when the message is done,
// as one write to the TLS connection; otherwise (control frames) it writes
// through.
type heldWriter struct {
	w    io.Writer
	mu   sync.Mutex
	held bool
	buf  *[]byte
}

func (h *heldWriter) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.held {
		return h.w.Write(p)
	}
	if h.buf == nil {
		h.buf = getMsgBuf()
	}
	*h.buf = append(*h.buf, p...)
	return len(p), nil
}

func (h *heldWriter) hold() {
	h.mu.Lock()
	h.held = true
	h.mu.Unlock()
}

// release writes out what was gathered since hold.
func (h *heldWriter) release() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held = false
	if h.buf == nil {
		return nil
	}
	_, err := h.w.Write(*h.buf)
	putMsgBuf(h.buf)
	h.buf = nil
	return err
}

// Message buffers, for a message read or written whole.
const (
	msgBufSize      = 4 << 10
	maxPooledMsgBuf = 2 * wsReadLimit
)

var msgBufPool = sync.Pool{New: func() any { b := make([]byte, 0, msgBufSize); return &b }}

func getMsgBuf() *[]byte { return msgBufPool.Get().(*[]byte) }

func putMsgBuf(b *[]byte) {
	if cap(*b) <= maxPooledMsgBuf {
		*b = (*b)[:0]
		msgBufPool.Put(b)
	}
}
