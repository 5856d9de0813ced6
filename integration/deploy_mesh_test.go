package integration

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/deployer"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/raftfsm"
)

// liveClients returns a client for every node of m whose process runs.
func liveClients(m *pmesh) func() []*client.Client {
	return func() []*client.Client {
		var out []*client.Client
		for _, n := range m.live() {
			out = append(out, m.client(n))
		}
		return out
	}
}

// stopAppsAtEnd stops, when the test ends, the node processes and then the app processes they started (which
// outlive their agents by design).
func stopAppsAtEnd(t testing.TB, m *pmesh, app *deployApp) {
	t.Cleanup(func() {
		for _, n := range m.nodes {
			if n.proc != nil {
				n.proc.Kill()
			}
		}
		app.stopApps(dataDirs(m)...)
	})
}

func dataDirs(m *pmesh) []string {
	var out []string
	for _, n := range m.nodes {
		out = append(out, n.dir)
	}
	return out
}

func names(m *pmesh) []string {
	var out []string
	for _, n := range m.nodes {
		out = append(out, n.name)
	}
	return out
}

// checkRollingOrder fails if a deployment shows a server reporting before its batch started, or a batch
// started before every server of the ones before was healthy.
func checkRollingOrder(t testing.TB, d raftfsm.Deployment) {
	t.Helper()
	for name := range d.Nodes {
		started := false
		for i := 0; i <= d.Batch && i < len(d.Batches); i++ {
			for _, n := range d.Batches[i] {
				started = started || n == name
			}
		}
		if !started {
			t.Fatalf("%s reports before its batch started: %s", name, describeDeployment(d))
		}
	}
	for i := 0; i < d.Batch; i++ {
		for _, name := range d.Batches[i] {
			if st := d.Nodes[name]; st == nil || st.State != raftfsm.NodeHealthy {
				t.Fatalf("batch %d started while %s of batch %d is not healthy: %s", d.Batch+1, name, i+1, describeDeployment(d))
			}
		}
	}
}

// TestDeployBuiltFromGitRolling: a 3-process mesh builds a small HTTP service from a git repository and deploys
// it by itself (auto deploy), then a second commit rolls out one server at a time, and every server serves the
// new version. A release whose health check fails then stops after the first batch and rolls back: every server
// serves the old version again, and the environment is pinned.
func TestDeployBuiltFromGitRolling(t *testing.T) {
	needProcesses(t)
	root := t.TempDir()
	repo := newTestRepo(t, root, "web.git")
	manifest := "build:\n  build: [test -s version.txt]\n" + deployManifest
	repo.commit("first", map[string]string{"shoal.yml": manifest, "version.txt": "one\n", "gate.sh": gateScript})

	m := startPmesh(t, 3)
	cl := m.client(m.nodes[1])
	cl.RetryNoLeader = 30 * time.Second
	app := newDeployApp(t, cl, "web", "prod", names(m), names(m),
		raftfsm.Strategy{Kind: "rolling", BatchSize: 1, AutoRollback: true}, true, repo.dir)
	stopAppsAtEnd(t, m, app)
	ctx := context.Background()

	build := func() string {
		var b raftfsm.Build
		if _, err := cl.Post(ctx, "/v1/apps/web/builds", map[string]string{"ref": "main"}, &b); err != nil {
			t.Fatalf("build: %v", err)
		}
		done := waitBuildVia(t, cl, b.ID, "the build to end", 120*time.Second, func(b raftfsm.Build) bool { return b.Finished() })
		if done.State != raftfsm.BuildSucceeded {
			t.Fatalf("build %s %s: %s", b.ID, done.State, done.Error)
		}
		return done.Release
	}
	if rel := build(); rel != "v1" {
		t.Fatalf("first build released %q", rel)
	}
	app.waitServing(120*time.Second, "one", names(m)...)

	repo.commit("second", map[string]string{"version.txt": "two\n"})
	if rel := build(); rel != "v2" {
		t.Fatalf("second build released %q", rel)
	}
	// Follow the auto deployment of v2, checking the order as it goes.
	var d raftfsm.Deployment
	testutil.Eventually(t, 120*time.Second, "the rolling deployment of v2 to succeed", func() (bool, string) {
		var ds []raftfsm.Deployment
		if _, err := cl.Get(ctx, "/v1/envs/prod/deployments", &ds); err != nil || len(ds) == 0 || ds[0].Release != "v2" {
			return false, fmt.Sprintf("%v", err)
		}
		d = ds[0]
		checkRollingOrder(t, d)
		if d.Finished() && d.State != raftfsm.DeploySucceeded {
			t.Fatalf("deployment of v2 ended %s", describeDeployment(d))
		}
		return d.State == raftfsm.DeploySucceeded, describeDeployment(d)
	})
	if len(d.Batches) != 3 {
		t.Fatalf("rolling one at a time over 3 servers: batches %v", d.Batches)
	}
	app.waitServing(10*time.Second, "two", names(m)...)

	// A broken release: pushed, deployed by auto deploy, fails its health check in the first batch.
	app.push(cl, "v3", true)
	testutil.Eventually(t, 120*time.Second, "the deployment of v3 to end", func() (bool, string) {
		var ds []raftfsm.Deployment
		if _, err := cl.Get(ctx, "/v1/envs/prod/deployments", &ds); err != nil || len(ds) == 0 {
			return false, fmt.Sprint(err)
		}
		for _, x := range ds {
			if x.Release == "v3" {
				d = x
				return x.Finished(), describeDeployment(x)
			}
		}
		return false, "no deployment of v3 yet"
	})
	if d.State != raftfsm.DeployRolledBack || d.Batch != 0 || len(d.Nodes) != 1 {
		t.Fatalf("the broken release should stop in its first batch and roll back: %s", describeDeployment(d))
	}
	app.waitServing(60*time.Second, "two", names(m)...)
	var e raftfsm.Env
	if _, err := cl.Get(ctx, "/v1/envs/prod", &e); err != nil || !e.Pinned || e.Desired != "v2" {
		t.Fatalf("after the rollback: %+v %v", e, err)
	}
}

// TestDeployAgentKilledAtEachStep kills a server's agent with SIGKILL while a deployment is at each step of the
// lifecycle (held there by a gate in the hook): `current` always names a complete release, and once the agent
// is started again the deployment finishes and the server serves the new release.
func TestDeployAgentKilledAtEachStep(t *testing.T) {
	needProcesses(t)
	m := startPmesh(t, 3)
	leader := m.waitLeader(m.nodes...)
	var target *pnode
	for _, n := range m.nodes {
		if n != leader {
			target = n
			break
		}
	}
	cl := m.client(leader)
	cl.RetryNoLeader = 30 * time.Second
	app := newDeployApp(t, cl, "web", "prod", []string{target.name}, []string{target.name}, raftfsm.Strategy{Kind: "all"}, false, "")
	stopAppsAtEnd(t, m, app)
	app.push(cl, "v1", false)
	first := app.deploy(cl, deployer.CreateRequest{Release: "v1"})
	waitDeployment(t, liveClients(m), first.ID, 60*time.Second, raftfsm.DeploySucceeded)
	app.waitServing(10*time.Second, "v1", target.name)

	steps := []struct {
		step    string
		flipped bool // the new release is current by the time this step runs
	}{
		{"PreInstall", false}, {"PostInstall", false}, {"PreStart", true}, {"PostStart", true}, {"Health", true},
	}
	prev := "v1"
	for i, s := range steps {
		version := fmt.Sprintf("v%d", i+2)
		app.push(cl, version, false)
		app.block(s.step)
		d := app.deploy(cl, deployer.CreateRequest{Release: version})
		testutil.Eventually(t, 60*time.Second, target.name+" at "+s.step, func() (bool, string) {
			got, _ := getDeployment(cl, d.ID)
			return app.reached(s.step), describeDeployment(got)
		})
		target.proc.Kill()
		cur := app.checkCurrent(target.dir)
		want := prev
		if s.flipped {
			want = version
		}
		if cur != want {
			t.Fatalf("killed at %s: current serves %q, want %q", s.step, cur, want)
		}
		app.open(s.step)
		m.restart(target)
		done := waitDeployment(t, liveClients(m), d.ID, 90*time.Second, raftfsm.DeploySucceeded, raftfsm.DeployFailed, raftfsm.DeployRolledBack)
		if done.State != raftfsm.DeploySucceeded {
			t.Fatalf("after a kill at %s the deployment ended %s", s.step, describeDeployment(done))
		}
		app.waitServing(30*time.Second, version, target.name)
		if cur := app.checkCurrent(target.dir); cur != version {
			t.Fatalf("after a kill at %s current is %q, want %q", s.step, cur, version)
		}
		prev = version
	}
}

// TestDeployAppSurvivesAgentKills kills a server's agent with SIGKILL and starts it again five times: the app
// keeps running through it (the same pid), and the new agent supervises it (killing the app starts a new one).
func TestDeployAppSurvivesAgentKills(t *testing.T) {
	needProcesses(t)
	m := startPmesh(t, 1)
	n := m.nodes[0]
	cl := m.client(n)
	cl.RetryNoLeader = 30 * time.Second
	app := newDeployApp(t, cl, "web", "prod", []string{n.name}, []string{n.name}, raftfsm.Strategy{Kind: "all"}, false, "")
	stopAppsAtEnd(t, m, app)
	app.push(cl, "v1", false)
	d := app.deploy(cl, deployer.CreateRequest{Release: "v1"})
	waitDeployment(t, liveClients(m), d.ID, 60*time.Second, raftfsm.DeploySucceeded)
	app.waitServing(10*time.Second, "v1", n.name)
	first := app.serving(n.name)
	for i := range 5 {
		n.proc.Kill()
		if got := app.serving(n.name); got != first {
			t.Fatalf("cycle %d: with the agent dead the app serves %q, want %q", i, got, first)
		}
		m.restart(n)
		m.waitHealthy(n)
		if got := app.serving(n.name); got != first {
			t.Fatalf("cycle %d: after the restart the app serves %q, want %q (the same process)", i, got, first)
		}
	}
	// The app is supervised by the fifth agent: killed, it is started again.
	var pid int
	if _, err := fmt.Sscanf(strings.SplitN(first, "pid=", 2)[1], "%d", &pid); err != nil {
		t.Fatalf("pid in %q: %v", first, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "a new app process", func() (bool, string) {
		got := app.serving(n.name)
		return versionOf(got) == "v1" && got != first, got
	})
}

// TestDeployLateJoiner deploys to an environment that names a server not yet in the mesh: the deployment
// covers the servers that are up, and the server that joins later installs the release by itself.
func TestDeployLateJoiner(t *testing.T) {
	needProcesses(t)
	m := newPmesh(t, 3)
	m.init(m.nodes[0])
	m.startJoin(m.nodes[1])
	m.waitHealthy(m.nodes[:2]...)
	cl := m.client(m.nodes[0])
	cl.RetryNoLeader = 30 * time.Second
	app := newDeployApp(t, cl, "web", "prod", names(m), names(m), raftfsm.Strategy{Kind: "all"}, false, "")
	stopAppsAtEnd(t, m, app)
	app.push(cl, "v1", false)
	d := app.deploy(cl, deployer.CreateRequest{Release: "v1"})
	d = waitDeployment(t, liveClients(m), d.ID, 60*time.Second, raftfsm.DeploySucceeded)
	if fmt.Sprint(d.Batches) != "[[n1 n2]]" {
		t.Fatalf("batches %v: only the servers up at the deployment", d.Batches)
	}
	app.waitServing(10*time.Second, "v1", "n1", "n2")

	m.startJoin(m.nodes[2])
	app.waitServing(90*time.Second, "v1", "n3")
	if _, err := os.Stat(app.envDir(m.nodes[2].dir)); err != nil {
		t.Fatal(err)
	}
}
