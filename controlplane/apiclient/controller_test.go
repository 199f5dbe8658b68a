package apiclient

import (
	"context"
	"net/http"
	"strconv"
	"testing"

	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/controltest"
	"github.com/cvlan/cvlan/controlplane/model"
)

// Against the real in-process controller: pinning with the fingerprint it reports,
// paging, the policy's two concurrency checks and the error body.
func TestAgainstController(t *testing.T) {
	ctl := controltest.Start(t)
	ctx := context.Background()
	c, err := New(Config{Server: ctl.URL, Token: ctl.OperatorToken, Fingerprint: ctl.Fingerprint})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := FetchFingerprint(ctx, ctl.URL); err != nil || got != ctl.Fingerprint {
		t.Fatalf("FetchFingerprint = %q, %v; controller says %q", got, err, ctl.Fingerprint)
	}
	info, err := c.Info(ctx)
	if err != nil || info.NoisePublicKey != ctl.NoisePublicKey {
		t.Fatalf("Info = %+v, %v", info, err)
	}

	if _, err := c.CreateTenant(ctx, apiv1.CreateTenant{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	for i, cidr := range []string{"100.64.0.0/24", "100.64.1.0/24", "100.64.2.0/24"} {
		if _, err := c.CreateNetwork(ctx, "acme", apiv1.CreateNetwork{Name: "n" + strconv.Itoa(i), IPv4: cidr}); err != nil {
			t.Fatal(err)
		}
	}
	first, err := c.ListNetworks(ctx, "acme", ListOptions{Limit: 2})
	if err != nil || len(first.Items) != 2 || first.Next == "" {
		t.Fatalf("first page of 2 = %+v, %v", first, err)
	}
	var pages int
	all, err := All(ctx, func(ctx context.Context, o ListOptions) (apiv1.List[model.Network], error) {
		pages++
		o.Limit = 1
		return c.ListNetworks(ctx, "acme", o)
	})
	if err != nil || len(all) != 3 || pages != 3 || all[0].Name != "n0" || all[2].Name != "n2" {
		t.Fatalf("All with pages of 1: %d items in %d pages, %v", len(all), pages, err)
	}

	_, err = c.CreateNetwork(ctx, "acme", apiv1.CreateNetwork{Name: "dup", IPv4: "100.64.0.0/25"})
	if ae, ok := err.(*APIError); !ok || ae.Status != http.StatusConflict || ae.Field == "" {
		t.Errorf("overlapping network: %#v, want a 409 naming the field", err)
	}

	p, err := c.PutPolicy(ctx, "acme", apiv1.PutPolicy{Document: "rules: [] # v1", Version: new(int64)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutPolicyIfMatch(ctx, "acme", "rules: [] # v2", p.Version-1); !IsStatus(err, http.StatusPreconditionFailed) {
		t.Errorf("stale If-Match: %v, want 412", err)
	}
	p2, err := c.PutPolicyIfMatch(ctx, "acme", "rules: [] # v2", p.Version)
	if err != nil || p2.Version <= p.Version {
		t.Fatalf("If-Match current: %+v, %v", p2, err)
	}
	stale := p.Version
	if _, err := c.PutPolicy(ctx, "acme", apiv1.PutPolicy{Document: "v3", Version: &stale}); !IsStatus(err, http.StatusConflict) {
		t.Errorf("stale version: %v, want 409", err)
	}
	if err := c.DeletePolicy(ctx, "acme", p2.Version); err != nil {
		t.Errorf("DeletePolicy: %v", err)
	}
	if vs, err := c.PolicyVersions(ctx, "acme", ListOptions{}); err != nil || len(vs.Items) != 3 {
		t.Errorf("PolicyVersions = %+v, %v", vs, err)
	}
	if _, err := c.TenantAudit(ctx, "acme", AuditOptions{Limit: 2}); err != nil {
		t.Errorf("TenantAudit: %v", err)
	}
}
