// Package framed relays WireGuard packets between nodes over TCP (TLS) and
// WebSocket, for networks that block UDP: a node sends a packet addressed to a
// peer's node key and the relay delivers it to that peer's connection, on this
// relay or on another relay of its region (one hop). It must never deliver a packet
// to a node of another tenant, or to a node the sender's authorizer does not let it
// reach; never accept a frame from a client whose machine key the Noise handshake
// did not prove; never forward a packet between relays more than once; and never
// let one client's malformed frames or slow reads affect another client.
//
// # Channel and authentication
//
// Every connection is a controlplane/noiseconn channel: Noise_IK with the relay's
// static key (key.RelayPublic, pinned by the client) and the client's machine key
// (authenticated by the handshake, then given to the Server's Authorizer, which
// returns the tenant, the node key and the peers it may reach, or refuses). Frames
// ride inside the channel, one relay frame per noiseconn message, so they are
// encrypted and authenticated end to end between client and relay whatever carries
// them. Reusing noiseconn unchanged keeps one audited handshake (timestamps against
// replay, authenticated refusals) for the control channel and the relay. A refused
// client gets the Authorizer's reason (UTF-8, at most MaxRefusalLen bytes) as the
// payload of the handshake's reply, so authenticated by the relay's key and
// encrypted to the client's; Dial returns it in a *RefusedError.
//
//   - TCP: the client's HTTP/1.1 Upgrade to noiseconn.Protocol on POST
//     <base>/api/v1/control (noiseconn.Path) over TLS, exactly as noiseconn does it.
//   - WebSocket: the client opens a WebSocket (github.com/coder/websocket, binary
//     messages) to <base>/api/v1/control and sends the same HTTP Upgrade request as
//     the first bytes of the stream; the relay reads it from the stream and answers
//     it there. noiseconn.Dial dials TCP itself, so the client bridges it to the
//     WebSocket through a loopback listener that accepts one connection; the relay
//     side needs no bridge.
//
// Both transports end in the same Server logic; the transport is only a metrics
// label. The Noise prologue and Upgrade token are noiseconn's ("cvlan-control/1"):
// a relay key is never a controller key, so a handshake made for one is refused by
// the other.
//
// # Frames
//
// A frame is
//
//	type (1 byte) | payload length (4 bytes, big-endian) | payload
//
// with a payload of at most MaxPayload bytes (64 KiB + 1 KiB); a longer one, or a
// payload that does not fit its type, closes that connection (after an error frame
// with CodeMalformed) and is counted. Node keys are 32 raw bytes; tenant IDs are one
// length byte and at most 255 bytes. Types:
//
//	0x01 send-packet    client → relay  dst node key | WireGuard packet (≤ 65535)
//	0x02 recv-packet    relay → client  src node key | WireGuard packet
//	0x03 keepalive      both ways       (empty)
//	0x04 peer-gone      relay → client  node key | reason (0 disconnected, 1 not here)
//	0x05 error          both ways       code (1 not allowed, 2 malformed) | subject node key | UTF-8 text
//	0x10 mesh-presence  relay ↔ relay   tenant | node key | 1 present / 0 gone
//	0x11 mesh-forward   relay ↔ relay   tenant | src node key | dst node key | packet
//
// # Addressing and delivery
//
// A client is addressed by (tenant, node key). A send-packet to a key its Peers do
// not allow gets an error frame (not allowed) and is counted; to an allowed key
// that is connected to this relay in the same tenant, it is queued for that
// client; to one that a mesh link announced for the same tenant, it goes to that
// link as a mesh-forward; otherwise the sender gets peer-gone (not here) and it is
// counted as unknown_peer. A relay delivers a mesh-forward only to its own clients
// and never forwards it again. When a node disconnects (and no mesh link has it),
// every client that sent to it gets peer-gone (disconnected). If a node connects
// twice, the newer connection wins and the older is closed.
//
// Each connection has a bounded queue (Config.QueueLen frames): under pressure the
// oldest frame is dropped and counted (queue_full), so a slow reader only loses
// its own packets. Mesh presence frames are never dropped; a link that falls too
// far behind is closed and rebuilt by the caller. Both sides send keepalives every
// KeepAlive and close a connection that sent nothing for ReadTimeout.
//
// # Mesh
//
// [Server.Mesh] links a relay to another of its region: it dials it as a client
// authenticated with the relay's own key and a mesh flag in the hello, and the other
// relay's Authorizer must grant Mesh. Over a link, both relays announce their
// clients (mesh-presence) and forward packets (mesh-forward). Linking every pair
// once, in either direction, is enough.
//
// # Metrics
//
// [Server.Collector] exports connected clients and mesh links, frames and bytes by
// transport (tcp, ws) and direction, drops by reason (queue_full, not_allowed,
// unknown_peer, malformed), relayed packets, mesh forwards and refused handshakes.
package framed
