package api

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/cvlan/cvlan/controlplane/model"
)

// Parsers turn the wire's strings into typed values, naming the field on error.

func parsePrefix(field, s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, model.Errorf(model.Invalid, field, "%q is not a CIDR prefix such as 100.64.0.0/24", clip(s))
	}
	return p, nil
}

func parsePrefixes(field string, ss []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(ss))
	for i, s := range ss {
		p, err := parsePrefix(field+"["+strconv.Itoa(i)+"]", s)
		if err != nil {
			return nil, err
		}
		if !p.IsValid() {
			return nil, model.Errorf(model.Invalid, field+"["+strconv.Itoa(i)+"]", "must not be empty")
		}
		out = append(out, p)
	}
	return out, nil
}

func parseAddr(field, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, model.Errorf(model.Invalid, field, "%q is not an IP address", clip(s))
	}
	return a, nil
}

// parseKey parses a typed key, allowing the empty string for "none".
func parseKey[K any](field, s string, parse func(string) (K, error)) (K, error) {
	var zero K
	if s == "" {
		return zero, nil
	}
	k, err := parse(s)
	if err != nil {
		return zero, model.Errorf(model.Invalid, field, "%v", err)
	}
	return k, nil
}

// parseExpiry reads the expires_in / expires_at pair; def applies when both are
// empty (zero def: no expiry).
func parseExpiry(in, at string, def time.Duration, now time.Time) (time.Time, error) {
	switch {
	case in != "" && at != "":
		return time.Time{}, model.Errorf(model.Invalid, "expires_at", "set expires_in or expires_at, not both")
	case in != "":
		d, err := time.ParseDuration(in)
		if err != nil || d <= 0 {
			return time.Time{}, model.Errorf(model.Invalid, "expires_in", "%q is not a positive duration such as 24h", clip(in))
		}
		return now.Add(d).UTC(), nil
	case at != "":
		t, err := time.Parse(time.RFC3339, at)
		if err != nil {
			return time.Time{}, model.Errorf(model.Invalid, "expires_at", "%q is not an RFC 3339 time such as 2030-01-02T15:04:05Z", clip(at))
		}
		return t.UTC(), nil
	case def > 0:
		return now.Add(def).UTC(), nil
	}
	return time.Time{}, nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
