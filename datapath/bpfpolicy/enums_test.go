package bpfpolicy

import (
	"testing"
	"unsafe"
)

// TestEnumsMatchGo checks that the C enums and the Go tables have the same entries,
// and the counter maps room for all of them.
func TestEnumsMatchGo(t *testing.T) {
	if int(policyDropReasonDROP_REASON_MAX) != len(DropReasons) {
		t.Errorf("DROP_REASON_MAX is %d, DropReasons has %d names", policyDropReasonDROP_REASON_MAX, len(DropReasons))
	}
	if int(policyPassReasonPASS_REASON_MAX) != len(PassReasons) {
		t.Errorf("PASS_REASON_MAX is %d, PassReasons has %d names", policyPassReasonPASS_REASON_MAX, len(PassReasons))
	}
	for _, names := range [][]string{DropReasons[:], PassReasons[:]} {
		seen := map[string]bool{}
		for i, n := range names {
			if n == "" || seen[n] {
				t.Errorf("reason %d has an empty or repeated name %q: name every C enum value", i, n)
			}
			seen[n] = true
		}
	}
	spec, err := loadPolicy()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{
		policyMapDropCounters: len(DropReasons),
		policyMapPassCounters: len(PassReasons),
		policyMapRuleCounters: maxRuleIDs,
	} {
		if got := spec.Maps[name].MaxEntries; int(got) != want {
			t.Errorf("map %s has %d entries, want %d", name, got, want)
		}
	}
	// The rule key's data is identity, direction, protocol and port: ruleKeyBits
	// plus 16 bits of port.
	if got := 8 * (unsafe.Sizeof(policyRuleKey{}) - 4); got != ruleKeyBits+16 {
		t.Errorf("rule key data has %d bits, want %d", got, ruleKeyBits+16)
	}
}
