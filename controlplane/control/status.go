package control

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/controlpb"
)

// maxCounters bounds one report; a node's compiled policy has far fewer rules.
const maxCounters = 1 << 16

// report is a node's last counters report, kept in memory only: counters are
// telemetry, not state, and an agent sends fresh ones after every reconnect.
type report struct {
	at    time.Time
	rules []*controlpb.RuleCounter
	drops map[string]uint64
}

// reports holds the last report of each node.
type reports struct {
	mu sync.Mutex
	m  map[string]report
}

func (r *reports) put(nodeID string, at time.Time, c *controlpb.Counters) error {
	if len(c.GetRules()) > maxCounters || len(c.GetDrops()) > 64 {
		return fmt.Errorf("counters: %d rules and %d drop reasons is more than allowed", len(c.GetRules()), len(c.GetDrops()))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]report{}
	}
	r.m[nodeID] = report{at: at, rules: c.GetRules(), drops: c.GetDrops()}
	return nil
}

func (r *reports) forget(nodeID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, nodeID)
}

// NodeStatus is what the controller knows of a node right now: whether its agent
// is connected, and its last counters, with rule names from the node's compiled
// policy.
func (s *Server) NodeStatus(tenantID, nodeID string) apiv1.NodeStatus {
	st := apiv1.NodeStatus{NodeID: nodeID, Rules: []apiv1.RuleCounter{}, Drops: map[string]uint64{}}
	s.hub.mu.Lock()
	_, st.Connected = s.hub.byNode[nodeID]
	names := map[uint32]string{}
	if tp := s.hub.pol[tenantID]; tp != nil {
		if np := tp.compiled.Node(nodeID); np != nil {
			names = np.RuleNames
		}
	}
	s.hub.mu.Unlock()
	s.reports.mu.Lock()
	rep, ok := s.reports.m[nodeID]
	s.reports.mu.Unlock()
	if !ok {
		return st
	}
	st.ReportedAt = rep.at
	for _, c := range rep.rules {
		st.Rules = append(st.Rules, apiv1.RuleCounter{ID: c.GetRuleId(), Name: names[c.GetRuleId()], Packets: c.GetPackets(), Bytes: c.GetBytes()})
	}
	sort.Slice(st.Rules, func(i, j int) bool { return st.Rules[i].ID < st.Rules[j].ID })
	for k, v := range rep.drops {
		st.Drops[k] = v
	}
	return st
}
