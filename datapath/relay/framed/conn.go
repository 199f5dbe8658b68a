package framed

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cvlan/cvlan/controlplane/noiseconn"
)

// client is one connection on the Server: a node's, or a mesh link's.
//
// An idle connection holds one goroutine, its reader. Its writer runs only while
// frames come: enqueue starts it and it ends when nothing was queued for
// writerLinger. The keepalive is a timer that queues a keepalive frame.
type client struct {
	s         *Server
	conn      *noiseconn.Conn
	transport string
	mesh      bool
	id        peerID // zero for a mesh link
	peers     Peers

	watching map[peerID]struct{} // destinations c watches for peer-gone; under s.mu

	qmu     sync.Mutex
	ring    [][]byte // drop-oldest queue of frames, allocated on first use
	head    int
	n       int
	ctrl    [][]byte // mesh presence, never dropped
	kaDue   bool     // a keepalive is to be sent
	writing bool     // a writer goroutine runs
	closed  bool     // no writer starts any more
	wake    chan struct{}
	writers sync.WaitGroup
	ka      *time.Timer // queues a keepalive after KeepAlive without a write

	done      chan struct{}
	closeOnce sync.Once
}

func (s *Server) newClient(conn *noiseconn.Conn, transport string, g Grant) *client {
	c := &client{
		s:         s,
		conn:      conn,
		transport: transport,
		mesh:      g.Mesh,
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	if !g.Mesh {
		c.id = peerID{g.Tenant, g.Node}
		c.peers = g.Peers
	}
	c.ka = time.AfterFunc(s.cfg.KeepAlive, c.keepAliveDue)
	return c
}

func (c *client) name() string {
	if c.mesh {
		return "mesh peer " + c.conn.Peer().String()
	}
	return c.id.node.String()
}

// close ends the connection: it stops the writer and unblocks the reader, which
// then ends; serve closes the connection itself. It never blocks on the network,
// so it may be called under s.mu.
func (c *client) close() {
	c.closeOnce.Do(func() {
		close(c.done)
		c.qmu.Lock()
		c.closed = true
		c.qmu.Unlock()
		c.ka.Stop()
		if c.conn != nil {
			// The reader and the writer check done after each deadline they set,
			// so these cannot be overridden unseen.
			past := time.Unix(1, 0)
			c.conn.SetReadDeadline(past)
			c.conn.SetWriteDeadline(past)
		}
	})
}

// enqueue queues frame f for c, dropping the oldest queued frame when full.
func (c *client) enqueue(f []byte) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.ring == nil {
		c.ring = make([][]byte, c.s.cfg.QueueLen)
	}
	if c.n == len(c.ring) {
		c.ring[c.head] = nil
		c.head = (c.head + 1) % len(c.ring)
		c.n--
		c.s.metrics.drop(dropQueueFull)
	}
	c.ring[(c.head+c.n)%len(c.ring)] = f
	c.n++
	c.wakeLocked()
}

// enqueueCtrl queues a mesh control frame, which is never dropped; a link that
// falls too far behind is closed instead.
func (c *client) enqueueCtrl(f []byte) {
	c.qmu.Lock()
	over := len(c.ctrl) >= maxMeshBacklog
	if !over {
		c.ctrl = append(c.ctrl, f)
		c.wakeLocked()
	}
	c.qmu.Unlock()
	if over {
		c.close()
	}
}

// keepAliveDue queues a keepalive; it is c.ka's function.
func (c *client) keepAliveDue() {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	c.kaDue = true
	c.wakeLocked()
}

// wakeLocked wakes the writer, or starts one unless c is closed; the caller
// holds c.qmu.
func (c *client) wakeLocked() {
	switch {
	case c.writing:
		select {
		case c.wake <- struct{}{}:
		default:
		}
	case !c.closed:
		c.writing = true
		c.writers.Add(1)
		go c.writeLoop()
	}
}

// writerLinger is how long a writer waits for more frames before it ends.
// Starting a writer for every frame would cost more than its stack.
const writerLinger = time.Second

// take moves the queued frames to batch. With nothing queued it returns batch
// as it is and, if stop, marks the writer stopped.
func (c *client) take(batch [][]byte, stop bool) [][]byte {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.kaDue {
		batch = append(batch, keepAliveFrame)
		c.kaDue = false
	}
	batch = append(batch, c.ctrl...)
	clear(c.ctrl)
	c.ctrl = c.ctrl[:0]
	for ; c.n > 0; c.n-- {
		batch = append(batch, c.ring[c.head])
		c.ring[c.head] = nil
		c.head = (c.head + 1) % len(c.ring)
	}
	if len(batch) == 0 && stop {
		c.writing = false
	}
	return batch
}

// keepAliveFrame is the keepalive frame; the writer only reads it.
var keepAliveFrame = KeepAliveFrame()

// writeLoop writes queued frames until none came for writerLinger or c closes.
func (c *client) writeLoop() {
	defer c.writers.Done()
	var batch [][]byte
	var linger *time.Timer
	for {
		if batch = c.take(batch[:0], false); len(batch) == 0 {
			if linger == nil {
				linger = time.NewTimer(writerLinger)
				defer linger.Stop()
			} else {
				linger.Reset(writerLinger)
			}
			select {
			case <-c.done:
				return
			case <-c.wake:
				continue
			case <-linger.C:
			}
			if batch = c.take(batch, true); len(batch) == 0 {
				return
			}
		}
		c.conn.SetWriteDeadline(time.Now().Add(defaultWriteTimeout))
		select {
		case <-c.done:
			return
		default:
		}
		for i, f := range batch {
			if err := c.conn.WriteMsg(f); err != nil {
				c.close()
				return
			}
			c.s.metrics.frameOut(c.transport, len(f))
			batch[i] = nil
		}
		c.qmu.Lock()
		if !c.closed {
			c.ka.Reset(c.s.cfg.KeepAlive)
		}
		c.qmu.Unlock()
	}
}

// readLoop reads and handles frames until the connection ends or breaks the
// protocol. A malformed frame gets an error frame and ends this connection only.
func (c *client) readLoop() error {
	for {
		c.conn.SetReadDeadline(time.Now().Add(c.s.cfg.ReadTimeout))
		select {
		case <-c.done:
			return nil
		default:
		}
		msg, err := c.conn.ReadMsg()
		if err != nil {
			select {
			case <-c.done:
				return nil
			default:
			}
			if !isTimeout(err) && (errors.Is(err, noiseconn.ErrMessageTooLarge) || errors.Is(err, noiseconn.ErrDecrypt) ||
				errors.Is(err, noiseconn.ErrFrameTooLarge) || errors.Is(err, noiseconn.ErrFrameTooSmall)) {
				c.s.metrics.drop(dropMalformed)
			}
			return err
		}
		c.s.metrics.frameIn(c.transport, len(msg))
		if err := c.handle(msg); err != nil {
			c.s.metrics.drop(dropMalformed)
			// Best effort: the writer may not get to it before the close.
			c.conn.SetWriteDeadline(time.Now().Add(time.Second))
			c.conn.WriteMsg(ErrorFrame(CodeMalformed, c.id.node, err.Error()))
			return fmt.Errorf("closing %s: %w", c.name(), err)
		}
	}
}

func (c *client) handle(msg []byte) error {
	f, err := ParseFrame(msg)
	if err != nil {
		return err
	}
	if c.mesh {
		return c.s.meshFrame(c, f)
	}
	switch f.Type {
	case FrameKeepAlive:
		return nil
	case FrameSendPacket:
		dst, pkt, err := f.Packet()
		if err != nil {
			return err
		}
		c.s.route(c, msg, dst, pkt)
		return nil
	}
	return fmt.Errorf("%v frame from a client: %w", f.Type, ErrMalformed)
}
