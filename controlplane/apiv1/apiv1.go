// Package apiv1 is the wire contract of the controller's REST API under /api/v1:
// request bodies, list envelopes, the error body, and the one strict JSON decoder
// every request goes through. Both the server (package api) and the client (package
// apiclient) use it. It performs no I/O beyond reading the body it is handed.
package apiv1

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cvlan/cvlan/controlplane/model"
)

// Prefix is the path every API route starts with.
const Prefix = "/api/v1"

// MaxBodyBytes bounds a request body (a policy document is the largest).
const MaxBodyBytes = model.MaxPolicyBytes + 64<<10

// Error is the body of every error response.
type Error struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

// List is the envelope of every list response. Next, when set, is the cursor to pass
// as ?after= for the next page.
type List[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next,omitempty"`
}

// Pagination limits.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// Decode reads exactly one JSON object from r into v, rejecting unknown fields,
// trailing data and bodies over MaxBodyBytes. The error names the offending field
// where JSON tells which.
func Decode(r io.Reader, v any) error {
	data, err := io.ReadAll(io.LimitReader(r, MaxBodyBytes+1))
	if err != nil {
		return model.Errorf(model.Invalid, "", "reading request body: %v", err)
	}
	return DecodeBytes(data, v)
}

// DecodeBytes is Decode on a byte slice.
func DecodeBytes(data []byte, v any) error {
	if len(data) > MaxBodyBytes {
		return model.Errorf(model.Invalid, "", "request body larger than %d bytes", MaxBodyBytes)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return model.Errorf(model.Invalid, "", "request body is empty; a JSON object is required")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return model.Errorf(model.Invalid, "", "malformed JSON: data after the object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return model.Errorf(model.Invalid, "", "malformed JSON: data after the object")
	}
	return nil
}

func jsonError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return model.Errorf(model.Invalid, "", "malformed JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return model.Errorf(model.Invalid, "", "request body must be a JSON object, not %s", typ.Value)
		}
		return model.Errorf(model.Invalid, field, "must be %s, not %s", jsonType(typ.Type.Kind().String()), typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return model.Errorf(model.Invalid, "", "malformed JSON: unexpected end of body")
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		f = strings.Trim(f, `"`)
		return model.Errorf(model.Invalid, f, "unknown field %q", f)
	}
	return model.Errorf(model.Invalid, "", "malformed JSON: %s", strings.TrimPrefix(msg, "json: "))
}

func jsonType(kind string) string {
	switch kind {
	case "int", "int64", "uint16", "uint64", "int32":
		return "a whole number"
	case "slice":
		return "an array"
	case "struct", "map", "ptr":
		return "an object"
	}
	return "a " + kind
}

// Encode writes v as indented JSON.
func Encode(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encoding response: %w", err)
	}
	return nil
}

// Fingerprint is how clients pin the controller's certificate: "sha256:" and the
// hex SHA-256 of the leaf certificate's DER bytes.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// NodeStatus is the answer of GET /tenants/{tenant}/nodes/{node}/status.
type NodeStatus struct {
	NodeID     string    `json:"node_id"`
	Connected  bool      `json:"connected"`
	ReportedAt time.Time `json:"reported_at,omitzero"`
	// Rules are the node's per-rule counters: packets and bytes each rule accepted
	// there since its programs were loaded.
	Rules []RuleCounter `json:"rules"`
	// Drops counts packets dropped there, by reason (no_rule, deny_rule, malformed…).
	Drops map[string]uint64 `json:"drops"`
}

// RuleCounter is one rule's counters on one node.
type RuleCounter struct {
	ID      uint32 `json:"id"`
	Name    string `json:"name"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}
