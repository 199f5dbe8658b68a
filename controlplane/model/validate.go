package model

import (
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidateName checks a DNS-label-like name: 1 to 63 of a-z, 0-9 and '-', not
// starting or ending with '-'.
func ValidateName(field, s string) *Error {
	if s == "" {
		return Errorf(Invalid, field, "must not be empty")
	}
	if !nameRE.MatchString(s) {
		return Errorf(Invalid, field, "%q is not a valid name (1-63 of a-z, 0-9, '-', not starting or ending with '-')", clip(s))
	}
	return nil
}

// ValidateTags checks every tag as a name and rejects duplicates.
func ValidateTags(field string, tags []string) *Error {
	seen := make(map[string]bool, len(tags))
	for i, t := range tags {
		f := field + "[" + itoa(i) + "]"
		if err := ValidateName(f, t); err != nil {
			return err
		}
		if seen[t] {
			return Errorf(Invalid, f, "duplicate tag %q", t)
		}
		seen[t] = true
	}
	return nil
}

// ValidateDescription bounds free text.
func ValidateDescription(field, s string) *Error {
	if len(s) > 1024 {
		return Errorf(Invalid, field, "longer than 1024 bytes")
	}
	return ValidateText(field, s)
}

// ValidateText rejects NUL bytes, which PostgreSQL cannot store in text.
func ValidateText(field, s string) *Error {
	if strings.ContainsRune(s, 0) {
		return Errorf(Invalid, field, "must not contain NUL (U+0000)")
	}
	return nil
}

// MaxTokenLifetime bounds API token expiry.
const MaxTokenLifetime = 10 * 365 * 24 * time.Hour

// Network address limits.
const (
	MinIPv4Bits = 8
	MaxIPv4Bits = 30
	MinMTU      = 1280
	MaxMTU      = 9000
)

var ula = netip.MustParsePrefix("fc00::/7")

// Validate checks a network's own fields (not overlap with others).
func (n *Network) Validate() *Error {
	if err := ValidateName("name", n.Name); err != nil {
		return err
	}
	if err := ValidateDescription("description", n.Description); err != nil {
		return err
	}
	p := n.IPv4
	switch {
	case !p.IsValid():
		return Errorf(Invalid, "ipv4", "a CIDR such as 100.64.0.0/24 is required")
	case !p.Addr().Is4():
		return Errorf(Invalid, "ipv4", "%s is not an IPv4 prefix", p)
	case p.Bits() < MinIPv4Bits || p.Bits() > MaxIPv4Bits:
		return Errorf(Invalid, "ipv4", "prefix length /%d out of range /%d to /%d", p.Bits(), MinIPv4Bits, MaxIPv4Bits)
	case p != p.Masked():
		return Errorf(Invalid, "ipv4", "%s has host bits set; did you mean %s?", p, p.Masked())
	}
	if q := n.IPv6; q.IsValid() {
		switch {
		case !q.Addr().Is6() || q.Addr().Is4In6():
			return Errorf(Invalid, "ipv6", "%s is not an IPv6 prefix", q)
		case !ula.Contains(q.Addr()):
			return Errorf(Invalid, "ipv6", "%s is not a unique local (fc00::/7) prefix", q)
		case q != q.Masked():
			return Errorf(Invalid, "ipv6", "%s has host bits set; did you mean %s?", q, q.Masked())
		case 128-q.Bits() < 32-p.Bits():
			return Errorf(Invalid, "ipv6", "%s is smaller than the IPv4 range %s", q, p)
		}
	}
	if n.MTU < MinMTU || n.MTU > MaxMTU {
		return Errorf(Invalid, "mtu", "%d out of range %d to %d", n.MTU, MinMTU, MaxMTU)
	}
	return nil
}

// Overlaps reports whether two networks share any address.
func (n *Network) Overlaps(o *Network) bool {
	if n.IPv4.Overlaps(o.IPv4) {
		return true
	}
	return n.IPv6.IsValid() && o.IPv6.IsValid() && n.IPv6.Overlaps(o.IPv6)
}

// Validate checks a node's own fields.
func (n *Node) Validate() *Error {
	if err := ValidateName("name", n.Name); err != nil {
		return err
	}
	if !slices.Contains(NodeKinds, n.Kind) {
		return Errorf(Invalid, "kind", "%q is not one of %v", clip(string(n.Kind)), NodeKinds)
	}
	if err := ValidateTags("tags", n.Tags); err != nil {
		return err
	}
	for i, r := range n.Routes {
		if !r.IsValid() || r != r.Masked() {
			return Errorf(Invalid, "routes["+itoa(i)+"]", "%s is not a masked CIDR", r)
		}
	}
	return nil
}

// MaxKeyLifetime bounds enrollment key expiry.
const MaxKeyLifetime = 365 * 24 * time.Hour

// Validate checks an enrollment key's own fields at time now.
func (k *EnrollmentKey) Validate(now time.Time) *Error {
	if err := ValidateDescription("description", k.Description); err != nil {
		return err
	}
	if err := ValidateTags("tags", k.Tags); err != nil {
		return err
	}
	if k.MaxUses < 0 {
		return Errorf(Invalid, "max_uses", "must not be negative")
	}
	if !k.Reusable && k.MaxUses != 1 {
		return Errorf(Invalid, "max_uses", "a single-use key has exactly one use; set reusable for more")
	}
	if !k.ExpiresAt.After(now) {
		return Errorf(Invalid, "expires_at", "must be in the future")
	}
	if k.ExpiresAt.Sub(now) > MaxKeyLifetime {
		return Errorf(Invalid, "expires_at", "more than %s from now", MaxKeyLifetime)
	}
	return nil
}

// Validate checks a token's own fields.
func (t *Token) Validate(now time.Time) *Error {
	if !slices.Contains(Roles, t.Role) {
		return Errorf(Invalid, "role", "%q is not one of %v", clip(string(t.Role)), Roles)
	}
	if t.Role == RoleOperator && t.TenantID != "" {
		return Errorf(Invalid, "tenant", "an operator token is not scoped to a tenant")
	}
	if t.Role != RoleOperator && t.TenantID == "" {
		return Errorf(Invalid, "tenant", "a %s token needs a tenant", t.Role)
	}
	if !t.ExpiresAt.IsZero() && !t.ExpiresAt.After(now) {
		return Errorf(Invalid, "expires_at", "must be in the future")
	}
	if t.ExpiresAt.Sub(now) > MaxTokenLifetime {
		return Errorf(Invalid, "expires_at", "more than %s from now; omit it for a token that never expires", MaxTokenLifetime)
	}
	return ValidateDescription("description", t.Description)
}

// MaxPolicyBytes bounds a policy document.
const MaxPolicyBytes = 1 << 20

// Validate checks a relay's own fields.
func (r *Relay) Validate() *Error {
	if err := ValidateName("name", r.Name); err != nil {
		return err
	}
	if err := ValidateName("region", r.Region); err != nil {
		return err
	}
	if !r.PublicAddr.IsValid() || r.PublicAddr.IsUnspecified() {
		return Errorf(Invalid, "public_addr", "a unicast IP address is required")
	}
	if r.UDPPortMin == 0 || r.UDPPortMax < r.UDPPortMin {
		return Errorf(Invalid, "udp_port_min", "need 1 <= udp_port_min <= udp_port_max, got %d..%d", r.UDPPortMin, r.UDPPortMax)
	}
	for _, u := range []struct{ field, v, scheme string }{{"tls_url", r.TLSURL, "https"}, {"ws_url", r.WSURL, "wss"}} {
		if u.v == "" {
			continue
		}
		p, err := url.Parse(u.v)
		if err != nil || p.Scheme != u.scheme || p.Host == "" {
			return Errorf(Invalid, u.field, "%q is not a %s:// URL", clip(u.v), u.scheme)
		}
	}
	return nil
}

// Validate checks an IPsec site's own fields.
func (s *IPsecSite) Validate() *Error {
	if err := ValidateName("name", s.Name); err != nil {
		return err
	}
	if s.VRouterNodeID == "" {
		return Errorf(Invalid, "vrouter_node", "required")
	}
	if s.RemoteAddr == "" || len(s.RemoteAddr) > 253 {
		return Errorf(Invalid, "remote_addr", "an address or host name is required")
	}
	for _, f := range []struct{ field, v string }{{"remote_addr", s.RemoteAddr}, {"local_id", s.LocalID}, {"remote_id", s.RemoteID}, {"psk", s.PSK}, {"certificate", s.Certificate}} {
		if err := ValidateText(f.field, f.v); err != nil {
			return err
		}
	}
	switch s.AuthMethod {
	case AuthPSK:
		if len(s.PSK) < 16 {
			return Errorf(Invalid, "psk", "a pre-shared key of at least 16 characters is required")
		}
	case AuthCert:
		if s.Certificate == "" {
			return Errorf(Invalid, "certificate", "required with auth_method cert")
		}
	default:
		return Errorf(Invalid, "auth_method", "%q is not psk or cert", clip(s.AuthMethod))
	}
	for _, l := range []struct {
		field string
		ps    []netip.Prefix
	}{{"local_subnets", s.LocalSubnets}, {"remote_subnets", s.RemoteSubnets}} {
		if len(l.ps) == 0 {
			return Errorf(Invalid, l.field, "at least one subnet is required")
		}
		for i, p := range l.ps {
			if !p.IsValid() || p != p.Masked() {
				return Errorf(Invalid, l.field+"["+itoa(i)+"]", "%s is not a masked CIDR", p)
			}
		}
	}
	return nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}
