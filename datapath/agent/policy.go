package agent

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cvlan/cvlan/controlplane/controlpb"
	"github.com/cvlan/cvlan/datapath/bpfpolicy"
	"github.com/cvlan/cvlan/policy"
)

// CountersEvery is how often the agent reports its policy counters.
const CountersEvery = 10 * time.Second

// setPolicy loads the node's compiled policy into the eBPF maps; the caller holds
// a.mu. A map without a policy (a controller from before policy) changes nothing.
func (a *Agent) setPolicyLocked(np *policy.NodePolicy) error {
	if np == nil || a.enforcer == nil {
		return nil
	}
	if err := a.enforcer.Set(np); err != nil && !errors.Is(err, bpfpolicy.ErrNoChanges) {
		return err
	}
	return nil
}

// reportCounters sends the policy counters to the controller now and then.
func (a *Agent) reportCounters(ctx context.Context) {
	if a.enforcer == nil {
		return
	}
	t := time.NewTicker(CountersEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c, err := a.enforcer.Counters()
		if err != nil {
			a.log.Warn("reading policy counters", "err", err)
			continue
		}
		drops, err := a.enforcer.Drops()
		if err != nil {
			a.log.Warn("reading policy drop counters", "err", err)
			continue
		}
		msg := &controlpb.Counters{Drops: drops}
		for id, rc := range c {
			msg.Rules = append(msg.Rules, &controlpb.RuleCounter{RuleId: id, Packets: rc.Packets, Bytes: rc.Bytes})
		}
		a.client.Send(&controlpb.ClientMessage{Msg: &controlpb.ClientMessage_Counters{Counters: msg}})
	}
}

var (
	rulePacketsDesc = prometheus.NewDesc("cvlan_agent_policy_rule_packets_total",
		"Packets accepted by each policy rule on this node.", []string{"rule_id", "rule"}, nil)
	ruleBytesDesc = prometheus.NewDesc("cvlan_agent_policy_rule_bytes_total",
		"Bytes accepted by each policy rule on this node.", []string{"rule_id", "rule"}, nil)
	dropsDesc = prometheus.NewDesc("cvlan_agent_policy_drops_total",
		"Packets the policy dropped on this node, by reason.", []string{"reason"}, nil)
)

// policyCollector reads the eBPF counters at scrape time.
type policyCollector Agent

func (c *policyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- rulePacketsDesc
	ch <- ruleBytesDesc
	ch <- dropsDesc
}

func (c *policyCollector) Collect(ch chan<- prometheus.Metric) {
	a := (*Agent)(c)
	if a.enforcer == nil {
		return
	}
	names := map[uint32]string{}
	a.mu.Lock()
	if a.applied != nil && a.applied.Policy != nil {
		names = a.applied.Policy.RuleNames
	}
	a.mu.Unlock()
	if counters, err := a.enforcer.Counters(); err == nil {
		for id, rc := range counters {
			sid := strconv.FormatUint(uint64(id), 10)
			ch <- prometheus.MustNewConstMetric(rulePacketsDesc, prometheus.CounterValue, float64(rc.Packets), sid, names[id])
			ch <- prometheus.MustNewConstMetric(ruleBytesDesc, prometheus.CounterValue, float64(rc.Bytes), sid, names[id])
		}
	}
	if drops, err := a.enforcer.Drops(); err == nil {
		for reason, n := range drops {
			ch <- prometheus.MustNewConstMetric(dropsDesc, prometheus.CounterValue, float64(n), reason)
		}
	}
}
