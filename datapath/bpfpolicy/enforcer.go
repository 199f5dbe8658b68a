package bpfpolicy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/cvlan/cvlan/policy"
)

// DefaultPinRoot is where Open pins an interface's maps and links unless
// Options.PinDir says otherwise: <DefaultPinRoot>/<interface>.
const DefaultPinRoot = "/sys/fs/bpf/cvlan"

// ErrNoChanges is returned by Set when the policy has the version and the content
// that is already enforced; nothing was written.
var ErrNoChanges = errors.New("bpfpolicy: policy unchanged")

// ErrClosed is returned by the methods of an Enforcer after Close or Remove.
var ErrClosed = errors.New("bpfpolicy: enforcer closed")

// Options says where Open enforces.
type Options struct {
	// Interface is the overlay interface, in the network namespace of the calling
	// thread.
	Interface string
	// L2 says that the interface carries Ethernet frames (veth in tests). The
	// overlay interfaces (kernel WireGuard, TUN) carry bare IP packets: L2 false.
	L2 bool
	// PinDir holds the pinned maps and links; DefaultPinRoot/<Interface> if empty.
	// It must be on a bpf filesystem; one under /sys/fs/bpf is mounted if needed.
	PinDir string
	// Log receives what Open and Set did; nothing is logged if nil.
	Log *slog.Logger

	// forceClsact makes Open attach through clsact even where TCX works (tests).
	forceClsact bool
}

// RuleCounter is what one rule decided: packets and bytes, summed over CPUs.
type RuleCounter struct {
	Packets, Bytes uint64
}

// Enforcer is the policy programs attached to one interface with their maps. Its
// methods are safe for concurrent use.
type Enforcer struct {
	mu      sync.Mutex
	closed  bool
	iface   string
	ifindex int
	pinDir  string
	log     *slog.Logger
	spec    *ebpf.CollectionSpec
	objs    policyObjects
	hooks   [2]hook // ingress, egress
	reused  bool    // the maps came from an earlier Open's pins
}

// Open loads the policy programs for opts.Interface and attaches them at its TC
// ingress and egress hooks (TCX links; clsact with direct-action cls_bpf filters
// where the kernel has no TCX). Maps and links are pinned under the pin directory.
// If an earlier Open left pins there, Open reuses the maps (with their policy,
// connections and counters) and moves the pinned links to the new programs in place,
// so enforcement never pauses. A fresh pin directory enforces the zero policy: every
// IP packet is dropped until Set.
func Open(opts Options) (*Enforcer, error) {
	if opts.Interface == "" {
		return nil, errors.New("bpfpolicy: no interface given")
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("interface", opts.Interface)
	pinDir := opts.PinDir
	if pinDir == "" {
		pinDir = filepath.Join(DefaultPinRoot, opts.Interface)
	}
	ifc, err := net.InterfaceByName(opts.Interface)
	if err != nil {
		return nil, fmt.Errorf("bpfpolicy: looking up interface %s: %w", opts.Interface, err)
	}
	if err := ensureBPFFS(pinDir, log); err != nil {
		return nil, fmt.Errorf("bpfpolicy: %w", err)
	}
	if err := os.MkdirAll(pinDir, 0o700); err != nil {
		return nil, fmt.Errorf("bpfpolicy: creating pin directory: %w", err)
	}
	_, statErr := os.Stat(filepath.Join(pinDir, policyMapPolicyState))
	spec, err := loadSpec(opts.L2)
	if err != nil {
		return nil, fmt.Errorf("bpfpolicy: %w", err)
	}
	e, err := load(spec, pinDir, log)
	if err != nil {
		return nil, fmt.Errorf("bpfpolicy: %w", err)
	}
	e.iface, e.ifindex, e.reused = opts.Interface, ifc.Index, statErr == nil
	if err := e.attach(opts.forceClsact); err != nil {
		e.closeHooks()
		e.objs.Close()
		return nil, fmt.Errorf("bpfpolicy: attaching to %s: %w", opts.Interface, err)
	}
	log.Info("policy programs attached", "attach", e.hooks[0].mode(), "pin_dir", pinDir, "reused_pins", e.reused)
	return e, nil
}

// load loads the programs and maps: pinned in pinDir, reusing maps pinned there, or
// unpinned if pinDir is empty (tests that only run the programs).
func load(spec *ebpf.CollectionSpec, pinDir string, log *slog.Logger) (*Enforcer, error) {
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: pinDir}}
	if pinDir == "" {
		for _, m := range spec.Maps {
			m.Pinning = ebpf.PinNone
		}
	}
	e := &Enforcer{pinDir: pinDir, log: log, spec: spec}
	err := spec.LoadAndAssign(&e.objs, opts)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return nil, fmt.Errorf("the maps pinned in %s were made by another version (Remove them to start afresh): %w", pinDir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("loading programs: %w", err)
	}
	if err := e.fillGenerations(); err != nil {
		e.objs.Close()
		return nil, err
	}
	return e, nil
}

// loadSpec returns the collection spec with its load-time constants set.
func loadSpec(l2 bool) (*ebpf.CollectionSpec, error) {
	spec, err := loadPolicy()
	if err != nil {
		return nil, err
	}
	l2len := uint32(0)
	if l2 {
		l2len = 14
	}
	v, ok := spec.Variables[policyVarL2Len]
	if !ok {
		return nil, fmt.Errorf("collection has no variable %s", policyVarL2Len)
	}
	if err := v.Set(l2len); err != nil {
		return nil, fmt.Errorf("setting %s: %w", policyVarL2Len, err)
	}
	return spec, nil
}

// genMap is one map of a generation: its outer map (two slots) and, for install,
// how many entries its inner map gets and how they are written.
type genMap struct {
	outer *ebpf.Map
	name  string
	n     int
	fill  func(*ebpf.Map) error
}

// genMaps returns the maps of a generation, filled from g if it is not nil.
func (e *Enforcer) genMaps(g *generation) []genMap {
	ms := []genMap{
		{outer: e.objs.HostGens, name: policyMapHostGens},
		{outer: e.objs.Id4Gens, name: policyMapId4Gens},
		{outer: e.objs.Id6Gens, name: policyMapId6Gens},
		{outer: e.objs.GroupGens, name: policyMapGroupGens},
		{outer: e.objs.RuleGens, name: policyMapRuleGens},
	}
	if g == nil {
		return ms
	}
	ms[0].n, ms[0].fill = len(g.Hosts), func(m *ebpf.Map) error {
		for _, en := range g.Hosts {
			if err := m.Put(&en.Key, en.Identity); err != nil {
				return fmt.Errorf("writing identity of host %x: %w", en.Key.Addr, err)
			}
		}
		return nil
	}
	ms[1].n, ms[1].fill = len(g.V4), func(m *ebpf.Map) error {
		for _, en := range g.V4 {
			if err := m.Put(&en.Key, en.Identity); err != nil {
				return fmt.Errorf("writing identity of %v/%d: %w", en.Key.Addr, en.Key.Prefixlen, err)
			}
		}
		return nil
	}
	ms[2].n, ms[2].fill = len(g.V6), func(m *ebpf.Map) error {
		for _, en := range g.V6 {
			if err := m.Put(&en.Key, en.Identity); err != nil {
				return fmt.Errorf("writing identity of %x/%d: %w", en.Key.Addr, en.Key.Prefixlen, err)
			}
		}
		return nil
	}
	ms[3].n, ms[3].fill = len(g.Groups), func(m *ebpf.Map) error {
		for _, en := range g.Groups {
			if err := m.Put(&en.Key, &en.Val); err != nil {
				return fmt.Errorf("writing the ranges of identity %d: %w", en.Key.Identity, err)
			}
		}
		return nil
	}
	ms[4].n, ms[4].fill = len(g.Rules), func(m *ebpf.Map) error {
		for _, en := range g.Rules {
			if err := m.Put(&en.Key, &en.Val); err != nil {
				return fmt.Errorf("writing rule %d: %w", en.Val.RuleId, err)
			}
		}
		return nil
	}
	return ms
}

// newInner creates an empty map for the generation slots of outer map name, sized
// for n entries.
func (e *Enforcer) newInner(name string, n int) (*ebpf.Map, error) {
	outer, ok := e.spec.Maps[name]
	if !ok || outer.InnerMap == nil {
		return nil, fmt.Errorf("collection has no map-in-map %s", name)
	}
	s := outer.InnerMap.Copy()
	s.Name = name[:4] // host, id4_, id6_, grou, rule: the kernel's name for the inner maps
	s.MaxEntries = uint32(max(n, 1))
	s.Pinning = ebpf.PinNone
	m, err := ebpf.NewMap(s)
	if err != nil {
		return nil, fmt.Errorf("creating an inner map of %s for %d entries: %w", name, n, err)
	}
	return m, nil
}

// fillGenerations gives every empty generation slot an empty trie, so that a fresh
// pin directory denies with DROP_NO_RULE rather than DROP_NO_POLICY.
func (e *Enforcer) fillGenerations() error {
	for _, o := range e.genMaps(nil) {
		for slot := uint32(0); slot < 2; slot++ {
			var id uint32
			err := o.outer.Lookup(slot, &id)
			if err == nil {
				continue
			}
			if !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("reading %s[%d]: %w", o.name, slot, err)
			}
			m, err := e.newInner(o.name, 0)
			if err != nil {
				return err
			}
			err = o.outer.Put(slot, m) // map-in-map arrays take BPF_ANY only
			m.Close()
			if err != nil {
				return fmt.Errorf("writing %s[%d]: %w", o.name, slot, err)
			}
		}
	}
	return nil
}

// Set makes p the enforced policy: it writes p's identities and rules into fresh
// maps, installs them in the generation slot the programs do not use, flips the
// selector with one map update, and returns after every packet judged by the old
// generation has left the programs. A packet is judged by the old policy or by p,
// never by parts of both. nil is the zero policy. Set returns ErrNoChanges if p has
// the version and content already in force (also across restarts: the digest is
// kept in a pinned map), and an error without changing anything if p breaks the
// compiler's contract or the kernel refuses the maps.
func (e *Enforcer) Set(p *policy.NodePolicy) error {
	g, err := lower(p)
	if err != nil {
		return fmt.Errorf("bpfpolicy: lowering policy: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	var st policyPolicyState
	if err := e.objs.PolicyState.Lookup(uint32(0), &st); err != nil {
		return fmt.Errorf("bpfpolicy: reading the policy state: %w", err)
	}
	if st.Digest == g.Digest {
		if st.Version == g.Version {
			return ErrNoChanges
		}
		st.Version = g.Version
		if err := e.objs.PolicyState.Put(uint32(0), &st); err != nil {
			return fmt.Errorf("bpfpolicy: recording policy version %d: %w", g.Version, err)
		}
		e.log.Info("policy version changed, content unchanged", "version", g.Version)
		return nil
	}
	if err := e.install(g, &st); err != nil {
		return fmt.Errorf("bpfpolicy: installing policy version %d: %w", g.Version, err)
	}
	e.log.Info("policy installed", "version", g.Version, "generation", st.Active,
		"prefixes", len(g.Hosts)+len(g.V4)+len(g.V6), "groups", len(g.Groups), "trie_entries", len(g.Rules),
		"rules", len(g.RuleIDs))
	return nil
}

// install writes g into the inactive generation and switches to it; st is the
// current state and becomes the new one.
func (e *Enforcer) install(g *generation, st *policyPolicyState) error {
	next := st.Active&1 ^ 1
	ms := e.genMaps(g)
	inners := make([]*ebpf.Map, len(ms))
	defer func() {
		for _, m := range inners {
			if m != nil {
				m.Close()
			}
		}
	}()
	for i, gm := range ms {
		m, err := e.newInner(gm.name, gm.n)
		if err != nil {
			return err
		}
		inners[i] = m
		if err := gm.fill(m); err != nil {
			return err
		}
	}
	if err := e.ensureCounters(g.RuleIDs); err != nil {
		return err
	}
	// Every update of a map-in-map returns only after an RCU grace period, so once
	// these return no packet still holds the inner maps they replace.
	for i, gm := range ms {
		if err := gm.outer.Put(next, inners[i]); err != nil {
			return fmt.Errorf("installing %s[%d]: %w", gm.name, next, err)
		}
	}
	*st = policyPolicyState{Active: next, Version: g.Version, Digest: g.Digest}
	if err := e.objs.PolicyState.Put(uint32(0), st); err != nil {
		return fmt.Errorf("switching to generation %d: %w", next, err)
	}
	// The fence: rewriting a slot with the map it holds waits for another grace
	// period, after which no packet that read the old selector is still running.
	// The next Set may then rewrite the old generation's slot.
	last := len(ms) - 1
	if err := ms[last].outer.Put(next, inners[last]); err != nil {
		return fmt.Errorf("waiting for packets of the old generation: %w", err)
	}
	return e.pruneCounters(g.RuleIDs)
}

// ensureCounters creates a zero counter for every rule id that has none, so that
// Counters lists every rule of the policy and the programs never insert.
func (e *Enforcer) ensureCounters(ids []uint32) error {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("counting CPUs: %w", err)
	}
	zero := make([]policyCounter, ncpu)
	for _, id := range ids {
		err := e.objs.RuleCounters.Update(id, zero, ebpf.UpdateNoExist)
		if err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			return fmt.Errorf("creating the counter of rule %d: %w", id, err)
		}
	}
	return nil
}

// pruneCounters deletes the counters of rules that are no longer in the policy.
func (e *Enforcer) pruneCounters(ids []uint32) error {
	keep := make(map[uint32]bool, len(ids))
	for _, id := range ids {
		keep[id] = true
	}
	var stale []uint32
	var id uint32
	var vals []policyCounter
	it := e.objs.RuleCounters.Iterate()
	for it.Next(&id, &vals) {
		if !keep[id] {
			stale = append(stale, id)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("listing rule counters: %w", err)
	}
	for _, id := range stale {
		if err := e.objs.RuleCounters.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("deleting the counter of removed rule %d: %w", id, err)
		}
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
	out := map[uint32]RuleCounter{}
	var id uint32
	var vals []policyCounter
	it := e.objs.RuleCounters.Iterate()
	for it.Next(&id, &vals) {
		out[id] = sum(vals)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("bpfpolicy: reading rule counters: %w", err)
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

// Close releases the Enforcer's file descriptors. The programs stay attached and
// keep enforcing the last policy through their pins, so a stopped agent still
// enforces; a later Open takes over. Close is idempotent.
func (e *Enforcer) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	e.closeHooks()
	if err := e.objs.Close(); err != nil {
		return fmt.Errorf("bpfpolicy: closing maps and programs: %w", err)
	}
	return nil
}

// Remove detaches the programs, unpins every map and link and deletes the pin
// directory: the interface is no longer filtered. It releases the Enforcer like
// Close. In clsact mode it deletes the filters through rtnetlink, so it must run in
// the network namespace of the interface, like Open.
func (e *Enforcer) Remove() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	e.closed = true
	var errs []error
	for i := range e.hooks {
		if err := e.hooks[i].remove(e.ifindex); err != nil {
			errs = append(errs, err)
		}
	}
	for _, m := range []*ebpf.Map{
		e.objs.PolicyState, e.objs.HostGens, e.objs.Id4Gens, e.objs.Id6Gens, e.objs.GroupGens, e.objs.RuleGens, e.objs.Conntrack,
		e.objs.Frags, e.objs.RuleCounters, e.objs.DropCounters, e.objs.PassCounters,
	} {
		if err := m.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpinning %s: %w", m, err))
		}
	}
	if err := e.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing maps and programs: %w", err))
	}
	if err := os.Remove(e.pinDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("removing %s: %w", e.pinDir, err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bpfpolicy: removing from %s: %w", e.iface, err)
	}
	e.log.Info("policy programs removed", "pin_dir", e.pinDir)
	return nil
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
