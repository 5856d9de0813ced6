package integration

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/deployer"
	"github.com/shoal-ci/shoal/raftfsm"
)

// TestDeployAgentReadyTenEnvs measures agent start to ready (caught up with the leader, processes adopted) on a
// node running 10 environments, restarting its agent with kill -9 and SIGTERM in turn, and checks that no app
// restarts. It prints the figures; docs/benchmarks.md records them. SHOAL_BENCH_AGENT_RESTARTS sets the number of
// restarts (default 4).
func TestDeployAgentReadyTenEnvs(t *testing.T) {
	needProcesses(t)
	restarts := 4
	if v, err := strconv.Atoi(os.Getenv("SHOAL_BENCH_AGENT_RESTARTS")); err == nil && v > 0 {
		restarts = v
	}
	m := startPmesh(t, 1)
	n := m.nodes[0]
	cl := m.client(n)
	cl.RetryNoLeader = 30 * time.Second
	var apps []*deployApp
	for i := range 10 {
		app := newDeployApp(t, cl, fmt.Sprintf("app%d", i), fmt.Sprintf("env%d", i), names(m), names(m), raftfsm.Strategy{Kind: "all"}, false, "")
		stopAppsAtEnd(t, m, app)
		app.push(cl, "v1", false)
		d := app.deploy(cl, deployer.CreateRequest{Release: "v1"})
		waitDeployment(t, liveClients(m), d.ID, 90*time.Second, raftfsm.DeploySucceeded)
		app.waitServing(30*time.Second, "v1", n.name)
		apps = append(apps, app)
	}
	serving := func() []string {
		var out []string
		for _, a := range apps {
			out = append(out, a.serving(n.name))
		}
		return out
	}
	before := serving()
	var wall, agent []time.Duration
	appRestarts := 0
	for i := range restarts {
		if i%2 == 0 {
			n.proc.Kill()
		} else {
			n.proc.Stop()
		}
		start := time.Now()
		m.restart(n)
		waitAgentReady(t, n)
		wall = append(wall, time.Since(start))
		for _, line := range strings.Split(n.proc.Stderr(), "\n") {
			if strings.Contains(line, agentReadyLine) {
				if d, err := time.ParseDuration(field(line, "took")); err == nil {
					agent = append(agent, d)
				}
			}
		}
		now := serving()
		for j := range now {
			if now[j] != before[j] {
				appRestarts++
				t.Errorf("restart %d: %s serves %q, before %q", i+1, apps[j].name, now[j], before[j])
			}
		}
		before = now
	}
	if len(agent) != restarts {
		t.Fatalf("read %d ready times from the agents' logs, want %d", len(agent), restarts)
	}
	slices.Sort(wall)
	slices.Sort(agent)
	fmt.Printf("bench: agent start to ready, 10 environments, %d restarts (kill -9 and TERM): process start to ready median %s max %s (bound 5s); Attach to ready median %s; app restarts %d (goal 0)\n",
		restarts, wall[len(wall)/2].Round(time.Millisecond), wall[len(wall)-1].Round(time.Millisecond), agent[len(agent)/2].Round(time.Millisecond), appRestarts)
}
