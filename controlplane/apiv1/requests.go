package apiv1

import "github.com/cvlan/cvlan/controlplane/model"

// Requests use strings for addresses, prefixes, keys and times so that a bad value is
// reported with the field that holds it; package api parses them. Update requests
// use pointers: a nil field is left as it is.

// CreateTenant is the body of POST /tenants.
type CreateTenant struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

// UpdateTenant is the body of PATCH /tenants/{tenant}.
type UpdateTenant struct {
	Name        *string `json:"name,omitempty"`
	Description *string `json:"description,omitempty"`
}

// CreateNetwork is the body of POST /tenants/{tenant}/networks.
type CreateNetwork struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	IPv4        string `json:"ipv4"`
	IPv6        string `json:"ipv6,omitempty"`
	MTU         int    `json:"mtu,omitempty"` // 0 = model.DefaultMTU
}

// UpdateNetwork is the body of PATCH /tenants/{tenant}/networks/{network}. Address
// ranges cannot change once nodes may hold addresses from them.
type UpdateNetwork struct {
	Name        *string `json:"name,omitempty"`
	Description *string `json:"description,omitempty"`
	MTU         *int    `json:"mtu,omitempty"`
}

// CreateNode is the body of POST /tenants/{tenant}/nodes: registers a node by hand
// (agents normally enroll themselves with an enrollment key).
type CreateNode struct {
	Name       string   `json:"name"`
	Network    string   `json:"network"` // id or name
	Kind       string   `json:"kind,omitempty"`
	Tags       []string `json:"tags,omitempty"`
	MachineKey string   `json:"machine_key,omitempty"`
	NodeKey    string   `json:"node_key,omitempty"`
	Routes     []string `json:"routes,omitempty"`
}

// UpdateNode is the body of PATCH /tenants/{tenant}/nodes/{node}.
type UpdateNode struct {
	Name    *string   `json:"name,omitempty"`
	Tags    *[]string `json:"tags,omitempty"`
	Routes  *[]string `json:"routes,omitempty"`
	NodeKey *string   `json:"node_key,omitempty"`
}

// CreateEnrollmentKey is the body of POST /tenants/{tenant}/keys. Set at most one of
// ExpiresIn (a Go duration such as "24h") and ExpiresAt (RFC 3339); default 24h.
type CreateEnrollmentKey struct {
	Network     string   `json:"network"`
	Description string   `json:"description,omitempty"`
	Tags        []string `json:"tags,omitempty"`
	Reusable    bool     `json:"reusable,omitempty"`
	MaxUses     int      `json:"max_uses,omitempty"` // reusable keys: 0 = unlimited
	Ephemeral   bool     `json:"ephemeral,omitempty"`
	ExpiresIn   string   `json:"expires_in,omitempty"`
	ExpiresAt   string   `json:"expires_at,omitempty"`
}

// UpdateEnrollmentKey is the body of PATCH /tenants/{tenant}/keys/{key}.
type UpdateEnrollmentKey struct {
	Description *string   `json:"description,omitempty"`
	Tags        *[]string `json:"tags,omitempty"`
	ExpiresIn   *string   `json:"expires_in,omitempty"`
	ExpiresAt   *string   `json:"expires_at,omitempty"`
}

// CreatedEnrollmentKey answers a create; Secret is shown this once.
type CreatedEnrollmentKey struct {
	model.EnrollmentKey
	Secret string `json:"secret"`
}

// CreateToken is the body of POST /tokens. Tenant (id or name) is required for the
// tenant roles and forbidden for operator. No expiry means the token never expires.
type CreateToken struct {
	Role        string `json:"role"`
	Tenant      string `json:"tenant,omitempty"`
	Description string `json:"description,omitempty"`
	ExpiresIn   string `json:"expires_in,omitempty"`
	ExpiresAt   string `json:"expires_at,omitempty"`
}

// UpdateToken is the body of PATCH /tokens/{token}.
type UpdateToken struct {
	Description *string `json:"description,omitempty"`
}

// CreatedToken answers a create; Secret is shown this once.
type CreatedToken struct {
	model.Token
	Secret string `json:"secret"`
}

// PutPolicy is the body of PUT /tenants/{tenant}/policy. Version is the version the
// caller read (0 when there is none yet); if it is no longer current the write is
// refused with 409. An If-Match header carrying the ETag may replace it (412 when it
// does not match).
type PutPolicy struct {
	Document string `json:"document"`
	Version  *int64 `json:"version,omitempty"`
}

// CreateRelay is the body of POST /relays.
type CreateRelay struct {
	Name       string `json:"name"`
	Region     string `json:"region"`
	PublicAddr string `json:"public_addr"`
	UDPPortMin uint16 `json:"udp_port_min"`
	UDPPortMax uint16 `json:"udp_port_max"`
	STUNPort   uint16 `json:"stun_port,omitempty"`
	TLSURL     string `json:"tls_url,omitempty"`
	WSURL      string `json:"ws_url,omitempty"`
	RelayKey   string `json:"relay_key,omitempty"`
}

// UpdateRelay is the body of PATCH /relays/{relay}.
type UpdateRelay struct {
	Region     *string `json:"region,omitempty"`
	PublicAddr *string `json:"public_addr,omitempty"`
	UDPPortMin *uint16 `json:"udp_port_min,omitempty"`
	UDPPortMax *uint16 `json:"udp_port_max,omitempty"`
	STUNPort   *uint16 `json:"stun_port,omitempty"`
	TLSURL     *string `json:"tls_url,omitempty"`
	WSURL      *string `json:"ws_url,omitempty"`
	RelayKey   *string `json:"relay_key,omitempty"`
}

// Site is the body of POST /tenants/{tenant}/sites and, with omitted fields left as
// they are, of PATCH /tenants/{tenant}/sites/{site}.
type Site struct {
	Name          string   `json:"name,omitempty"`
	VRouterNode   string   `json:"vrouter_node,omitempty"` // id or name
	RemoteAddr    string   `json:"remote_addr,omitempty"`
	LocalID       string   `json:"local_id,omitempty"`
	RemoteID      string   `json:"remote_id,omitempty"`
	AuthMethod    string   `json:"auth_method,omitempty"`
	PSK           string   `json:"psk,omitempty"`
	Certificate   string   `json:"certificate,omitempty"`
	IKEProposals  []string `json:"ike_proposals,omitempty"`
	ESPProposals  []string `json:"esp_proposals,omitempty"`
	LocalSubnets  []string `json:"local_subnets,omitempty"`
	RemoteSubnets []string `json:"remote_subnets,omitempty"`
}

// Enroll is the body of POST /enroll, authenticated by the enrollment key in it
// rather than a bearer token.
type Enroll struct {
	Key        string `json:"key"`
	Name       string `json:"name"`
	MachineKey string `json:"machine_key"`
	NodeKey    string `json:"node_key"`
}

// Enrolled answers an enrollment.
type Enrolled struct {
	Node    model.Node    `json:"node"`
	Network model.Network `json:"network"`
}

// Info is the body of GET /info: what a client needs to pin and join.
type Info struct {
	Version        string `json:"version"`
	NoisePublicKey string `json:"noise_public_key"`
}

// PolicyTest is the body of POST /tenants/{tenant}/policy/test: can Src reach Dst
// on Port with Proto? Src and Dst are node names or ids, or addresses.
type PolicyTest struct {
	Src   string `json:"src"`
	Dst   string `json:"dst"`
	Port  int    `json:"port"`
	Proto string `json:"proto"` // tcp, udp or icmp
}

// Validate checks the fields that need no tenant.
func (r *PolicyTest) Validate() error {
	switch {
	case r.Src == "":
		return model.Errorf(model.Invalid, "src", "required: a node name or id, or an address")
	case r.Dst == "":
		return model.Errorf(model.Invalid, "dst", "required: a node name or id, or an address")
	case r.Proto != "tcp" && r.Proto != "udp" && r.Proto != "icmp":
		return model.Errorf(model.Invalid, "proto", "%q is not tcp, udp or icmp", r.Proto)
	case r.Proto != "icmp" && (r.Port < 1 || r.Port > 65535):
		return model.Errorf(model.Invalid, "port", "%d is outside 1..65535", r.Port)
	case r.Proto == "icmp" && r.Port != 0:
		return model.Errorf(model.Invalid, "port", "icmp has no ports; leave it 0")
	}
	return nil
}

// PolicyDecision answers a PolicyTest: the verdict and the rule that decided it
// ("" when no rule matched: default deny).
type PolicyDecision struct {
	Verdict string `json:"verdict"` // accept or deny
	Rule    string `json:"rule"`
	Src     string `json:"src"` // what Src resolved to
	Dst     string `json:"dst"`
	Port    int    `json:"port"`
	Proto   string `json:"proto"`
	Version int64  `json:"policy_version"`
}
