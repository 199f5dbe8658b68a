package apiv1_test

import (
	"errors"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/model"
)

// TestDecodeErrors: every refusal is model.Invalid, names the field JSON blames, and
// says what is wrong.
func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		body, field, msg string
	}{
		{``, "", "empty"},
		{"  \n", "", "empty"},
		{`{"name":`, "", "unexpected end"},
		{`{"name":"a",}`, "", "malformed JSON at byte"},
		{`{"name":"a"} {}`, "", "data after the object"},
		{`{"name":"a"}]`, "", "data after the object"},
		{`{"name":"a"}x`, "", "data after the object"},
		{`[]`, "", "must be a JSON object"},
		{`42`, "", "must be a JSON object"},
		{`{"nmae":"a"}`, "nmae", "unknown field"},
		{`{"name":5}`, "name", "must be a string, not number"},
		{`{"tags":"a"}`, "tags", "must be an array"},
		{`{"tags":[1]}`, "tags", "must be a string"},
		{`{"machine_key":true}`, "machine_key", "must be a string, not bool"},
		{`{"name":"` + strings.Repeat("a", apiv1.MaxBodyBytes) + `"}`, "", "larger than"},
	} {
		var v apiv1.CreateNode
		err := apiv1.DecodeBytes([]byte(tc.body), &v)
		var e *model.Error
		if !errors.As(err, &e) || e.Kind != model.Invalid {
			t.Errorf("%.40q: %v, want a model.Invalid error", tc.body, err)
			continue
		}
		if e.Field != tc.field || !strings.Contains(e.Msg, tc.msg) {
			t.Errorf("%.40q: field %q, %q; want field %q, %q", tc.body, e.Field, e.Msg, tc.field, tc.msg)
		}
	}
	for _, tc := range []struct {
		body  string
		v     any
		field string
	}{
		{`{"version":1.5}`, &apiv1.PutPolicy{}, "version"},
		{`{"udp_port_min":-1}`, &apiv1.CreateRelay{}, "udp_port_min"},
		{`{"udp_port_max":65536}`, &apiv1.CreateRelay{}, "udp_port_max"},
		{`{"reusable":1}`, &apiv1.CreateEnrollmentKey{}, "reusable"},
		{`{"mtu":"1400"}`, &apiv1.UpdateNetwork{}, "mtu"},
		{`{"local_subnets":{}}`, &apiv1.Site{}, "local_subnets"},
	} {
		err := apiv1.DecodeBytes([]byte(tc.body), tc.v)
		var e *model.Error
		if !errors.As(err, &e) || e.Field != tc.field {
			t.Errorf("%s into %T: %v, want field %q", tc.body, tc.v, err, tc.field)
		}
	}
}

// TestDecodeReader: Decode reports a failing reader as invalid input and reads no
// further than one byte past the limit.
func TestDecodeReader(t *testing.T) {
	var v apiv1.CreateTenant
	err := apiv1.Decode(iotest.ErrReader(errors.New("connection reset")), &v)
	if model.KindOf(err) != model.Invalid || !strings.Contains(err.Error(), "connection reset") {
		t.Errorf("failing reader: %v", err)
	}
	if err := apiv1.Decode(strings.NewReader(`{"name":"acme"}`), &v); err != nil || v.Name != "acme" {
		t.Errorf("Decode = %+v, %v", v, err)
	}
	huge := `{"name":"` + strings.Repeat("a", 4*apiv1.MaxBodyBytes) + `"}`
	big := strings.NewReader(huge)
	if err := apiv1.Decode(big, &v); model.KindOf(err) != model.Invalid {
		t.Errorf("oversized body: %v", err)
	}
	if read := len(huge) - big.Len(); read > apiv1.MaxBodyBytes+1 {
		t.Errorf("Decode read %d bytes of an oversized body, limit %d", read, apiv1.MaxBodyBytes)
	}
}
