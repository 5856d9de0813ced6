package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/deployer"
	"github.com/shoal-ci/shoal/raftfsm"
)

// TestBenchAgentRestartsKeepApps measures what issue 11 asks to record: app restarts over many agent restarts
// with an unchanged release (goal 0). A 3-process mesh deploys v1, v2 and v3 to an environment on every server
// (so the history holds releases a restart could replay), then restarts the agents one after the other, kill -9
// and SIGTERM alternating, each time waiting for a healthy mesh. An app restart is a process the supervisor
// started (a "starting exec copy" note in the environment's exec.log) or a pid the app answers with that
// changed. It prints the figure beside its goal and asserts nothing (TestDeployChaos fails on a restart):
//
//	go test -count=1 -run TestBenchAgentRestartsKeepApps -v ./integration                          # 6 restarts (CI)
//	SHOAL_DEPLOY_RESTARTS=100 go test -count=1 -run TestBenchAgentRestartsKeepApps -v -timeout 60m ./integration
func TestBenchAgentRestartsKeepApps(t *testing.T) {
	needProcesses(t)
	restarts := 6
	if v := os.Getenv("SHOAL_DEPLOY_RESTARTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SHOAL_DEPLOY_RESTARTS=%q: give a positive number of agent restarts", v)
		}
		restarts = n
	}
	m := startPmesh(t, 3)
	cl := m.client(m.nodes[0])
	cl.RetryNoLeader = 30 * time.Second
	app := newDeployApp(t, cl, "web", "prod", names(m), names(m), raftfsm.Strategy{Kind: "all"}, false, "")
	stopAppsAtEnd(t, m, app)
	for _, v := range []string{"v1", "v2", "v3"} {
		app.push(cl, v, false)
		d := app.deploy(cl, deployer.CreateRequest{Release: v})
		waitDeployment(t, liveClients(m), d.ID, 120*time.Second, raftfsm.DeploySucceeded)
	}
	app.waitServing(30*time.Second, "v3", names(m)...)

	starts := func() map[string]int {
		out := map[string]int{}
		for _, n := range m.nodes {
			out[n.name] = execStarts(app.envDir(n.dir))
		}
		return out
	}
	pids := func() map[string]string {
		out := map[string]string{}
		for _, n := range m.nodes {
			out[n.name] = app.serving(n.name)
		}
		return out
	}
	baseStarts, lastSeen := starts(), pids()
	pidChanges, noted := 0, false
	began := time.Now()
	for i := range restarts {
		n := m.nodes[i%len(m.nodes)]
		how := "kill -9"
		if i%2 == 0 {
			n.proc.Kill()
		} else {
			how = "SIGTERM"
			n.proc.Stop()
		}
		m.restart(n)
		m.waitHealthy(m.nodes...)
		// The agent acts once it has caught up ("agent ready" in its log, where the build has it): only then could
		// it replay history, so the next kill must not come before.
		if ok, _ := poll(30*time.Second, func() (bool, string) { return strings.Contains(n.proc.Stderr(), "agent ready"), "" }); !ok && !noted {
			noted = true
			t.Logf("NOTE: %s logged no \"agent ready\" within 30s (a build without the start gate): restarts follow a healthy mesh only", n.name)
		}
		app.waitServing(30*time.Second, "v3", names(m)...)
		now := pids()
		for name, s := range now {
			if s != lastSeen[name] {
				pidChanges++
				t.Logf("restart %d (%s %s): the app on %s changed from %q to %q", i+1, how, n.name, name, lastSeen[name], s)
			}
		}
		lastSeen = now
	}
	appStarts := 0
	for name, c := range starts() {
		appStarts += c - baseStarts[name]
	}
	t.Logf("\napp restarts over %d agent restarts (kill -9 and SIGTERM alternating, 3 nodes, release unchanged): %d process starts, %d pid changes seen (goal 0); %s, %s\nmachine: %s",
		restarts, appStarts, pidChanges, time.Since(began).Round(time.Second), "rerun: SHOAL_DEPLOY_RESTARTS=100 go test -count=1 -run TestBenchAgentRestartsKeepApps -v -timeout 60m ./integration", benchMachine())
}

// execStarts counts the processes the supervisor started in an environment: its "starting exec copy" notes in
// exec.log and the rotated logs beside it.
func execStarts(envDir string) int {
	files, _ := filepath.Glob(filepath.Join(envDir, "exec.log*"))
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		n += strings.Count(string(b), "--- shoal: starting exec copy")
	}
	return n
}
