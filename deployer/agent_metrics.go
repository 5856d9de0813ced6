package deployer

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the deployer's collectors. The deployment counters and the release gauge are kept by the
// leader's orchestrator (sum them over nodes: a new leader starts from zero); exec restarts and installs
// are counted by each node for itself.
type metrics struct {
	deployments   *prometheus.CounterVec   // app, env, result
	duration      *prometheus.HistogramVec // app, env, kind
	nodesRelease  *prometheus.GaugeVec     // app, env, release
	rollbacks     *prometheus.CounterVec   // app, env
	execRestarts  *prometheus.CounterVec   // app, env
	installs      *prometheus.CounterVec   // app, env, result
	installTime   *prometheus.HistogramVec // app, env
	healthChecks  *prometheus.CounterVec   // app, env, result
	autoDeploys   *prometheus.CounterVec   // app, env, trigger
	installsReady prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		deployments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_deployments_total",
			Help: "Deployments that ended, by app, environment and result (succeeded, failed, rolled_back, cancelled); counted by the leader that ended them.",
		}, []string{"app", "env", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoal_deployment_duration_seconds",
			Help:    "Time from a deployment's creation to its end, by app, environment and kind.",
			Buckets: prometheus.ExponentialBuckets(0.25, 2, 14),
		}, []string{"app", "env", "kind"}),
		nodesRelease: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shoal_nodes_on_release",
			Help: "Servers that last reported healthy on each release, by app and environment (kept by the leader; 0 elsewhere).",
		}, []string{"app", "env", "release"}),
		rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_rollbacks_total",
			Help: "Rollbacks started, automatic (a failed deployment) or asked for, by app and environment.",
		}, []string{"app", "env"}),
		execRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_exec_restarts_total",
			Help: "Supervised Exec processes restarted on this node after they exited, by app and environment.",
		}, []string{"app", "env"}),
		installs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_release_installs_total",
			Help: "Release installs run by this node's deployer, by app, environment and result (ok, failed, interrupted: the state stopped asking for it).",
		}, []string{"app", "env", "result"}),
		installTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoal_release_install_seconds",
			Help:    "Time this node took from starting to fetch a release to reporting it healthy.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 16),
		}, []string{"app", "env"}),
		healthChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_health_checks_total",
			Help: "Health waits after a deploy or restart on this node, by app, environment and result (healthy, failed).",
		}, []string{"app", "env", "result"}),
		autoDeploys: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_auto_deployments_total",
			Help: "Deployments the leader created by itself, by app, environment and trigger (auto_deploy, promotion).",
		}, []string{"app", "env", "trigger"}),
		installsReady: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_deployer_environments",
			Help: "Environments this node's deployer serves.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.deployments, m.duration, m.nodesRelease, m.rollbacks, m.execRestarts,
		m.installs, m.installTime, m.healthChecks, m.autoDeploys, m.installsReady} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("deployer metrics: %w (is a deployer already attached to this node?)", err)
			}
			return nil, fmt.Errorf("deployer metrics: %w", err)
		}
	}
	return m, nil
}
