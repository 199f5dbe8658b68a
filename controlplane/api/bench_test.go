package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/model"
)

// BenchmarkListNodes10k measures the server side of listing a tenant's nodes at
// 10k nodes: the real handler (authentication, snapshot read, JSON), without TLS.
func BenchmarkListNodes10k(b *testing.B) {
	const nodes = 10_000
	e := start(b)
	ctx := context.Background()
	tn, err := e.State.CreateTenant(ctx, "bench", model.Tenant{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	nw, err := e.State.CreateNetwork(ctx, "bench", model.Network{TenantID: tn.ID, Name: "big", IPv4: netip.MustParsePrefix("10.0.0.0/16")})
	if err != nil {
		b.Fatal(err)
	}
	began := time.Now()
	for i := range nodes {
		n := model.Node{TenantID: tn.ID, NetworkID: nw.ID, Name: fmt.Sprintf("node-%05d", i), Tags: []string{"bench"}}
		if _, err := e.State.CreateNode(ctx, "bench", n); err != nil {
			b.Fatalf("node %d: %v", i, err)
		}
	}
	took := time.Since(began)
	b.Logf("setup: %d State.CreateNode calls took %v (%v each)", nodes, took.Round(time.Millisecond), (took / nodes).Round(time.Microsecond))

	h := e.Server.Config.Handler
	for _, bc := range []struct {
		name, query string
		first       string // the name the page starts with
		items       int
	}{
		{"first-page-100", "limit=100", "node-00000", 100},
		{"middle-page-100", "limit=100&after=node-04999", "node-05000", 100},
		{"first-page-1000", "limit=1000", "node-00000", 1000},
	} {
		path := apiv1.Prefix + "/tenants/bench/nodes?" + bc.query
		get := func() *httptest.ResponseRecorder {
			req := httptest.NewRequest("GET", path, nil)
			req.Header.Set("Authorization", "Bearer "+e.op)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			return rec
		}
		rec := get()
		var page apiv1.List[model.Node]
		if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil || rec.Code != 200 ||
			len(page.Items) != bc.items || page.Items[0].Name != bc.first || page.Next == "" {
			b.Fatalf("GET %s = %d, %d items from %q, next %q, %v", path, rec.Code, len(page.Items), page.Items[0].Name, page.Next, err)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(rec.Body.Len()))
			b.ReportAllocs()
			for b.Loop() {
				if rec := get(); rec.Code != 200 {
					b.Fatalf("GET %s = %d", path, rec.Code)
				}
			}
		})
	}
}
