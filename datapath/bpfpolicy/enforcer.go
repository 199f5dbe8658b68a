package bpfpolicy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

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
	ncpu    int

	// The counter slots in use (rule_slots): by rule id, and which are taken.
	slotOf map[uint32]uint16
	taken  []bool
	// rule_counters, mapped: CPU c's counter of slot s at (c*maxRuleIDs+s)*16.
	counters *ebpf.Memory
	// What each generation's half of the tables holds, as far as this Enforcer
	// wrote it; nil: unknown (maps reused from pins), so the next write clears all.
	halves [2]*written
}

// written is what install wrote into one half of the tables: what the next write
// of that half must clear.
type written struct {
	pfx4, pfx6     []uint32 // buckets
	idents, ranges int      // elements from the start
	tries          [3]bool  // the trie of the slot has entries (id4, id6, rule)
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
	spec, err := loadSpec(opts.L2)
	if err != nil {
		return nil, fmt.Errorf("bpfpolicy: %w", err)
	}
	e, err := load(spec, pinDir, log)
	if err != nil {
		return nil, fmt.Errorf("bpfpolicy: %w", err)
	}
	e.iface, e.ifindex = opts.Interface, ifc.Index
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
	if err := deriveConstants(spec); err != nil {
		return nil, err
	}
	e := &Enforcer{pinDir: pinDir, log: log, spec: spec, halves: [2]*written{{}, {}}}
	if pinDir != "" {
		if _, err := os.Stat(filepath.Join(pinDir, policyMapPolicyState)); err == nil {
			// The tables were written by an earlier Enforcer: what they hold is
			// unknown, so the first write of each half clears it all.
			e.reused, e.halves = true, [2]*written{}
		}
	}
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
	if err := e.loadSlots(); err != nil {
		e.objs.Close()
		return nil, err
	}
	return e, nil
}

// loadSlots reads which rule each counter slot counts, as an earlier Enforcer on the
// same pins left it.
func (e *Enforcer) loadSlots() error {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("counting CPUs: %w", err)
	}
	e.ncpu, e.slotOf, e.taken = ncpu, map[uint32]uint16{}, make([]bool, maxRuleIDs)
	if int(e.objs.RuleCounters.MaxEntries()) != ncpu*maxRuleIDs {
		return fmt.Errorf("%s has %d counters, want %d for %d CPUs", policyMapRuleCounters, e.objs.RuleCounters.MaxEntries(), ncpu*maxRuleIDs, ncpu)
	}
	if e.counters, err = e.objs.RuleCounters.Memory(); err != nil {
		return fmt.Errorf("mapping the rule counters: %w", err)
	}
	keys := make([]uint32, maxRuleIDs)
	vals := make([]policyRuleSlot, maxRuleIDs)
	var cursor ebpf.MapBatchCursor
	n, err := e.objs.RuleSlots.BatchLookup(&cursor, keys, vals, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("reading the counter slots: %w", err)
	}
	for i := range n {
		if vals[i].Used != 0 && keys[i] < uint32(maxRuleIDs) {
			e.slotOf[vals[i].RuleId] = uint16(keys[i])
			e.taken[keys[i]] = true
		}
	}
	return nil
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
	// The flow cache has a region of FLOW_SLOTS slots per CPU.
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("counting CPUs: %w", err)
	}
	fc, ok := spec.Maps[policyMapFlowCache]
	if !ok {
		return nil, fmt.Errorf("collection has no map %s", policyMapFlowCache)
	}
	fc.MaxEntries = uint32(ncpu) * uint32(policySizesFLOW_SLOTS)
	// So do the rule counters, MAX_RULES slots per CPU.
	rc, ok := spec.Maps[policyMapRuleCounters]
	if !ok {
		return nil, fmt.Errorf("collection has no map %s", policyMapRuleCounters)
	}
	rc.MaxEntries = uint32(ncpu) * uint32(maxRuleIDs)
	return spec, nil
}

// flowCacheMinTimeout is the shortest conntrack timeout with which the programs use
// their flow cache: an entry it vouches for was refreshed at most 2.5 s (250
// jiffies at HZ=100) and a second ago.
const flowCacheMinTimeout = 5 * time.Second

// deriveConstants sets the load-time constants that follow from the conntrack
// timeouts (policy.c explains them).
func deriveConstants(spec *ebpf.CollectionSpec) error {
	var tcp, other uint64
	for name, v := range map[string]*uint64{policyVarCtTimeoutTcpNs: &tcp, policyVarCtTimeoutOtherNs: &other} {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("collection has no variable %s", name)
		}
		if err := vs.Get(v); err != nil {
			return fmt.Errorf("reading %s: %w", name, err)
		}
	}
	window := min(max(tcp, other)>>19+1000, 0x7fffffff)
	on := uint32(0)
	if min(tcp, other) >= uint64(flowCacheMinTimeout) {
		on = 1
	}
	for name, v := range map[string]uint32{policyVarHintWindowJ: uint32(window), policyVarFlowCacheOn: on} {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("collection has no variable %s", name)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("setting %s: %w", name, err)
		}
	}
	return nil
}

// genMap is one trie of a generation: its outer map (two slots) and, for install,
// how many entries its inner map gets and how they are written.
type genMap struct {
	outer *ebpf.Map
	name  string
	n     int
	fill  func(*ebpf.Map) error
}

// genMaps returns the tries of a generation, filled from g if it is not nil.
func (e *Enforcer) genMaps(g *generation) []genMap {
	ms := []genMap{
		{outer: e.objs.Id4Gens, name: policyMapId4Gens},
		{outer: e.objs.Id6Gens, name: policyMapId6Gens},
		{outer: e.objs.RuleGens, name: policyMapRuleGens},
	}
	if g == nil {
		return ms
	}
	ms[0].n, ms[0].fill = len(g.V4), func(m *ebpf.Map) error {
		for _, en := range g.V4 {
			if err := m.Put(&en.Key, en.Index); err != nil {
				return fmt.Errorf("writing identity of %v/%d: %w", en.Key.Addr, en.Key.Prefixlen, err)
			}
		}
		return nil
	}
	ms[1].n, ms[1].fill = len(g.V6), func(m *ebpf.Map) error {
		for _, en := range g.V6 {
			if err := m.Put(&en.Key, en.Index); err != nil {
				return fmt.Errorf("writing identity of %x/%d: %w", en.Key.Addr, en.Key.Prefixlen, err)
			}
		}
		return nil
	}
	ms[2].n, ms[2].fill = len(g.Rules), func(m *ebpf.Map) error {
		for _, en := range g.Rules {
			if err := m.Put(&en.Key, &en.Val); err != nil {
				return fmt.Errorf("writing rule %d: %w", en.Val.RuleId, err)
			}
		}
		return nil
	}
	return ms
}

// writeHalf writes g's tables into generation gen's half of the arrays, clearing
// what old says the half held before (everything if old is nil), and returns what
// it wrote.
func (e *Enforcer) writeHalf(gen uint32, g *generation, old *written) (*written, error) {
	w := &written{idents: len(g.Idents), ranges: len(g.Ranges)}
	if err := e.objs.Meta.Put(gen, &g.Meta); err != nil {
		return nil, fmt.Errorf("writing the generation's parameters: %w", err)
	}

	// Buckets: the new ones, and zeros where the old ones were (all, if unknown).
	buckets4 := map[uint32]policyPfx4Bucket{}
	for _, en := range g.Pfx4 {
		buckets4[en.Bucket] = en.Val
		w.pfx4 = append(w.pfx4, en.Bucket)
	}
	keys4, vals4 := clearing(gen, pfx4Buckets, buckets4, old, func(o *written) []uint32 { return o.pfx4 })
	if err := batchPut(e.objs.Pfx4, keys4, vals4, "IPv4 prefix buckets"); err != nil {
		return nil, err
	}
	buckets6 := map[uint32]policyPfx6Bucket{}
	for _, en := range g.Pfx6 {
		buckets6[en.Bucket] = en.Val
		w.pfx6 = append(w.pfx6, en.Bucket)
	}
	keys6, vals6 := clearing(gen, pfx6Buckets, buckets6, old, func(o *written) []uint32 { return o.pfx6 })
	if err := batchPut(e.objs.Pfx6, keys6, vals6, "IPv6 prefix buckets"); err != nil {
		return nil, err
	}

	// Identities and ranges: from the start, as far as the new or the old reach.
	n := maxIdents
	if old != nil {
		n = max(len(g.Idents), old.idents)
	}
	idents := make([]policyIdentVal, n)
	copy(idents, g.Idents)
	if err := batchPut(e.objs.Idents, span(gen*uint32(maxIdents), n), idents, "identities"); err != nil {
		return nil, err
	}
	n = maxRanges
	if old != nil {
		n = max(len(g.Ranges), old.ranges)
	}
	ranges := make([]policyPortRange, n)
	copy(ranges, g.Ranges)
	if err := batchPut(e.objs.Ranges, span(gen*uint32(maxRanges), n), ranges, "port ranges"); err != nil {
		return nil, err
	}
	return w, nil
}

// clearing returns the keys and values that write buckets into generation gen's
// half of a table of per buckets, and zero the buckets the half held before that
// buckets does not have (all of them if what it held is unknown).
func clearing[V any](gen uint32, per int, buckets map[uint32]V, old *written, of func(*written) []uint32) ([]uint32, []V) {
	var keys []uint32
	var vals []V
	var zero V
	if old == nil {
		for b := range uint32(per) {
			keys = append(keys, gen*uint32(per)+b)
			vals = append(vals, buckets[b])
		}
		return keys, vals
	}
	for b, v := range buckets {
		keys = append(keys, gen*uint32(per)+b)
		vals = append(vals, v)
	}
	for _, b := range of(old) {
		if _, ok := buckets[b]; !ok {
			keys = append(keys, gen*uint32(per)+b)
			vals = append(vals, zero)
		}
	}
	return keys, vals
}

// span returns the n keys from first.
func span(first uint32, n int) []uint32 {
	keys := make([]uint32, n)
	for i := range keys {
		keys[i] = first + uint32(i)
	}
	return keys
}

// indexes returns 0..n-1, the keys of an array's first n elements.
func indexes(n int) []uint32 {
	keys := make([]uint32, n)
	for i := range keys {
		keys[i] = uint32(i)
	}
	return keys
}

// batchPut writes vals at keys in one batch update (nothing if there are none).
func batchPut[V any](m *ebpf.Map, keys []uint32, vals []V, what string) error {
	if len(keys) == 0 {
		return nil
	}
	if _, err := m.BatchUpdate(keys, vals, nil); err != nil {
		return fmt.Errorf("writing %d %s: %w", len(keys), what, err)
	}
	return nil
}

// newInner creates an empty trie for the generation slots of outer map name, sized
// for n entries.
func (e *Enforcer) newInner(name string, n int) (*ebpf.Map, error) {
	outer, ok := e.spec.Maps[name]
	if !ok || outer.InnerMap == nil {
		return nil, fmt.Errorf("collection has no map-in-map %s", name)
	}
	s := outer.InnerMap.Copy()
	s.Name = name[:4] // id4_, id6_, rule: the kernel's name for the inner maps
	s.MaxEntries = uint32(max(n, 1))
	s.Pinning = ebpf.PinNone
	m, err := ebpf.NewMap(s)
	if err != nil {
		return nil, fmt.Errorf("creating an inner map of %s for %d entries: %w", name, n, err)
	}
	return m, nil
}

// fillGenerations gives every empty generation slot empty maps, so that a fresh
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
		"prefixes", len(g.Pfx4)+len(g.Pfx6)+len(g.V4)+len(g.V6), "trie_prefixes", len(g.V4)+len(g.V6),
		"identities", len(g.Idents)-1, "ranges", len(g.Ranges), "trie_entries", len(g.Rules), "rules", len(g.RuleIDs))
	return nil
}

// install writes g into the inactive generation and switches to it; st is the
// current state and becomes the new one.
func (e *Enforcer) install(g *generation, st *policyPolicyState) (err error) {
	next := st.Active&1 ^ 1
	fresh, err := e.ensureCounters(g.RuleIDs)
	if err != nil {
		return err
	}
	switched := false
	defer func() {
		if err != nil && !switched {
			e.releaseSlots(fresh) // the old generation never counts on them
		}
	}()
	for i := range g.Ranges {
		g.Ranges[i].Slot = e.slotOf[g.Ranges[i].RuleId]
	}
	for i := range g.Rules {
		g.Rules[i].Val.Slot = e.slotOf[g.Rules[i].Val.RuleId]
	}
	// A half written in part holds an unknown mixture until written again.
	old := e.halves[next]
	e.halves[next] = nil
	w, err := e.writeHalf(next, g, old)
	if err != nil {
		return err
	}

	// The tries: a fresh inner map for each the new generation fills or the slot's
	// old one did (an empty trie stays in place).
	for i, gm := range e.genMaps(g) {
		w.tries[i] = gm.n > 0
		if gm.n == 0 && old != nil && !old.tries[i] {
			continue
		}
		m, err := e.newInner(gm.name, gm.n)
		if err != nil {
			return err
		}
		err = gm.fill(m)
		if err == nil {
			err = gm.outer.Put(next, m)
		}
		m.Close()
		if err != nil {
			return fmt.Errorf("installing %s[%d]: %w", gm.name, next, err)
		}
	}
	// Every update of a map-in-map returns only after an RCU grace period, which
	// also orders the writes above before the switch on every CPU.
	if err := e.fence(next); err != nil {
		return fmt.Errorf("waiting before the switch: %w", err)
	}
	nst := policyPolicyState{Active: next, Version: g.Version, Digest: g.Digest}
	if err := e.objs.PolicyState.Put(uint32(0), &nst); err != nil {
		return fmt.Errorf("switching to generation %d: %w", next, err)
	}
	*st, switched = nst, true
	e.halves[next] = w
	// After another grace period no packet that read the old selector is still
	// running: the next Set may rewrite the old generation, and the counter slots
	// only the old generation used may be reused.
	if err := e.fence(next); err != nil {
		return fmt.Errorf("waiting for packets of the old generation: %w", err)
	}
	return e.pruneCounters(g.RuleIDs)
}

// fence waits for an RCU grace period, by rewriting slot gen of a map-in-map with
// the map it holds.
func (e *Enforcer) fence(gen uint32) error {
	var id uint32
	if err := e.objs.RuleGens.Lookup(gen, &id); err != nil {
		return fmt.Errorf("reading %s[%d]: %w", policyMapRuleGens, gen, err)
	}
	m, err := ebpf.NewMapFromID(ebpf.MapID(id))
	if err != nil {
		return fmt.Errorf("opening %s[%d]: %w", policyMapRuleGens, gen, err)
	}
	defer m.Close()
	if err := e.objs.RuleGens.Put(gen, m); err != nil {
		return fmt.Errorf("rewriting %s[%d]: %w", policyMapRuleGens, gen, err)
	}
	return nil
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
		e.objs.PolicyState, e.objs.Meta, e.objs.Pfx4, e.objs.Pfx6, e.objs.Idents, e.objs.Ranges, e.objs.Id4Gens,
		e.objs.Id6Gens, e.objs.RuleGens, e.objs.Conntrack, e.objs.CtHint, e.objs.Frags,
		e.objs.RuleCounters, e.objs.RuleSlots, e.objs.DropCounters, e.objs.PassCounters,
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
