package key

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	var b [Len]byte
	for i := range b {
		b[i] = byte(i + 1)
	}
	m := MachinePublicFromRaw(b)
	s := m.String()
	if !strings.HasPrefix(s, MachinePrefix) {
		t.Fatalf("String() = %q, want prefix %q", s, MachinePrefix)
	}
	got, err := ParseMachinePublic(s)
	if err != nil || !got.Equal(m) {
		t.Fatalf("ParseMachinePublic(%q) = %v, %v", s, got, err)
	}
	if _, err := ParseNodePublic(s); err == nil {
		t.Fatalf("ParseNodePublic accepted a machine key")
	}
	j, _ := json.Marshal(struct{ K NodePublic }{NodePublicFromRaw(b)})
	var back struct{ K NodePublic }
	if err := json.Unmarshal(j, &back); err != nil || back.K.Raw() != b {
		t.Fatalf("json round trip: %s -> %v, %v", j, back.K, err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, s := range []string{"", "mkey:", "mkey:zz", "mkey:" + strings.Repeat("0", 64), "nodekey:" + strings.Repeat("a", 64)} {
		if _, err := ParseMachinePublic(s); err == nil {
			t.Errorf("ParseMachinePublic(%q) succeeded", s)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("mkey:" + strings.Repeat("ab", 32))
	f.Add("nodekey:00")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseMachinePublic(s)
		if err == nil && k.String() != strings.ToLower(s) {
			t.Fatalf("round trip %q -> %q", s, k.String())
		}
	})
}
