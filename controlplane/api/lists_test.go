package api_test

import (
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// pageAll follows next from the first page of path with the given limit and
// cursor parameter, and returns every item's field and the size of every page.
func (e *env) pageAll(t *testing.T, path, cursor string, limit int, field string) (all []string, pages []int) {
	t.Helper()
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	next := ""
	for range 1000 {
		p := fmt.Sprintf("%s%slimit=%d", path, sep, limit)
		if next != "" {
			p += "&" + cursor + "=" + url.QueryEscape(next)
		}
		b := e.must(t, 200, "GET", p, e.op, nil)
		got := b.names(field)
		if len(got) > limit {
			t.Fatalf("GET %s: %d items, more than the limit", p, len(got))
		}
		all, pages = append(all, got...), append(pages, len(got))
		if next = b.str("next"); next == "" {
			return all, pages
		}
	}
	t.Fatalf("GET %s: no last page after 1000", path)
	return nil, nil
}

// wantPaged checks that paging path with limit sees exactly want, in order, in
// pages of limit.
func (e *env) wantPaged(t *testing.T, path, cursor string, limit int, field string, want []string) {
	t.Helper()
	got, pages := e.pageAll(t, path, cursor, limit, field)
	if !slices.Equal(got, want) {
		t.Errorf("paging %s by %d:\n got %v\nwant %v", path, limit, got, want)
	}
	for i, n := range pages[:len(pages)-1] {
		if n != limit {
			t.Errorf("paging %s by %d: page %d has %d items", path, limit, i, n)
		}
	}
	if want := (len(want) + limit - 1) / limit; len(pages) != max(want, 1) {
		t.Errorf("paging %s by %d: %d pages %v, want %d", path, limit, len(pages), pages, want)
	}
}

func TestPagination(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.must(t, 201, "POST", "/tenants", e.op, `{"name":"acme"}`)
	var networks, nodes, even, keys, tenants []string
	for _, i := range rand.Perm(25) {
		name := fmt.Sprintf("net-%02d", i)
		e.must(t, 201, "POST", "/tenants/acme/networks", e.op, networkBody(name, fmt.Sprintf("10.%d.0.0/24", i)))
		networks = append(networks, name)
	}
	for _, i := range rand.Perm(25) {
		name, nw := fmt.Sprintf("node-%02d", i), fmt.Sprintf("net-%02d", i%2)
		e.must(t, 201, "POST", "/tenants/acme/nodes", e.op, fmt.Sprintf(`{"name":%q,"network":%q}`, name, nw))
		nodes = append(nodes, name)
		if i%2 == 0 {
			even = append(even, name)
		}
	}
	for i := range 12 {
		keys = append(keys, e.must(t, 201, "POST", "/tenants/acme/keys", e.op, `{"network":"net-00"}`).str("id"))
		name := fmt.Sprintf("t%02d", i)
		e.must(t, 201, "POST", "/tenants", e.op, fmt.Sprintf(`{"name":%q}`, name))
		tenants = append(tenants, name)
	}
	tenants = append(tenants, "acme")
	for _, s := range [][]string{networks, nodes, even, keys, tenants} {
		slices.Sort(s)
	}

	e.wantPaged(t, "/tenants/acme/networks", "after", 10, "name", networks)
	e.wantPaged(t, "/tenants/acme/networks", "after", 25, "name", networks)
	e.wantPaged(t, "/tenants/acme/networks", "after", 1000, "name", networks)
	e.wantPaged(t, "/tenants/acme/nodes", "after", 10, "name", nodes)
	e.wantPaged(t, "/tenants/acme/nodes", "after", 5, "name", nodes)
	e.wantPaged(t, "/tenants/acme/nodes?network=net-00", "after", 10, "name", even)
	e.wantPaged(t, "/tenants/acme/nodes?network=net-00", "after", 13, "name", even)
	e.wantPaged(t, "/tenants/acme/keys", "after", 5, "id", keys)
	e.wantPaged(t, "/tenants", "after", 4, "name", tenants)

	// A cursor whose object is gone still pages on from where it was.
	first := e.must(t, 200, "GET", "/tenants/acme/networks?limit=10", e.op, nil)
	e.must(t, 204, "DELETE", "/tenants/acme/networks/"+first.str("next"), e.op, nil)
	second := e.must(t, 200, "GET", "/tenants/acme/networks?limit=10&after="+first.str("next"), e.op, nil)
	if got := second.names("name"); !slices.Equal(got, networks[10:20]) {
		t.Errorf("page after a deleted cursor = %v, want %v", got, networks[10:20])
	}

	// The audit log pages newest first with ?before=.
	// 1 tenant, 25 networks, 25 nodes, 12 keys, 1 deleted network.
	ids, _ := e.pageAll(t, "/tenants/acme/audit", "before", 10, "id")
	if len(ids) != 64 || !slices.IsSortedFunc(ids, func(a, b string) int { return strings.Compare(b, a) }) {
		t.Errorf("acme's audit log: %d entries, want 64 newest first: %v", len(ids), ids)
	}
	if all, _ := e.pageAll(t, "/audit", "before", 7, "id"); len(all) != e.auditLen(t) || len(all) <= len(ids) {
		t.Errorf("GET /audit paged %d entries, the store holds %d", len(all), e.auditLen(t))
	}
}

func networkBody(name, cidr string) string {
	return fmt.Sprintf(`{"name":%q,"ipv4":%q}`, name, cidr)
}

// TestAuditLastPage: docs/api.md says next is absent on the last page; the audit
// log sets it whenever a page is full, even when nothing follows.
func TestAuditLastPage(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.must(t, 201, "POST", "/tenants", e.op, `{"name":"acme"}`)
	e.must(t, 201, "POST", "/tenants/acme/networks", e.op, networkBody("lan", "10.0.0.0/24"))
	b := e.must(t, 200, "GET", "/tenants/acme/audit?limit=2", e.op, nil)
	if len(b.items()) != 2 {
		t.Fatalf("acme's audit log = %v, want 2 entries", b)
	}
	bug(t, b.str("next") != "", "controlplane/api/routes.go audit(): next is set on a full last page (len(entries) == limit); "+
		"ask the store for limit+1 entries and set next only when there is one more")
}

// TestPolicyVersions: optimistic concurrency with body versions and ETags.
func TestPolicyVersions(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.must(t, 201, "POST", "/tenants", e.op, `{"name":"acme"}`)
	const p = "/tenants/acme/policy"
	put := func(body string, hdr ...string) reply { return e.call(t, "PUT", p, e.op, body, hdr...) }
	wantVersion := func(what string, r reply, code int, version float64) {
		t.Helper()
		if r.code != code {
			t.Fatalf("%s = %d, want %d: %s", what, r.code, code, r.raw)
		}
		if got := r.body.get("version"); got != version {
			t.Errorf("%s: version %v, want %v", what, got, version)
		}
		if want := fmt.Sprintf(`"%v"`, version); r.hdr.Get("ETag") != want {
			t.Errorf("%s: ETag %q, want %q", what, r.hdr.Get("ETag"), want)
		}
	}

	wantError(t, "GET before any policy", e.call(t, "GET", p, e.op, nil), 404, "")
	wantVersion("PUT version 0", put(`{"document":"rules: [] # one","version":0}`), 200, 1)
	wantVersion("GET", e.call(t, "GET", p, e.op, nil), 200, 1)
	wantVersion("PUT If-Match 1", put(`{"document":"rules: [] # two"}`, "If-Match", `"1"`), 200, 2)
	before := e.world(t)
	wantError(t, "PUT version 1 again", put(`{"document":"rules: [] # three","version":1}`), 409, "version")
	wantError(t, "PUT If-Match 1 again", put(`{"document":"rules: [] # three"}`, "If-Match", `"1"`), 412, "")
	e.unchanged(t, "stale policy writes", before)
	got := e.must(t, 200, "GET", p, e.op, nil)
	checkFields(t, "policy", got, map[string]any{"document": "rules: [] # two", "version": 2}, nil)

	versions := e.must(t, 200, "GET", p+"/versions", e.op, nil)
	if got := fmt.Sprint(versions.names("document")); got != "[rules: [] # two rules: [] # one]" {
		t.Errorf("versions = %s, want newest first [two one]", got)
	}

	e.must(t, 204, "DELETE", p+"?version=2", e.op, nil)
	wantError(t, "GET after DELETE", e.call(t, "GET", p, e.op, nil), 404, "")
	wantError(t, "DELETE again", e.call(t, "DELETE", p+"?version=3", e.op, nil), 404, "")
	versions = e.must(t, 200, "GET", p+"/versions", e.op, nil)
	checkFields(t, "versions after DELETE", versions, map[string]any{"#items": 3, "items.0.version": 3, "items.0.document": ""}, nil)

	wantVersion("PUT after DELETE", put(`{"document":"rules: [] # four","version":3}`), 200, 4)
	if r := e.call(t, "DELETE", p, e.op, nil, "If-Match", `W/"4"`); r.code != 204 {
		t.Errorf("DELETE If-Match W/\"4\" = %d %s", r.code, r.raw)
	}
	checkFields(t, "versions?limit=2", e.must(t, 200, "GET", p+"/versions?limit=2", e.op, nil),
		map[string]any{"#items": 2, "items.0.version": 5, "items.1.version": 4}, nil)
}
