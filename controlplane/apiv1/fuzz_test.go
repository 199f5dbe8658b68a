package apiv1_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/model"
)

// Seeds every decoder gets besides its own: edge cases of the body itself.
var commonSeeds = []string{
	``, ` `, `{}`, `null`, `[]`, `"x"`, `0`, `{`, `{}}`, `{} {}`, `{}x`, `{"":1}`,
	`{"unknown":true}`, `{"name":"a","name":"b"}`, `{"NAME":"a"}`, "{\"name\":\"\xff\"}",
	`{"name":"\ud800"}`, `{"name":null}`, `{"tags":[]}`, `{"tags":null}`, `{"mtu":1e3}`,
	`{"version":-1}`, `{"udp_port_min":65536}`, `{"reusable":"true"}`,
}

// fuzzDecode checks the decoder on T: DecodeBytes never panics, refuses with a
// model.Invalid error, agrees with Decode, and what it accepts survives encoding
// and decoding again unchanged.
func fuzzDecode[T any](f *testing.F, seeds ...string) {
	for _, s := range append(seeds, commonSeeds...) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var v T
		err := apiv1.DecodeBytes(data, &v)
		var viaReader T
		if err2 := apiv1.Decode(bytes.NewReader(data), &viaReader); (err == nil) != (err2 == nil) {
			t.Fatalf("DecodeBytes: %v; Decode: %v", err, err2)
		}
		if err != nil {
			if model.KindOf(err) != model.Invalid {
				t.Fatalf("refusal %v (%T) is not a model.Invalid error", err, err)
			}
			return
		}
		enc, err := json.Marshal(&v)
		if err != nil {
			t.Fatalf("encoding %#v: %v", v, err)
		}
		var again T
		if err := apiv1.DecodeBytes(enc, &again); err != nil {
			t.Fatalf("decoding our own encoding %s: %v", enc, err)
		}
		if !reflect.DeepEqual(emptyAsNil(v), emptyAsNil(again)) {
			t.Fatalf("round trip changed the value:\n in  %q\n was %#v\n now %#v", data, v, again)
		}
		if enc2, _ := json.Marshal(&again); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable: %s then %s", enc, enc2)
		}
	})
}

// emptyAsNil returns v with empty slice fields set to nil: with omitempty, an
// explicit [] and an omitted field encode alike, and both mean "none".
func emptyAsNil[T any](v T) T {
	rv := reflect.ValueOf(&v).Elem()
	for i := range rv.NumField() {
		if f := rv.Field(i); f.Kind() == reflect.Slice && f.Len() == 0 {
			f.SetZero()
		}
	}
	return v
}

// TestEmptySliceRoundTrip pins down why emptyAsNil exists.
func TestEmptySliceRoundTrip(t *testing.T) {
	var n apiv1.CreateNode
	if err := apiv1.DecodeBytes([]byte(`{"name":"a","tags":[]}`), &n); err != nil || n.Tags == nil {
		t.Fatalf("decoding tags: [] = %#v, %v", n.Tags, err)
	}
	enc, _ := json.Marshal(n)
	if bytes.Contains(enc, []byte("tags")) {
		t.Errorf("an empty tags list is encoded: %s", enc)
	}
	var u apiv1.UpdateNode
	if err := apiv1.DecodeBytes([]byte(`{"tags":[]}`), &u); err != nil || u.Tags == nil || *u.Tags == nil {
		t.Fatalf("PATCH tags: [] must mean 'clear the tags', got %#v, %v", u.Tags, err)
	}
}

func FuzzCreateTenant(f *testing.F) {
	fuzzDecode[apiv1.CreateTenant](f, `{"name":"acme","description":"the acme corp"}`)
}

func FuzzUpdateTenant(f *testing.F) {
	fuzzDecode[apiv1.UpdateTenant](f, `{"name":"acme2"}`, `{"description":""}`)
}

func FuzzCreateNetwork(f *testing.F) {
	fuzzDecode[apiv1.CreateNetwork](f, `{"name":"lan","ipv4":"100.64.0.0/24","ipv6":"fd00::/64","mtu":1380}`)
}

func FuzzUpdateNetwork(f *testing.F) {
	fuzzDecode[apiv1.UpdateNetwork](f, `{"mtu":1400,"description":"x"}`, `{"mtu":null}`)
}

func FuzzCreateNode(f *testing.F) {
	fuzzDecode[apiv1.CreateNode](f, `{"name":"gw","network":"lan","kind":"vrouter","tags":["edge"],"routes":["10.0.0.0/8"],`+
		`"machine_key":"mkey:0000000000000000000000000000000000000000000000000000000000000001"}`)
}

func FuzzUpdateNode(f *testing.F) {
	fuzzDecode[apiv1.UpdateNode](f, `{"tags":[],"routes":["10.0.0.0/8"],"node_key":"nodekey:00"}`)
}

func FuzzCreateEnrollmentKey(f *testing.F) {
	fuzzDecode[apiv1.CreateEnrollmentKey](f, `{"network":"lan","reusable":true,"max_uses":5,"ephemeral":true,"tags":["a"],"expires_in":"1h"}`)
}

func FuzzUpdateEnrollmentKey(f *testing.F) {
	fuzzDecode[apiv1.UpdateEnrollmentKey](f, `{"expires_at":"2030-01-02T15:04:05Z","tags":["b"]}`)
}

func FuzzCreateToken(f *testing.F) {
	fuzzDecode[apiv1.CreateToken](f, `{"role":"tenant-admin","tenant":"acme","expires_in":"24h","description":"ci"}`)
}

func FuzzUpdateToken(f *testing.F) {
	fuzzDecode[apiv1.UpdateToken](f, `{"description":"renamed"}`)
}

func FuzzPutPolicy(f *testing.F) {
	fuzzDecode[apiv1.PutPolicy](f, `{"document":"allow tag:a -> tag:b:443","version":3}`, `{"document":"x","version":9223372036854775807}`)
}

func FuzzCreateRelay(f *testing.F) {
	fuzzDecode[apiv1.CreateRelay](f, `{"name":"fra1","region":"eu","public_addr":"203.0.113.5","udp_port_min":40000,"udp_port_max":40100,`+
		`"stun_port":3478,"tls_url":"https://fra1.example.com","ws_url":"wss://fra1.example.com/ws"}`)
}

func FuzzUpdateRelay(f *testing.F) {
	fuzzDecode[apiv1.UpdateRelay](f, `{"udp_port_min":1,"udp_port_max":65535,"relay_key":""}`)
}

func FuzzSite(f *testing.F) {
	fuzzDecode[apiv1.Site](f, `{"name":"hq","vrouter_node":"gw","remote_addr":"198.51.100.7","auth_method":"psk","psk":"0123456789abcdef",`+
		`"ike_proposals":["aes256-sha256-modp2048"],"local_subnets":["10.0.0.0/16"],"remote_subnets":["192.168.0.0/24"]}`)
}

func FuzzEnroll(f *testing.F) {
	fuzzDecode[apiv1.Enroll](f, `{"key":"ek_abc.def","name":"laptop","machine_key":"mkey:00","node_key":"nodekey:00"}`)
}
