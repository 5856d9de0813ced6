package deployer

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-ci/shoal/raftfsm"
)

// stateCollector exports figures read from the replicated state at scrape time. Every node holds the same state,
// so every node exports the same values: one node's scrape is exact, and so is a max over nodes, across any
// change of leader (counters kept by the leader start again from zero on a new one, so their sum over nodes
// falls when the leadership moves).
type stateCollector struct {
	read func(func(*raftfsm.State))
	now  func() time.Time

	deployments *prometheus.Desc
	running     *prometheus.Desc
}

func newStateCollector(read func(func(*raftfsm.State))) *stateCollector {
	return &stateCollector{
		read: read,
		now:  time.Now,
		deployments: prometheus.NewDesc("shoal_state_deployments",
			"Deployments in the replicated state, by app, environment, kind and state (pending, waiting_approval, running, succeeded, failed, rolled_back, cancelled); the same on every node.",
			[]string{"app", "env", "kind", "state"}, nil),
		running: prometheus.NewDesc("shoal_state_deployment_running_seconds",
			"Age of the oldest running deployment of each environment (absent when none runs); the same on every node.",
			[]string{"app", "env"}, nil),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.deployments
	ch <- c.running
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ app, env, kind, state string }
	type envKey struct{ app, env string }
	counts := map[key]int{}
	oldest := map[envKey]time.Time{}
	c.read(func(s *raftfsm.State) {
		for _, d := range s.Deploys {
			counts[key{d.App, d.Env, d.Kind, d.State}]++
			if d.State == raftfsm.DeployRunning {
				k := envKey{d.App, d.Env}
				if t, ok := oldest[k]; !ok || d.CreatedAt.Before(t) {
					oldest[k] = d.CreatedAt
				}
			}
		}
	})
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.deployments, prometheus.GaugeValue, float64(n), k.app, k.env, k.kind, k.state)
	}
	now := c.now()
	for k, t := range oldest {
		ch <- prometheus.MustNewConstMetric(c.running, prometheus.GaugeValue, now.Sub(t).Seconds(), k.app, k.env)
	}
}
