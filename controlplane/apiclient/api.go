package apiclient

import (
	"context"
	"errors"
	"net/url"
	"strconv"

	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/model"
)

// The methods below mirror the routes of docs/api.md one to one. References
// ({tenant}, {network}, …) take an id or a name as the server does; keys and tokens
// take ids.

// ListOptions selects one page of a list. Zero values mean the server's defaults.
type ListOptions struct {
	Limit int    // at most apiv1.MaxLimit
	After string // the Next of the previous page
}

func (o ListOptions) query() url.Values {
	q := url.Values{}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.After != "" {
		q.Set("after", o.After)
	}
	return q
}

// AuditOptions selects one page of the audit log, newest first.
type AuditOptions struct {
	Limit  int
	Before string // the Next of the previous page
}

func (o AuditOptions) query() url.Values {
	q := url.Values{}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Before != "" {
		q.Set("before", o.Before)
	}
	return q
}

// ErrCursorLoop is returned by All when the server hands back a cursor it already
// gave, which would otherwise page forever.
var ErrCursorLoop = errors.New("server repeated a list cursor")

// All fetches every page through page, starting from the first, and returns the
// items in order. Use it with any list method:
//
//	nets, err := apiclient.All(ctx, func(ctx context.Context, o apiclient.ListOptions) (apiv1.List[model.Network], error) {
//		return c.ListNetworks(ctx, tenant, o)
//	})
func All[T any](ctx context.Context, page func(context.Context, ListOptions) (apiv1.List[T], error)) ([]T, error) {
	items := []T{}
	seen := map[string]bool{}
	opts := ListOptions{Limit: apiv1.MaxLimit}
	for {
		l, err := page(ctx, opts)
		if err != nil {
			return nil, err
		}
		items = append(items, l.Items...)
		if l.Next == "" {
			return items, nil
		}
		if seen[l.Next] {
			return nil, ErrCursorLoop
		}
		seen[l.Next] = true
		opts.After = l.Next
	}
}

// Info answers GET /info (no token needed).
func (c *Client) Info(ctx context.Context) (apiv1.Info, error) {
	return call[apiv1.Info](ctx, c, anonymous(get("info")))
}

// Enroll answers POST /enroll; the enrollment key in the body authenticates it.
func (c *Client) Enroll(ctx context.Context, req apiv1.Enroll) (apiv1.Enrolled, error) {
	return call[apiv1.Enrolled](ctx, c, anonymous(post(req, "enroll")))
}

// Tenants.

// ListTenants lists the tenants the token may see.
func (c *Client) ListTenants(ctx context.Context, o ListOptions) (apiv1.List[model.Tenant], error) {
	return call[apiv1.List[model.Tenant]](ctx, c, get("tenants").with(o.query()))
}

// CreateTenant creates a tenant (operators only).
func (c *Client) CreateTenant(ctx context.Context, req apiv1.CreateTenant) (model.Tenant, error) {
	return call[model.Tenant](ctx, c, post(req, "tenants"))
}

// GetTenant returns one tenant by id or name.
func (c *Client) GetTenant(ctx context.Context, tenant string) (model.Tenant, error) {
	return call[model.Tenant](ctx, c, get("tenants", tenant))
}

// UpdateTenant changes the fields set in req.
func (c *Client) UpdateTenant(ctx context.Context, tenant string, req apiv1.UpdateTenant) (model.Tenant, error) {
	return call[model.Tenant](ctx, c, patch(req, "tenants", tenant))
}

// DeleteTenant deletes an empty tenant.
func (c *Client) DeleteTenant(ctx context.Context, tenant string) error {
	return c.do(ctx, del("tenants", tenant), nil)
}

// Networks.

// ListNetworks lists a tenant's networks.
func (c *Client) ListNetworks(ctx context.Context, tenant string, o ListOptions) (apiv1.List[model.Network], error) {
	return call[apiv1.List[model.Network]](ctx, c, get("tenants", tenant, "networks").with(o.query()))
}

// CreateNetwork creates a network in a tenant.
func (c *Client) CreateNetwork(ctx context.Context, tenant string, req apiv1.CreateNetwork) (model.Network, error) {
	return call[model.Network](ctx, c, post(req, "tenants", tenant, "networks"))
}

// GetNetwork returns one network by id or name.
func (c *Client) GetNetwork(ctx context.Context, tenant, network string) (model.Network, error) {
	return call[model.Network](ctx, c, get("tenants", tenant, "networks", network))
}

// UpdateNetwork changes the fields set in req.
func (c *Client) UpdateNetwork(ctx context.Context, tenant, network string, req apiv1.UpdateNetwork) (model.Network, error) {
	return call[model.Network](ctx, c, patch(req, "tenants", tenant, "networks", network))
}

// DeleteNetwork deletes a network that holds no nodes or keys.
func (c *Client) DeleteNetwork(ctx context.Context, tenant, network string) error {
	return c.do(ctx, del("tenants", tenant, "networks", network), nil)
}

// Nodes.

// ListNodes lists a tenant's nodes; network (id or name), when not empty, keeps
// only that network's.
func (c *Client) ListNodes(ctx context.Context, tenant, network string, o ListOptions) (apiv1.List[model.Node], error) {
	q := o.query()
	if network != "" {
		q.Set("network", network)
	}
	return call[apiv1.List[model.Node]](ctx, c, get("tenants", tenant, "nodes").with(q))
}

// CreateNode registers a node by hand.
func (c *Client) CreateNode(ctx context.Context, tenant string, req apiv1.CreateNode) (model.Node, error) {
	return call[model.Node](ctx, c, post(req, "tenants", tenant, "nodes"))
}

// GetNode returns one node by id or name.
func (c *Client) GetNode(ctx context.Context, tenant, node string) (model.Node, error) {
	return call[model.Node](ctx, c, get("tenants", tenant, "nodes", node))
}

// UpdateNode changes the fields set in req.
func (c *Client) UpdateNode(ctx context.Context, tenant, node string, req apiv1.UpdateNode) (model.Node, error) {
	return call[model.Node](ctx, c, patch(req, "tenants", tenant, "nodes", node))
}

// NodeStatus returns whether a node's agent is connected and its counters.
func (c *Client) NodeStatus(ctx context.Context, tenant, node string) (apiv1.NodeStatus, error) {
	return call[apiv1.NodeStatus](ctx, c, get("tenants", tenant, "nodes", node, "status"))
}

// TestPolicy asks whether req.Src can reach req.Dst under the policy in force.
func (c *Client) TestPolicy(ctx context.Context, tenant string, req apiv1.PolicyTest) (apiv1.PolicyDecision, error) {
	return call[apiv1.PolicyDecision](ctx, c, post(req, "tenants", tenant, "policy", "test"))
}

// RotateNodeKey asks the node's agent for a new node key.
func (c *Client) RotateNodeKey(ctx context.Context, tenant, node string) (model.Node, error) {
	return call[model.Node](ctx, c, post(nil, "tenants", tenant, "nodes", node, "rotate-key"))
}

// DeleteNode deletes a node; its addresses return to the pool.
func (c *Client) DeleteNode(ctx context.Context, tenant, node string) error {
	return c.do(ctx, del("tenants", tenant, "nodes", node), nil)
}

// Enrollment keys.

// ListKeys lists a tenant's enrollment keys.
func (c *Client) ListKeys(ctx context.Context, tenant string, o ListOptions) (apiv1.List[model.EnrollmentKey], error) {
	return call[apiv1.List[model.EnrollmentKey]](ctx, c, get("tenants", tenant, "keys").with(o.query()))
}

// CreateKey creates an enrollment key; the answer's Secret is shown this once.
func (c *Client) CreateKey(ctx context.Context, tenant string, req apiv1.CreateEnrollmentKey) (apiv1.CreatedEnrollmentKey, error) {
	return call[apiv1.CreatedEnrollmentKey](ctx, c, post(req, "tenants", tenant, "keys"))
}

// GetKey returns one enrollment key by id.
func (c *Client) GetKey(ctx context.Context, tenant, id string) (model.EnrollmentKey, error) {
	return call[model.EnrollmentKey](ctx, c, get("tenants", tenant, "keys", id))
}

// UpdateKey changes the fields set in req.
func (c *Client) UpdateKey(ctx context.Context, tenant, id string, req apiv1.UpdateEnrollmentKey) (model.EnrollmentKey, error) {
	return call[model.EnrollmentKey](ctx, c, patch(req, "tenants", tenant, "keys", id))
}

// DeleteKey deletes an enrollment key.
func (c *Client) DeleteKey(ctx context.Context, tenant, id string) error {
	return c.do(ctx, del("tenants", tenant, "keys", id), nil)
}

// Policies.

// GetPolicy returns the tenant's current policy; an *APIError with status 404 when
// it has none.
func (c *Client) GetPolicy(ctx context.Context, tenant string) (model.Policy, error) {
	return call[model.Policy](ctx, c, get("tenants", tenant, "policy"))
}

// PutPolicy writes a new version. req.Version is the version the caller read (0 for
// the first policy); the server refuses a stale one with 409.
func (c *Client) PutPolicy(ctx context.Context, tenant string, req apiv1.PutPolicy) (model.Policy, error) {
	return call[model.Policy](ctx, c, put(req, "tenants", tenant, "policy"))
}

// PutPolicyIfMatch writes a new version with the check carried by an If-Match
// header holding the ETag of version instead of the body; 412 when stale.
func (c *Client) PutPolicyIfMatch(ctx context.Context, tenant, document string, version int64) (model.Policy, error) {
	r := put(apiv1.PutPolicy{Document: document}, "tenants", tenant, "policy")
	r.header = map[string][]string{"If-Match": {ETag(version)}}
	return call[model.Policy](ctx, c, r)
}

// ETag is the ETag the server gives policy version v.
func ETag(v int64) string { return `"` + strconv.FormatInt(v, 10) + `"` }

// DeletePolicy records an empty version on top of version, which must be current.
func (c *Client) DeletePolicy(ctx context.Context, tenant string, version int64) error {
	q := url.Values{"version": {strconv.FormatInt(version, 10)}}
	return c.do(ctx, del("tenants", tenant, "policy").with(q), nil)
}

// PolicyVersions lists the tenant's policy versions, newest first.
func (c *Client) PolicyVersions(ctx context.Context, tenant string, o ListOptions) (apiv1.List[model.Policy], error) {
	return call[apiv1.List[model.Policy]](ctx, c, get("tenants", tenant, "policy", "versions").with(o.query()))
}

// IPsec sites.

// ListSites lists a tenant's IPsec sites.
func (c *Client) ListSites(ctx context.Context, tenant string, o ListOptions) (apiv1.List[model.IPsecSite], error) {
	return call[apiv1.List[model.IPsecSite]](ctx, c, get("tenants", tenant, "sites").with(o.query()))
}

// CreateSite creates an IPsec site.
func (c *Client) CreateSite(ctx context.Context, tenant string, req apiv1.Site) (model.IPsecSite, error) {
	return call[model.IPsecSite](ctx, c, post(req, "tenants", tenant, "sites"))
}

// GetSite returns one IPsec site by id or name.
func (c *Client) GetSite(ctx context.Context, tenant, site string) (model.IPsecSite, error) {
	return call[model.IPsecSite](ctx, c, get("tenants", tenant, "sites", site))
}

// UpdateSite changes the fields set in req and keeps the others.
func (c *Client) UpdateSite(ctx context.Context, tenant, site string, req apiv1.Site) (model.IPsecSite, error) {
	return call[model.IPsecSite](ctx, c, patch(req, "tenants", tenant, "sites", site))
}

// DeleteSite deletes an IPsec site.
func (c *Client) DeleteSite(ctx context.Context, tenant, site string) error {
	return c.do(ctx, del("tenants", tenant, "sites", site), nil)
}

// API tokens.

// ListTokens lists the API tokens the caller may manage.
func (c *Client) ListTokens(ctx context.Context, o ListOptions) (apiv1.List[model.Token], error) {
	return call[apiv1.List[model.Token]](ctx, c, get("tokens").with(o.query()))
}

// CreateToken creates an API token; the answer's Secret is shown this once.
func (c *Client) CreateToken(ctx context.Context, req apiv1.CreateToken) (apiv1.CreatedToken, error) {
	return call[apiv1.CreatedToken](ctx, c, post(req, "tokens"))
}

// GetToken returns one API token by id.
func (c *Client) GetToken(ctx context.Context, id string) (model.Token, error) {
	return call[model.Token](ctx, c, get("tokens", id))
}

// UpdateToken changes the fields set in req.
func (c *Client) UpdateToken(ctx context.Context, id string, req apiv1.UpdateToken) (model.Token, error) {
	return call[model.Token](ctx, c, patch(req, "tokens", id))
}

// DeleteToken revokes an API token.
func (c *Client) DeleteToken(ctx context.Context, id string) error {
	return c.do(ctx, del("tokens", id), nil)
}

// Relays.

// ListRelays lists the relays.
func (c *Client) ListRelays(ctx context.Context, o ListOptions) (apiv1.List[model.Relay], error) {
	return call[apiv1.List[model.Relay]](ctx, c, get("relays").with(o.query()))
}

// CreateRelay creates a relay (operators only).
func (c *Client) CreateRelay(ctx context.Context, req apiv1.CreateRelay) (model.Relay, error) {
	return call[model.Relay](ctx, c, post(req, "relays"))
}

// GetRelay returns one relay by id or name.
func (c *Client) GetRelay(ctx context.Context, relay string) (model.Relay, error) {
	return call[model.Relay](ctx, c, get("relays", relay))
}

// UpdateRelay changes the fields set in req.
func (c *Client) UpdateRelay(ctx context.Context, relay string, req apiv1.UpdateRelay) (model.Relay, error) {
	return call[model.Relay](ctx, c, patch(req, "relays", relay))
}

// DeleteRelay deletes a relay.
func (c *Client) DeleteRelay(ctx context.Context, relay string) error {
	return c.do(ctx, del("relays", relay), nil)
}

// Audit log.

// TenantAudit lists one tenant's audit entries, newest first.
func (c *Client) TenantAudit(ctx context.Context, tenant string, o AuditOptions) (apiv1.List[model.AuditEntry], error) {
	return call[apiv1.List[model.AuditEntry]](ctx, c, get("tenants", tenant, "audit").with(o.query()))
}

// Audit lists every tenant's audit entries, newest first (operators only).
func (c *Client) Audit(ctx context.Context, o AuditOptions) (apiv1.List[model.AuditEntry], error) {
	return call[apiv1.List[model.AuditEntry]](ctx, c, get("audit").with(o.query()))
}
