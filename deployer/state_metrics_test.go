package deployer

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-ci/shoal/raftfsm"
)

// The state gauges count every deployment of the replicated state by state, cancelled ones included, and give
// the age of each environment's oldest running deployment: the same figures whichever node is scraped.
func TestStateCollector(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	st := &raftfsm.State{Deploys: map[string]*raftfsm.Deployment{}}
	add := func(id, env, kind, state string, age time.Duration) {
		st.Deploys[id] = &raftfsm.Deployment{ID: id, App: "web", Env: env, Kind: kind, State: state, CreatedAt: now.Add(-age)}
	}
	add("a", "prod", "deploy", raftfsm.DeploySucceeded, time.Hour)
	add("b", "prod", "deploy", raftfsm.DeploySucceeded, 50*time.Minute)
	add("c", "prod", "deploy", raftfsm.DeployCancelled, 40*time.Minute)
	add("d", "prod", "deploy", raftfsm.DeployRunning, 35*time.Minute)
	add("e", "prod", "restart", raftfsm.DeployRunning, 5*time.Minute)
	add("f", "staging", "deploy", raftfsm.DeployWaiting, time.Minute)
	st.Runtimes = map[string]*raftfsm.Runtime{
		"prod/n1": {App: "web", Env: "prod", Node: "n1", Health: raftfsm.RuntimeHealthy},
		"prod/n2": {App: "web", Env: "prod", Node: "n2", Health: raftfsm.RuntimeCrashLoop, Restarts: 5},
		"prod/n3": {App: "web", Env: "prod", Node: "n3", Health: raftfsm.RuntimeHealthy, Restarts: 1},
	}
	c := newStateCollector(func(fn func(*raftfsm.State)) { fn(st) })
	c.now = func() time.Time { return now }
	want := `
# HELP shoal_state_deployment_running_seconds Age of the oldest running deployment of each environment (absent when none runs); the same on every node.
# TYPE shoal_state_deployment_running_seconds gauge
shoal_state_deployment_running_seconds{app="web",env="prod"} 2100
# HELP shoal_state_deployments Deployments in the replicated state, by app, environment, kind and state (pending, waiting_approval, running, succeeded, failed, rolled_back, cancelled); the same on every node.
# TYPE shoal_state_deployments gauge
shoal_state_deployments{app="web",env="prod",kind="deploy",state="cancelled"} 1
shoal_state_deployments{app="web",env="prod",kind="deploy",state="running"} 1
shoal_state_deployments{app="web",env="prod",kind="deploy",state="succeeded"} 2
shoal_state_deployments{app="web",env="prod",kind="restart",state="running"} 1
shoal_state_deployments{app="web",env="staging",kind="deploy",state="waiting_approval"} 1
# HELP shoal_state_exec_restarts Restarts of the running release's Exec processes that each server reported, per app, environment and server; the same on every node (reset by a new release).
# TYPE shoal_state_exec_restarts gauge
shoal_state_exec_restarts{app="web",env="prod",server="n1"} 0
shoal_state_exec_restarts{app="web",env="prod",server="n2"} 5
shoal_state_exec_restarts{app="web",env="prod",server="n3"} 1
# HELP shoal_state_servers Servers by what they report they run, per app and environment: health is healthy, starting, crash_loop, down, stopped, none or no_exec; the same on every node.
# TYPE shoal_state_servers gauge
shoal_state_servers{app="web",env="prod",health="crash_loop"} 1
shoal_state_servers{app="web",env="prod",health="healthy"} 2
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}
