package model

import (
	"net/netip"
	"time"

	"github.com/cvlan/cvlan/controlplane/key"
)

// Tenant owns every other object but relays and operator tokens.
type Tenant struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
}

// DefaultMTU is the overlay MTU when a network does not set one.
const DefaultMTU = 1420

// Network is one overlay address space of a tenant.
type Network struct {
	ID          string       `json:"id"`
	TenantID    string       `json:"tenant_id"`
	Name        string       `json:"name"`
	Description string       `json:"description,omitempty"`
	IPv4        netip.Prefix `json:"ipv4"`
	IPv6        netip.Prefix `json:"ipv6,omitzero"`
	MTU         int          `json:"mtu"`
	CreatedAt   time.Time    `json:"created_at"`
}

// NodeKind says what a node does.
type NodeKind string

// Node kinds.
const (
	KindAgent   NodeKind = "agent"
	KindGateway NodeKind = "gateway"
	KindRelay   NodeKind = "relay"
	KindVRouter NodeKind = "vrouter"
)

// NodeKinds lists every valid kind.
var NodeKinds = []NodeKind{KindAgent, KindGateway, KindRelay, KindVRouter}

// Node is one machine in a network.
type Node struct {
	ID         string            `json:"id"`
	TenantID   string            `json:"tenant_id"`
	NetworkID  string            `json:"network_id"`
	Name       string            `json:"name"`
	Kind       NodeKind          `json:"kind"`
	Tags       []string          `json:"tags"`
	MachineKey key.MachinePublic `json:"machine_key,omitzero"`
	NodeKey    key.NodePublic    `json:"node_key,omitzero"`
	IPv4       netip.Addr        `json:"ipv4,omitzero"`
	IPv6       netip.Addr        `json:"ipv6,omitzero"`
	Endpoints  []netip.AddrPort  `json:"endpoints"`
	HomeRelay  string            `json:"home_relay,omitempty"`
	Routes     []netip.Prefix    `json:"routes"`
	Ephemeral  bool              `json:"ephemeral"`
	LastSeen   time.Time         `json:"last_seen,omitzero"`
	KeyExpiry  time.Time         `json:"key_expiry,omitzero"`
	// RotateRequestedAt is when an operator asked for a new node key; zero when no
	// rotation is pending. The agent makes the key and reports it.
	RotateRequestedAt time.Time `json:"rotate_requested_at,omitzero"`
	CreatedAt         time.Time `json:"created_at"`
}

// EnrollmentKey lets a machine join a network. Its secret is shown once at creation
// and stored only as a hash.
type EnrollmentKey struct {
	ID          string    `json:"id"`
	TenantID    string    `json:"tenant_id"`
	NetworkID   string    `json:"network_id"`
	Description string    `json:"description,omitempty"`
	Tags        []string  `json:"tags"`
	Reusable    bool      `json:"reusable"`
	MaxUses     int       `json:"max_uses"` // 0 = unlimited (reusable keys only)
	Uses        int       `json:"uses"`
	Ephemeral   bool      `json:"ephemeral"`
	ExpiresAt   time.Time `json:"expires_at"`
	Hash        string    `json:"-"`
	CreatedAt   time.Time `json:"created_at"`
	CreatedBy   string    `json:"created_by"`
}

// UsableAt reports why k cannot enroll a machine at time now, or nil.
func (k *EnrollmentKey) UsableAt(now time.Time) *Error {
	if !now.Before(k.ExpiresAt) {
		return Errorf(Forbidden, "key", "enrollment key %s expired at %s", k.ID, k.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if k.MaxUses > 0 && k.Uses >= k.MaxUses {
		return Errorf(Forbidden, "key", "enrollment key %s is used up (%d of %d uses)", k.ID, k.Uses, k.MaxUses)
	}
	return nil
}

// Role is what an API token may do.
type Role string

// Roles.
const (
	RoleOperator     Role = "operator"      // everything, every tenant
	RoleTenantAdmin  Role = "tenant-admin"  // read and write one tenant
	RoleTenantViewer Role = "tenant-viewer" // read one tenant
)

// Roles lists every valid role.
var Roles = []Role{RoleOperator, RoleTenantAdmin, RoleTenantViewer}

// Token is an API bearer token. Its secret is shown once and stored hashed.
type Token struct {
	ID          string    `json:"id"`
	TenantID    string    `json:"tenant_id,omitempty"` // empty for operators
	Role        Role      `json:"role"`
	Description string    `json:"description,omitempty"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"` // zero = never
	Hash        string    `json:"-"`
	CreatedAt   time.Time `json:"created_at"`
	CreatedBy   string    `json:"created_by"`
}

// ValidAt reports whether the token has not expired at now.
func (t *Token) ValidAt(now time.Time) bool {
	return t.ExpiresAt.IsZero() || now.Before(t.ExpiresAt)
}

// Policy is one version of a tenant's policy document. The language is parsed by
// package policy; the controller stores the text as given.
type Policy struct {
	TenantID  string    `json:"tenant_id"`
	Version   int64     `json:"version"`
	Document  string    `json:"document"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
}

// Relay is a relay server offered to every tenant's nodes.
type Relay struct {
	ID         string          `json:"id"`
	Name       string          `json:"name"`
	Region     string          `json:"region"`
	PublicAddr netip.Addr      `json:"public_addr"`
	UDPPortMin uint16          `json:"udp_port_min"`
	UDPPortMax uint16          `json:"udp_port_max"`
	STUNPort   uint16          `json:"stun_port"`
	TLSURL     string          `json:"tls_url,omitempty"`
	WSURL      string          `json:"ws_url,omitempty"`
	RelayKey   key.RelayPublic `json:"relay_key,omitzero"`
	CreatedAt  time.Time       `json:"created_at"`
}

// IPsec authentication methods.
const (
	AuthPSK  = "psk"
	AuthCert = "cert"
)

// IPsecSite is a legacy IPsec peer terminated by a vrouter node.
type IPsecSite struct {
	ID            string         `json:"id"`
	TenantID      string         `json:"tenant_id"`
	Name          string         `json:"name"`
	VRouterNodeID string         `json:"vrouter_node_id"`
	RemoteAddr    string         `json:"remote_addr"`
	LocalID       string         `json:"local_id"`
	RemoteID      string         `json:"remote_id"`
	AuthMethod    string         `json:"auth_method"`
	PSK           string         `json:"-"` // write-only
	Certificate   string         `json:"certificate,omitempty"`
	IKEProposals  []string       `json:"ike_proposals"`
	ESPProposals  []string       `json:"esp_proposals"`
	LocalSubnets  []netip.Prefix `json:"local_subnets"`
	RemoteSubnets []netip.Prefix `json:"remote_subnets"`
	CreatedAt     time.Time      `json:"created_at"`
}

// Audit actions.
const (
	ActionCreate = "create"
	ActionUpdate = "update"
	ActionDelete = "delete"
	ActionEnroll = "enroll"
)

// AuditEntry records one change: who, what, when.
type AuditEntry struct {
	ID       string    `json:"id"`
	At       time.Time `json:"at"`
	Actor    string    `json:"actor"` // token id, "init", or "node:<id>"
	TenantID string    `json:"tenant_id,omitempty"`
	Action   string    `json:"action"`
	Kind     string    `json:"kind"` // tenant, network, node, ...
	ObjectID string    `json:"object_id"`
	Detail   string    `json:"detail,omitempty"`
}
