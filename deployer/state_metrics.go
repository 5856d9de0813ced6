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
	servers     *prometheus.Desc
	restarts    *prometheus.Desc
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
		servers: prometheus.NewDesc("shoal_state_servers",
			"Servers by what they report they run, per app and environment: health is healthy, starting, crash_loop, down, stopped, none or no_exec; the same on every node.",
			[]string{"app", "env", "health"}, nil),
		restarts: prometheus.NewDesc("shoal_state_exec_restarts",
			"Restarts of the running release's Exec processes that each server reported, per app, environment and server; the same on every node (reset by a new release).",
			[]string{"app", "env", "server"}, nil),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.deployments
	ch <- c.running
	ch <- c.servers
	ch <- c.restarts
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ app, env, kind, state string }
	type envKey struct{ app, env string }
	type healthKey struct{ app, env, health string }
	type restartKey struct{ app, env, server string }
	counts := map[key]int{}
	oldest := map[envKey]time.Time{}
	health := map[healthKey]int{}
	restarts := map[restartKey]uint64{}
	c.read(func(s *raftfsm.State) {
		for _, r := range s.Runtimes {
			health[healthKey{r.App, r.Env, r.Health}]++
			restarts[restartKey{r.App, r.Env, r.Node}] = r.Restarts
		}
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
	for k, n := range health {
		ch <- prometheus.MustNewConstMetric(c.servers, prometheus.GaugeValue, float64(n), k.app, k.env, k.health)
	}
	for k, n := range restarts {
		ch <- prometheus.MustNewConstMetric(c.restarts, prometheus.GaugeValue, float64(n), k.app, k.env, k.server)
	}
	now := c.now()
	for k, t := range oldest {
		ch <- prometheus.MustNewConstMetric(c.running, prometheus.GaugeValue, now.Sub(t).Seconds(), k.app, k.env)
	}
}
