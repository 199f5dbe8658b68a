package bpfpolicy

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
)

// RuleCounter is what one rule decided: packets and bytes, summed over CPUs.
type RuleCounter struct {
	Packets, Bytes uint64
}

// ensureCounters gives every rule id without a counter slot a free one, with a zero
// counter, so that Counters lists every rule of the policy. It returns the slots it
// took.
func (e *Enforcer) ensureCounters(ids []uint32) ([]uint32, error) {
	var fresh []uint32
	ruleAt := map[uint32]uint32{}
	next := 0
	for _, id := range ids {
		if _, ok := e.slotOf[id]; ok {
			continue
		}
		for next < maxRuleIDs && e.taken[next] {
			next++
		}
		if next == maxRuleIDs {
			e.releaseSlots(fresh)
			return nil, fmt.Errorf("no free counter slot for rule %d: the old and the new policy use more than %d rule ids", id, maxRuleIDs)
		}
		fresh = append(fresh, uint32(next))
		ruleAt[uint32(next)] = id
		e.taken[next] = true
		e.slotOf[id] = uint16(next)
	}
	if len(fresh) == 0 {
		return nil, nil
	}
	if err := e.writeSlots(fresh, func(s uint32) policyRuleSlot {
		return policyRuleSlot{RuleId: ruleAt[s], Used: 1}
	}); err != nil {
		e.releaseSlots(fresh)
		return nil, fmt.Errorf("creating counters: %w", err)
	}
	return fresh, nil
}

// releaseSlots gives back slots that ensureCounters took for a policy that was not
// installed.
func (e *Enforcer) releaseSlots(slots []uint32) {
	if len(slots) == 0 {
		return
	}
	for id, s := range e.slotOf {
		if slices.Contains(slots, uint32(s)) {
			delete(e.slotOf, id)
		}
	}
	if err := e.writeSlots(slots, func(uint32) policyRuleSlot { return policyRuleSlot{} }); err != nil {
		e.log.Warn("releasing counter slots of a policy not installed", "err", err)
		return // leave them taken: their rule_slots entries may still name the rules
	}
	for _, s := range slots {
		e.taken[s] = false
	}
}

// counterSize is the size of a struct counter.
const counterSize = 16

// writeSlots zeroes the counters of slots and records which rule each counts.
func (e *Enforcer) writeSlots(slots []uint32, rule func(uint32) policyRuleSlot) error {
	var zero [counterSize]byte
	for _, s := range slots {
		for c := range e.ncpu {
			if _, err := e.counters.WriteAt(zero[:], int64(c*maxRuleIDs+int(s))*counterSize); err != nil {
				return fmt.Errorf("zeroing the counter of slot %d: %w", s, err)
			}
		}
	}
	vals := make([]policyRuleSlot, len(slots))
	for i, s := range slots {
		vals[i] = rule(s)
	}
	if _, err := e.objs.RuleSlots.BatchUpdate(slots, vals, nil); err != nil {
		return fmt.Errorf("writing %d counter slots: %w", len(slots), err)
	}
	return nil
}

// pruneCounters frees the counter slots of rules that are no longer in the policy.
func (e *Enforcer) pruneCounters(ids []uint32) error {
	keep := make(map[uint32]bool, len(ids))
	for _, id := range ids {
		keep[id] = true
	}
	var stale []uint32
	for id, s := range e.slotOf {
		if !keep[id] {
			stale = append(stale, uint32(s))
			delete(e.slotOf, id)
		}
	}
	if len(stale) == 0 {
		return nil
	}
	if err := e.writeSlots(stale, func(uint32) policyRuleSlot { return policyRuleSlot{} }); err != nil {
		return fmt.Errorf("deleting the counters of removed rules: %w", err)
	}
	for _, s := range stale {
		e.taken[s] = false
	}
	return nil
}

// Counters returns the packets and bytes each rule of the policy decided (accepted
// or denied), by rule id, summed over CPUs. Replies, related ICMP errors and later
// fragments are counted by Passes, not here; later fragments of a first fragment a
// rule accepted are counted on that rule too.
func (e *Enforcer) Counters() (map[uint32]RuleCounter, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	out := make(map[uint32]RuleCounter, len(e.slotOf))
	var b [counterSize]byte
	for id, s := range e.slotOf {
		var rc RuleCounter
		for c := range e.ncpu {
			if _, err := e.counters.ReadAt(b[:], int64(c*maxRuleIDs+int(s))*counterSize); err != nil {
				return nil, fmt.Errorf("bpfpolicy: reading the counter of rule %d: %w", id, err)
			}
			rc.Packets += binary.LittleEndian.Uint64(b[:8])
			rc.Bytes += binary.LittleEndian.Uint64(b[8:])
		}
		out[id] = rc
	}
	return out, nil
}

// Drops returns how many packets were dropped, by reason (DropReasons).
func (e *Enforcer) Drops() (map[string]uint64, error) {
	return e.reasons(e.objs.DropCounters, DropReasons[:], "drop")
}

// Passes returns how many packets passed, by reason (PassReasons).
func (e *Enforcer) Passes() (map[string]uint64, error) {
	return e.reasons(e.objs.PassCounters, PassReasons[:], "pass")
}

func (e *Enforcer) reasons(m *ebpf.Map, names []string, what string) (map[string]uint64, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	out := make(map[string]uint64, len(names))
	var vals []policyCounter
	for i, name := range names {
		if err := m.Lookup(uint32(i), &vals); err != nil {
			return nil, fmt.Errorf("bpfpolicy: reading %s counter %s: %w", what, name, err)
		}
		out[name] = sum(vals).Packets
	}
	return out, nil
}

func sum(vals []policyCounter) RuleCounter {
	var c RuleCounter
	for _, v := range vals {
		c.Packets += v.Packets
		c.Bytes += v.Bytes
	}
	return c
}

// DropReasons names the drop counters, indexed by the C enum drop_reason.
var DropReasons = [policyDropReasonDROP_REASON_MAX]string{
	policyDropReasonDROP_NO_RULE:           "no_rule",
	policyDropReasonDROP_DENY_RULE:         "deny_rule",
	policyDropReasonDROP_MALFORMED:         "malformed",
	policyDropReasonDROP_FRAGMENT:          "fragment",
	policyDropReasonDROP_UNSUPPORTED_PROTO: "unsupported_proto",
	policyDropReasonDROP_UNSUPPORTED_L3:    "unsupported_l3",
	policyDropReasonDROP_NO_POLICY:         "no_policy",
}

// PassReasons names the pass counters, indexed by the C enum pass_reason.
var PassReasons = [policyPassReasonPASS_REASON_MAX]string{
	policyPassReasonPASS_RULE:     "rule",
	policyPassReasonPASS_REPLY:    "reply",
	policyPassReasonPASS_RELATED:  "related",
	policyPassReasonPASS_FRAGMENT: "fragment",
	policyPassReasonPASS_L2:       "l2",
}
