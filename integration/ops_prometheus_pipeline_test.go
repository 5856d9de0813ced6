package integration

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"

	"github.com/shoal-ci/shoal/internal/testtier"
)

// TestOpsPrometheusSeesBuildAndDeploy runs a real Prometheus against three real node processes that build an app
// from git and deploy it, and finds the build and deploy metrics through Prometheus's query API.
func TestOpsPrometheusSeesBuildAndDeploy(t *testing.T) {
	needProcesses(t)
	if _, err := exec.LookPath("prometheus"); err != nil {
		testtier.Skip(t, "the prometheus server is not installed (apt-get install prometheus; CI installs it through .ci/run)")
	}
	root := t.TempDir()
	repo := newTestRepo(t, root, "web.git")
	repo.commit("first", map[string]string{"shoal.yml": "build:\n  build: [test -s version.txt]\n" + deployManifest,
		"version.txt": "one\n", "gate.sh": gateScript})

	m := startPmesh(t, 3)
	cl := m.client(m.nodes[0])
	cl.RetryNoLeader = 30 * time.Second
	app := newDeployApp(t, cl, "web", "prod", names(m), names(m), raftfsm.Strategy{Kind: "all"}, true, repo.dir)
	stopAppsAtEnd(t, m, app)

	var b raftfsm.Build
	if _, err := cl.Post(context.Background(), "/v1/apps/web/builds", map[string]string{"ref": "main"}, &b); err != nil {
		t.Fatalf("build: %v", err)
	}
	done := waitBuildVia(t, cl, b.ID, "the build to end", 120*time.Second, func(b raftfsm.Build) bool { return b.Finished() })
	if done.State != raftfsm.BuildSucceeded {
		t.Fatalf("build %s %s: %s", b.ID, done.State, done.Error)
	}
	app.waitServing(120*time.Second, "one", names(m)...)

	var targets []string
	for _, n := range m.nodes {
		targets = append(targets, n.api())
	}
	p := startPrometheus(t, targets, m.admin)
	atLeast := func(v float64) func([]promSample) bool { return promOne(func(x float64) bool { return x >= v }) }
	p.waitAll(90*time.Second, []promExpect{
		{`sum(shoal_builds_total{job="shoal", app="web", result="succeeded"})`, atLeast(1), "a succeeded build"},
		{`sum(shoal_build_duration_seconds_count{job="shoal"})`, atLeast(1), "a build duration observed"},
		{`sum(shoal_deployments_total{job="shoal", app="web", env="prod", result="succeeded"})`, atLeast(1), "a succeeded deployment"},
		{`sum(shoal_nodes_on_release{job="shoal", app="web", env="prod", release="v1"})`, atLeast(3), "three servers on v1"},
		{`sum(shoal_release_installs_total{job="shoal", app="web", result="ok"})`, atLeast(3), "an install on every server"},
		{`sum(shoal_blob_sent_bytes_total{job="shoal"})`, atLeast(1), "release pieces sent between nodes"},
		{`max(shoal_state_deployments{job="shoal", app="web", env="prod", kind="deploy", state="succeeded"})`, atLeast(1), "the succeeded deployment in the state gauge"},
		{`max(shoal_state_servers{job="shoal", app="web", env="prod", health="healthy"})`, atLeast(3), "three servers reporting healthy"},
	})

	// The state gauges survive a change of leader, where the leader's counters start again from zero: after a
	// kill -9 of the leader every surviving node still exports the same figures.
	leader := m.waitLeader(m.nodes...)
	leader.proc.Kill()
	var rest []*pnode
	for _, n := range m.nodes {
		if n != leader {
			rest = append(rest, n)
		}
	}
	m.waitLeader(rest...)
	p.waitAll(90*time.Second, []promExpect{
		{`count(shoal_state_deployments{job="shoal", app="web", env="prod", kind="deploy", state="succeeded"} == 1)`, atLeast(2), "every surviving node exporting the one succeeded deployment"},
		{`min(shoal_state_servers{job="shoal", app="web", env="prod", health="healthy"})`, atLeast(3), "every surviving node counting three healthy servers"},
	})
}
