// Package apiclient is a small typed client for the controller's REST API under
// /api/v1 (see docs/api.md), shared by cvlanctl and by tests. It speaks only HTTPS
// and trusts the server either by a pinned certificate fingerprint (like an SSH known
// host), by a CA file, or by the system roots. A non-2xx answer comes back as an
// *APIError carrying the server's message unchanged.
//
// It never reads flags, environment variables or config files: callers hand it a
// typed Config.
package apiclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/cvlan/cvlan/controlplane/apiv1"
)

// Config says which controller to talk to and how to trust it.
type Config struct {
	// Server is the controller's base URL, https://host[:port]. A path, if any, is
	// kept as a prefix before /api/v1.
	Server string
	// Token is the API token secret sent as a bearer token. It may be empty for
	// Info, Enroll and FetchFingerprint.
	Token string
	// Fingerprint pins the server certificate: "sha256:<hex>" of its DER (see
	// Fingerprint). Any other certificate is refused, whoever signed it.
	Fingerprint string
	// CAFile is a PEM file of CA certificates to verify the server against instead
	// of the system roots. At most one of Fingerprint and CAFile may be set.
	CAFile string
	// HTTPClient, when set, is used as is (tests): Fingerprint and CAFile are then
	// ignored and its transport's TLS settings apply.
	HTTPClient *http.Client
}

// Client calls the API. It is safe for concurrent use.
type Client struct {
	base  string // scheme://host[:port][/path], no trailing slash
	token string
	hc    *http.Client
}

// DefaultTimeout bounds one request when the caller's context has no deadline.
const DefaultTimeout = 60 * time.Second

// maxResponseBytes bounds a response body the client will read.
const maxResponseBytes = 64 << 20

// New checks cfg and returns a client. It does not contact the server.
func New(cfg Config) (*Client, error) {
	base, err := ParseServer(cfg.Server)
	if err != nil {
		return nil, err
	}
	c := &Client{base: base, token: cfg.Token, hc: cfg.HTTPClient}
	if c.hc != nil {
		return c, nil
	}
	tc, err := tlsConfig(cfg.Fingerprint, cfg.CAFile)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.ForceAttemptHTTP2 = true
	c.hc = &http.Client{Transport: tr, Timeout: DefaultTimeout}
	return c, nil
}

// ParseServer checks that s is an https:// URL with a host and returns it without a
// trailing slash, query or fragment.
func ParseServer(s string) (string, error) {
	if s == "" {
		return "", errors.New("server: an https:// URL is required")
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("server: %q is not a URL: %v", s, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("server: %q is not an https:// URL (for example https://controller.example:8443)", s)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("server: %q must not carry user info, a query or a fragment", s)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u.String(), nil
}

// Server returns the base URL the client talks to.
func (c *Client) Server() string { return c.base }

func tlsConfig(fingerprint, caFile string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case fingerprint != "" && caFile != "":
		return nil, errors.New("set only one of fingerprint and ca_file")
	case fingerprint != "":
		want, err := parseFingerprint(fingerprint)
		if err != nil {
			return nil, err
		}
		pinTo(tc, want)
	case caFile != "":
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// APIError is a non-2xx answer from the server.
type APIError struct {
	Status  int    // HTTP status code
	Message string // the server's "error", unchanged
	Field   string // the server's "field", when one field is at fault
}

// Error returns the server's message, prefixed with "field: " when a field is named:
// the same text the server's model.Error prints.
func (e *APIError) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Message
	}
	return e.Message
}

// IsStatus reports whether err is (or wraps) an *APIError with the given status.
func IsStatus(err error, status int) bool {
	var e *APIError
	return errors.As(err, &e) && e.Status == status
}

// request describes one call: path segments are escaped one by one.
type request struct {
	method  string
	path    []string
	query   url.Values
	body    any
	header  http.Header
	noToken bool // send no token (Info, Enroll)
}

func get(path ...string) request  { return request{method: http.MethodGet, path: path} }
func del(path ...string) request  { return request{method: http.MethodDelete, path: path} }
func anonymous(r request) request { r.noToken = true; return r }
func post(body any, path ...string) request {
	return request{method: http.MethodPost, path: path, body: body}
}
func patch(body any, path ...string) request {
	return request{method: http.MethodPatch, path: path, body: body}
}
func put(body any, path ...string) request {
	return request{method: http.MethodPut, path: path, body: body}
}

func (r request) with(q url.Values) request { r.query = q; return r }

// url builds the request URL, refusing empty references so that a missing tenant
// never turns /tenants/{tenant}/networks into /tenants//networks.
func (c *Client) url(r request) (string, error) {
	var b strings.Builder
	b.WriteString(c.base)
	b.WriteString(apiv1.Prefix)
	for i, seg := range r.path {
		if seg == "" {
			what := "reference"
			if i > 0 {
				what = strings.TrimSuffix(r.path[i-1], "s") + " reference"
			}
			return "", fmt.Errorf("empty %s in /%s", what, strings.Join(r.path, "/"))
		}
		b.WriteByte('/')
		b.WriteString(url.PathEscape(seg))
	}
	if len(r.query) > 0 {
		b.WriteByte('?')
		b.WriteString(r.query.Encode())
	}
	return b.String(), nil
}

// do performs r and decodes a 2xx body into out (unless out is nil or the answer is
// 204). Any other status becomes an *APIError.
func (c *Client) do(ctx context.Context, r request, out any) error {
	u, err := c.url(r)
	if err != nil {
		return err
	}
	var body io.Reader
	if r.body != nil {
		data, err := json.Marshal(r.body)
		if err != nil {
			return fmt.Errorf("encoding %s body: %w", r.method, err)
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return err
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" && !r.noToken {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var fm *FingerprintMismatchError
		if errors.As(err, &fm) {
			return fm
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return errorFrom(resp)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
		return nil
	}
	// Answers are decoded leniently: a newer server may add fields.
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBytes)).Decode(out); err != nil {
		return fmt.Errorf("decoding answer to %s %s: %w", r.method, req.URL.Path, err)
	}
	return nil
}

// errorFrom turns a non-2xx answer into an *APIError, keeping the server's message
// as is; a body that is not the API's error object is shown trimmed.
func errorFrom(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e apiv1.Error
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return &APIError{Status: resp.StatusCode, Message: e.Error, Field: e.Field}
	}
	msg := strings.TrimSpace(string(data))
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	status := fmt.Sprintf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	if msg == "" {
		msg = "server answered " + status
	} else {
		msg = "server answered " + status + ": " + msg
	}
	return &APIError{Status: resp.StatusCode, Message: msg}
}

// call is do for a typed answer.
func call[T any](ctx context.Context, c *Client, r request) (T, error) {
	var v T
	err := c.do(ctx, r, &v)
	return v, err
}
