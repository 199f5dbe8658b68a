// Package udprelay is the relay's Go path: one UDP socket per session port, read and
// written in batches (recvmmsg/sendmmsg through golang.org/x/net's ipv4 and ipv6
// PacketConn ReadBatch/WriteBatch).
//
// Every packet that reaches a session socket is either a bind packet or data. Bind
// packets go to the caller's [Config.OnBind] (the relay's control path), whose
// answer, if any, is sent back from the same socket. Data is relayed when it comes
// from the endpoint bound to its port and the other side is bound too: it leaves
// through the other side's socket (so its source is the other side's session port) to
// the other side's endpoint. Everything else is dropped and counted by reason.
//
// With the XDP fast path attached, data never reaches these sockets: the program
// rewrites it before the stack sees it, and only binds (and data the program passed:
// IPv6, oversized packets, entries the LRU map evicted, sides whose reverse path is
// unknown) arrive here. Without XDP these sockets carry everything. Either way the
// session table (datapath/relay/session) decides; this package keeps no state of its
// own about who is bound.
//
// A socket's reader holds no receive buffers while it waits: it waits for
// readability first and borrows a batch of buffers from a pool only to drain the
// socket, so idle sessions cost a goroutine and a socket, not BatchSize buffers.
//
// This package must never relay a packet the session table does not allow, never
// read or write sockets it did not open, and never block a reader on anything but
// its own sockets and Config.OnBind.
package udprelay
