package node

import (
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/shoal-ci/shoal/raftfsm"
)

// metrics are the node's own Prometheus collectors, registered on the registry the caller passed in (the
// catalog is docs/metrics.md).
type metrics struct {
	writes            *prometheus.HistogramVec
	commit            prometheus.Histogram
	fsmApply          prometheus.Histogram
	membershipChanges *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, n *Node) *metrics {
	m := &metrics{
		writes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoal_write_duration_seconds",
			Help:    "Time for a write to be committed and applied, as the node that took it saw it (forwarding included).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"result"}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_raft_commit_duration_seconds",
			Help:    "Time on the leader from handing a command to Raft until it is committed and applied.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		fsmApply: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_fsm_apply_duration_seconds",
			Help:    "Time to apply one committed command to the state machine.",
			Buckets: prometheus.ExponentialBuckets(0.000005, 2, 16),
		}),
		membershipChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_raft_membership_changes_total",
			Help: "Raft configuration changes made by this node as leader, by kind.",
		}, []string{"change"}),
	}
	reg.MustRegister(m.writes, m.commit, m.fsmApply, m.membershipChanges,
		&nodeCollector{n: n},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_quic_handshakes_refused_total",
		Help: "QUIC handshakes refused because their source address exceeded its rate."}, func() float64 {
		if n.ep == nil {
			return 0
		}
		return float64(n.ep.RefusedHandshakes())
	}))
	return m
}

func (m *metrics) observeApply(_ raftfsm.CommandType, err error, d time.Duration) {
	result := "ok"
	if err != nil {
		result = "error"
		if k := raftfsm.KindOf(err); k != "" {
			result = "rejected"
		}
	}
	m.writes.WithLabelValues(result).Observe(d.Seconds())
}

var (
	descState       = prometheus.NewDesc("shoal_raft_state", "1 for this node's current Raft state.", []string{"state"}, nil)
	descLeader      = prometheus.NewDesc("shoal_raft_leader", "1 if this node is the Raft leader.", nil, nil)
	descTerm        = prometheus.NewDesc("shoal_raft_term", "Current Raft term.", nil, nil)
	descApplied     = prometheus.NewDesc("shoal_raft_applied_index", "Last Raft index applied to the state machine.", nil, nil)
	descCommit      = prometheus.NewDesc("shoal_raft_commit_index", "Last Raft index known committed.", nil, nil)
	descLastContact = prometheus.NewDesc("shoal_raft_last_contact_seconds", "Seconds since this follower last heard from the leader (0 on the leader).", nil, nil)
	descServers     = prometheus.NewDesc("shoal_raft_servers", "Raft servers in the configuration, by suffrage.", []string{"suffrage"}, nil)
	descMembers     = prometheus.NewDesc("shoal_members", "Mesh members this node knows, by gossip status.", []string{"status"}, nil)
	descSpared      = prometheus.NewDesc("shoal_raft_heartbeats_spared_total", "Raft heartbeats not sent because the peer had just answered an AppendEntries.", nil, nil)
)

// nodeCollector reads Raft and gossip state at scrape time, so the figures are never stale.
type nodeCollector struct{ n *Node }

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descState, descLeader, descTerm, descApplied, descCommit, descLastContact, descServers, descMembers, descSpared} {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	if n.raft == nil {
		return
	}
	st := n.raft.State()
	for _, s := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
		v := 0.0
		if s == st {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, stateName(s))
	}
	leader := 0.0
	contact := time.Since(n.raft.LastContact()).Seconds()
	if st == raft.Leader {
		leader, contact = 1, 0
	} else if n.raft.LastContact().IsZero() {
		contact = 0
	}
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, leader)
	ch <- prometheus.MustNewConstMetric(descTerm, prometheus.GaugeValue, float64(n.raft.CurrentTerm()))
	ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(n.raft.AppliedIndex()))
	ch <- prometheus.MustNewConstMetric(descCommit, prometheus.GaugeValue, float64(n.raft.CommitIndex()))
	ch <- prometheus.MustNewConstMetric(descLastContact, prometheus.GaugeValue, contact)
	ch <- prometheus.MustNewConstMetric(descSpared, prometheus.CounterValue, float64(n.heartbeats.spared.Load()))
	voters, nonvoters := 0, 0
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				voters++
			} else {
				nonvoters++
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(descServers, prometheus.GaugeValue, float64(voters), "voter")
	ch <- prometheus.MustNewConstMetric(descServers, prometheus.GaugeValue, float64(nonvoters), "nonvoter")
	counts := map[string]int{StatusAlive: 0, StatusSuspect: 0, StatusDead: 0, StatusLeft: 0}
	if n.gossip != nil {
		for _, m := range n.Members() {
			counts[m.Status]++
		}
	}
	for status, k := range counts {
		ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(k), status)
	}
}

func stateName(s raft.RaftState) string {
	switch s {
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	case raft.Leader:
		return "leader"
	}
	return "shutdown"
}
