package framed

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cvlan/cvlan/controlplane/noiseconn"
)

// client is one connection on the Server: a node's, or a mesh link's.
type client struct {
	s         *Server
	conn      *noiseconn.Conn
	transport string
	mesh      bool
	id        peerID // zero for a mesh link
	peers     Peers

	watching []peerID // destinations c watches for peer-gone; under s.mu

	qmu  sync.Mutex
	ring [][]byte // drop-oldest queue of frames, allocated on first use
	head int
	n    int
	ctrl [][]byte // mesh presence, never dropped
	wake chan struct{}

	done       chan struct{}
	writerDone chan struct{}
	closeOnce  sync.Once
}

func (s *Server) newClient(conn *noiseconn.Conn, transport string, g Grant) *client {
	c := &client{
		s:          s,
		conn:       conn,
		transport:  transport,
		mesh:       g.Mesh,
		wake:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	if !g.Mesh {
		c.id = peerID{g.Tenant, g.Node}
		c.peers = g.Peers
	}
	return c
}

func (c *client) name() string {
	if c.mesh {
		return "mesh peer " + c.conn.Peer().String()
	}
	return c.id.node.String()
}

// close ends the connection; the reader and the writer notice.
func (c *client) close() {
	c.closeOnce.Do(func() {
		close(c.done)
		c.conn.Close()
	})
}

// enqueue queues frame f for c, dropping the oldest queued frame when full.
func (c *client) enqueue(f []byte) {
	c.qmu.Lock()
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
	c.qmu.Unlock()
	c.notify()
}

// enqueueCtrl queues a mesh control frame, which is never dropped; a link that
// falls too far behind is closed instead.
func (c *client) enqueueCtrl(f []byte) {
	c.qmu.Lock()
	over := len(c.ctrl) >= maxMeshBacklog
	if !over {
		c.ctrl = append(c.ctrl, f)
	}
	c.qmu.Unlock()
	if over {
		c.close()
		return
	}
	c.notify()
}

func (c *client) notify() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// take moves the queued frames to batch.
func (c *client) take(batch [][]byte) [][]byte {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	batch = append(batch, c.ctrl...)
	clear(c.ctrl)
	c.ctrl = c.ctrl[:0]
	for ; c.n > 0; c.n-- {
		batch = append(batch, c.ring[c.head])
		c.ring[c.head] = nil
		c.head = (c.head + 1) % len(c.ring)
	}
	return batch
}

// writeLoop writes queued frames and keepalives until c closes.
func (c *client) writeLoop() {
	defer close(c.writerDone)
	ka := time.NewTimer(c.s.cfg.KeepAlive)
	defer ka.Stop()
	var batch [][]byte
	for {
		select {
		case <-c.done:
			return
		case <-ka.C:
			batch = append(batch, KeepAliveFrame())
		case <-c.wake:
			batch = c.take(batch)
		}
		if len(batch) == 0 {
			continue
		}
		c.conn.SetWriteDeadline(time.Now().Add(defaultWriteTimeout))
		for i, f := range batch {
			if err := c.conn.WriteMsg(f); err != nil {
				c.close()
				return
			}
			c.s.metrics.frameOut(c.transport, len(f))
			batch[i] = nil
		}
		batch = batch[:0]
		ka.Reset(c.s.cfg.KeepAlive)
	}
}

// readLoop reads and handles frames until the connection ends or breaks the
// protocol. A malformed frame gets an error frame and ends this connection only.
func (c *client) readLoop() error {
	for {
		c.conn.SetReadDeadline(time.Now().Add(c.s.cfg.ReadTimeout))
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
