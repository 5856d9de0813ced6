package deployer

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/artifact"
	"github.com/shoal-ci/shoal/internal/fakenode"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// The tests in this file run the agent's and the orchestrator's decisions against a fake member
// (internal/fakenode): a real FSM written synchronously, gossip's view set by the test, and the environment
// directories on a temporary disk. No worker, lifecycle or loop runs: each test calls the decision it checks.

// fakeDeployer is a deployer on a fake member, started by nothing.
func fakeDeployer(t *testing.T, n *fakenode.Node) *Deployer {
	t.Helper()
	store, err := artifact.New(filepath.Join(n.DataDir(), "blobs"), n.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	d, err := newDeployer(n, Options{Fetcher: &StoreFetcher{Store: store}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// deployMesh is the state of app web with environment prod on servers a, b and c (rolling, one at a time, auto
// rollback) and releases v1 to v3, with a, b and c alive in gossip; the member returned is a.
func deployMesh(t *testing.T) *fakenode.Node {
	n := fakenode.New(t, "a")
	var ms []node.Member
	for _, name := range []string{"a", "b", "c"} {
		ms = append(ms, node.Member{Name: name, Status: node.StatusAlive, Since: time.Now().Add(-time.Hour)})
	}
	n.SetMembers(ms...)
	n.MustApply(t, &raftfsm.AppPut{App: raftfsm.App{Name: "web"}, Create: true},
		&raftfsm.EnvPut{Env: raftfsm.Env{Name: "prod", App: "web", Servers: []string{"a", "b", "c"},
			Strategy: raftfsm.Strategy{Kind: "rolling", BatchSize: 1, AutoRollback: true}}, Create: true})
	for _, v := range []string{"v1", "v2", "v3"} {
		sum := sha256.Sum256([]byte(v))
		n.MustApply(t, &raftfsm.ReleaseCreate{Release: raftfsm.Release{App: "web", Version: v, Digest: hex.EncodeToString(sum[:]),
			Size: 1, PieceSize: 1024, Holders: []string{"a"}}})
	}
	return n
}

// deploy creates a deployment of release to prod as the API does, and returns its id.
func deploy(t *testing.T, n *fakenode.Node, kind, release string, force bool) string {
	t.Helper()
	var e raftfsm.Env
	n.FSM().Read(func(s *raftfsm.State) { e = *s.Envs["prod"] })
	dep := NewDeployment(&e, n.Members(), kind, release, "test", force, nil, time.Now())
	n.MustApply(t, &raftfsm.DeployCreate{Deployment: dep})
	var id string
	n.FSM().Read(func(s *raftfsm.State) {
		for _, d := range s.EnvDeploys("prod") {
			if d.CreateIndex > 0 && (id == "" || d.CreateIndex > s.Deploys[id].CreateIndex) {
				id = d.ID
			}
		}
	})
	return id
}

func deployment(n *fakenode.Node, id string) raftfsm.Deployment {
	var out raftfsm.Deployment
	n.FSM().Read(func(s *raftfsm.State) {
		if d := s.Deploys[id]; d != nil {
			out = *d
		}
	})
	return out
}

func env(n *fakenode.Node) raftfsm.Env {
	var out raftfsm.Env
	n.FSM().Read(func(s *raftfsm.State) { out = *s.Envs["prod"] })
	return out
}

func setStatus(t *testing.T, n *fakenode.Node, id, server, state string) {
	t.Helper()
	n.MustApply(t, &raftfsm.NodeStatusSet{ID: id, Node: server, Status: raftfsm.NodeStatus{State: state, Error: "boom on " + server}})
}

// installed makes the worker's disk say that release was installed (for deployment, "" for none) and
// `current` points to it.
func installed(t *testing.T, w *envWorker, release, deployment string, terminated bool) {
	t.Helper()
	dir := filepath.Join(w.dir, "releases", release)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := FlipCurrent(w.dir, dir); err != nil {
		t.Fatal(err)
	}
	if err := saveRecord(w.dir, &installRecord{Release: release, Dir: release, Deployment: deployment, ManifestName: "shoal.yml",
		Manifest: "package:\n  include: ['*']\n", Terminated: terminated}); err != nil {
		t.Fatal(err)
	}
}

var workNames = map[work]string{workNone: "nothing", workRunOp: "run op", workEnsureRunning: "ensure running",
	workCheck: "check", workInstall: "install", workConverge: "converge"}

// TestAgentDecidesFromTheStateAndTheDisk follows one server through the life of an environment, written to a
// real FSM as the API, the orchestrator and the agents would write it, and checks after each write what the
// worker decides to do (and for which release and deployment): a pending deployment changes nothing; a started
// batch installs, reports and proves health; a failure is left to the orchestrator; a finished deployment is
// never run: after a failure or a cancel the server returns to the stable release; a forced deployment installs
// again; a terminate stops once.
func TestAgentDecidesFromTheStateAndTheDisk(t *testing.T) {
	n := deployMesh(t)
	d := fakeDeployer(t, n)
	w := d.newWorker("web", "prod")
	check := func(step string, want work, release, dep string, live bool) {
		t.Helper()
		v := w.read()
		if !v.found {
			t.Fatalf("%s: the worker does not find its environment", step)
		}
		_, _, got := w.plan(v)
		if got != want || v.t.Release != release || v.t.depID() != dep || v.t.Live != live {
			t.Errorf("%s: decided %s for release %q deployment %q live %v; want %s for %q %q live %v",
				step, workNames[got], v.t.Release, v.t.depID(), v.t.Live, workNames[want], release, dep, live)
		}
	}

	check("a new environment", workNone, "", "", false)
	d1 := deploy(t, n, raftfsm.DeployKindDeploy, "v1", false)
	check("a pending deployment", workNone, "", "", false)
	n.MustApply(t, &raftfsm.DeployUpdate{ID: d1, State: raftfsm.DeployRunning, Batch: 0, From: []string{raftfsm.DeployPending}})
	if dep := deployment(n, d1); len(dep.Batches) != 3 || dep.Batches[0][0] != "a" {
		t.Fatalf("batches %v, want a first, one server at a time", dep.Batches)
	}
	check("its first batch started", workInstall, "v1", d1, true)
	setStatus(t, n, d1, "a", raftfsm.NodeInstalling)
	installed(t, w, "v1", d1, false)
	check("installed, not yet proved healthy", workCheck, "v1", d1, true)
	setStatus(t, n, d1, "a", raftfsm.NodeHealthy)
	check("healthy in its deployment", workEnsureRunning, "v1", d1, true)
	n.MustApply(t, &raftfsm.DeployUpdate{ID: d1, State: raftfsm.DeploySucceeded, Batch: 2, SetDesired: "v1"})
	check("the deployment succeeded", workEnsureRunning, "v1", "", false)

	// A failed deployment of v2: while it runs the orchestrator decides; once it ended, back to v1 (installed
	// again over the v2 this server was left with).
	d2 := deploy(t, n, raftfsm.DeployKindDeploy, "v2", false)
	n.MustApply(t, &raftfsm.DeployUpdate{ID: d2, State: raftfsm.DeployRunning, Batch: 0})
	check("a second deployment started", workInstall, "v2", d2, true)
	installed(t, w, "v2", d2, false)
	setStatus(t, n, d2, "a", raftfsm.NodeFailed)
	check("failed in a running deployment", workNone, "v2", d2, true)
	n.MustApply(t, &raftfsm.DeployUpdate{ID: d2, State: raftfsm.DeployFailed, Batch: 0, Error: "a failed"})
	check("after the failure", workConverge, "v1", "", false)
	installed(t, w, "v1", "", false)
	check("back on the stable release", workEnsureRunning, "v1", "", false)

	// A cancelled deployment is never run, even though this server was in its started batch.
	d3 := deploy(t, n, raftfsm.DeployKindDeploy, "v3", false)
	n.MustApply(t, &raftfsm.DeployUpdate{ID: d3, State: raftfsm.DeployRunning, Batch: 0})
	check("a third deployment started", workInstall, "v3", d3, true)
	n.MustApply(t, &raftfsm.DeployUpdate{ID: d3, State: raftfsm.DeployCancelled, Batch: 0, Error: "cancelled by test"})
	check("after the cancel", workEnsureRunning, "v1", "", false)

	// `current` moved away from the record (an install cut after its flip): install again.
	other := filepath.Join(w.dir, "releases", "v1~1")
	if err := os.MkdirAll(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := FlipCurrent(w.dir, other); err != nil {
		t.Fatal(err)
	}
	check("current differs from the record", workConverge, "v1", "", false)
	installed(t, w, "v1", "", false)

	// A forced deployment of the installed release installs it again; an unforced one only checks it.
	d4 := deploy(t, n, raftfsm.DeployKindDeploy, "v1", true)
	n.MustApply(t, &raftfsm.DeployUpdate{ID: d4, State: raftfsm.DeployRunning, Batch: 0})
	check("a forced deployment of the installed release", workInstall, "v1", d4, true)
	n.MustApply(t, &raftfsm.DeployUpdate{ID: d4, State: raftfsm.DeployCancelled, Batch: 0})
	d5 := deploy(t, n, raftfsm.DeployKindDeploy, "v1", false)
	n.MustApply(t, &raftfsm.DeployUpdate{ID: d5, State: raftfsm.DeployRunning, Batch: 0})
	check("an unforced deployment of the installed release", workCheck, "v1", d5, true)
	n.MustApply(t, &raftfsm.DeployUpdate{ID: d5, State: raftfsm.DeployCancelled, Batch: 0})

	// A terminate: run once while it runs, then stopped; a terminated record asks for nothing more.
	d6 := deploy(t, n, raftfsm.DeployKindTerminate, "", false)
	n.MustApply(t, &raftfsm.DeployUpdate{ID: d6, State: raftfsm.DeployRunning, Batch: 0})
	check("a terminate started", workRunOp, "", d6, true)
	setStatus(t, n, d6, "a", raftfsm.NodeHealthy)
	check("a terminate done here", workNone, "", d6, true)
	n.MustApply(t, &raftfsm.DeployUpdate{ID: d6, State: raftfsm.DeploySucceeded, Batch: 2})
	check("stopped, the record not yet terminated", workRunOp, "", "", false)
	installed(t, w, "v1", d6, true)
	check("stopped and terminated", workNone, "", "", false)
}

// TestOrchestratorRollsOutThroughTheFSM: rounds of the orchestrator on the leader start a pending deployment,
// move it batch by batch as servers report healthy, and end it with the environment's release set, every write
// accepted by the FSM. A server that fails aborts the next deployment: the environment is pinned and rolled back
// to its stable release on every server at once, in one entry.
func TestOrchestratorRollsOutThroughTheFSM(t *testing.T) {
	n := deployMesh(t)
	d := fakeDeployer(t, n)
	n.Lead(t, 2)
	round := func(step string) {
		t.Helper()
		if _, ok := d.orchestrateOnce(t.Context(), d.log); !ok {
			t.Fatalf("%s: a write of the orchestrator was refused: %+v", step, n.Writes()[len(n.Writes())-1])
		}
	}
	want := func(step, id, state string, batch int) {
		t.Helper()
		if dep := deployment(n, id); dep.State != state || dep.Batch != batch {
			t.Fatalf("%s: deployment %s is %s at batch %d, want %s at batch %d (%s)", step, id, dep.State, dep.Batch, state, batch, dep.Error)
		}
	}

	d1 := deploy(t, n, raftfsm.DeployKindDeploy, "v1", false)
	round("pending")
	want("pending", d1, raftfsm.DeployRunning, 0)
	round("nobody reported")
	want("nobody reported", d1, raftfsm.DeployRunning, 0)
	for i, server := range []string{"a", "b", "c"} {
		setStatus(t, n, d1, server, raftfsm.NodeHealthy)
		round(server + " healthy")
		if i < 2 {
			want(server+" healthy", d1, raftfsm.DeployRunning, i+1)
		}
	}
	want("all healthy", d1, raftfsm.DeploySucceeded, 2)
	if e := env(n); e.Desired != "v1" || e.Stable != "v1" {
		t.Fatalf("after the first deployment prod's desired/stable are %q/%q, want v1/v1", e.Desired, e.Stable)
	}

	d2 := deploy(t, n, raftfsm.DeployKindDeploy, "v2", false)
	round("second pending")
	setStatus(t, n, d2, "a", raftfsm.NodeFailed)
	round("a failed")
	dep := deployment(n, d2)
	if dep.State != raftfsm.DeployRolledBack || dep.Rollback == "" {
		t.Fatalf("after a failure the deployment is %s with rollback %q, want rolled_back with a rollback", dep.State, dep.Rollback)
	}
	e := env(n)
	if !e.Pinned || e.Desired != "v1" {
		t.Fatalf("after the rollback prod is pinned=%v desired %q, want pinned on v1", e.Pinned, e.Desired)
	}
	rb := deployment(n, dep.Rollback)
	if rb.Release != "v1" || rb.RollbackOf != d2 || len(rb.Batches) != 1 || len(rb.Batches[0]) != 3 {
		t.Fatalf("the rollback deploys %s (of %q) in batches %v, want v1 of %s to all three servers at once", rb.Release, rb.RollbackOf, rb.Batches, d2)
	}
	round("rollback pending")
	want("rollback pending", rb.ID, raftfsm.DeployRunning, 0)
}

// TestOrchestratorWriteCrossedByACancel: a cancel that lands between the orchestrator's plan and its write wins:
// the write, planned on the pending deployment, is refused, the round says so, and the next round leaves the
// cancelled deployment alone.
func TestOrchestratorWriteCrossedByACancel(t *testing.T) {
	n := deployMesh(t)
	d := fakeDeployer(t, n)
	n.Lead(t, 2)
	id := deploy(t, n, raftfsm.DeployKindDeploy, "v1", false)
	n.BeforeApply(func(c raftfsm.Command) error {
		if u, ok := c.(*raftfsm.DeployUpdate); ok && u.ID == id && u.State == raftfsm.DeployRunning {
			n.BeforeApply(nil)
			n.MustApply(t, &raftfsm.DeployUpdate{ID: id, State: raftfsm.DeployCancelled, Batch: -1,
				Error: "cancelled by test", From: []string{raftfsm.DeployPending}})
		}
		return nil
	})
	if planned, ok := d.orchestrateOnce(t.Context(), d.log); planned == 0 || ok {
		t.Fatalf("round crossed by a cancel: planned %d, all applied %v; want a plan and a refused write", planned, ok)
	}
	if dep := deployment(n, id); dep.State != raftfsm.DeployCancelled {
		t.Fatalf("deployment is %s, want the cancel to win", dep.State)
	}
	if planned, ok := d.orchestrateOnce(t.Context(), d.log); planned != 0 || !ok {
		t.Fatalf("next round planned %d writes for a cancelled deployment", planned)
	}
}

// TestRuntimeReportsDriftOnceTwoLooksAgree: the report loop writes this server's runtime record when it changes
// and only then; a drift is recorded once two looks agree on it; a server that runs the desired release shows
// no drift in the environment's view, a dead one does; and a server taken out of the environment deletes its
// record.
func TestRuntimeReportsDriftOnceTwoLooksAgree(t *testing.T) {
	n := deployMesh(t)
	d := fakeDeployer(t, n)
	d1 := deploy(t, n, raftfsm.DeployKindDeploy, "v1", false)
	n.MustApply(t, &raftfsm.DeployUpdate{ID: d1, State: raftfsm.DeploySucceeded, Batch: 2, SetDesired: "v1"})
	r := &runtimeReporter{d: d, m: newRuntimeMetrics(nil), hasExec: map[string]bool{}, seen: map[string]string{}}
	writes := func() int {
		k := 0
		for _, w := range n.Writes() {
			if _, ok := w.Cmd.(*raftfsm.RuntimeSet); ok && w.Err == nil {
				k++
			}
		}
		return k
	}
	report := func() *raftfsm.Runtime {
		r.report()
		var rt *raftfsm.Runtime
		n.FSM().Read(func(s *raftfsm.State) {
			if x := s.Runtimes[raftfsm.RuntimeKey("prod", "a")]; x != nil {
				c := *x
				rt = &c
			}
		})
		return rt
	}

	rt := report()
	if rt == nil || rt.Health != raftfsm.RuntimeNone || rt.Release != "" || rt.LastDrift != "" || writes() != 1 {
		t.Fatalf("first look: %+v after %d writes; want one report of nothing installed, no drift recorded yet", rt, writes())
	}
	rt = report()
	if rt.LastDrift != "runs nothing; should run v1" || writes() != 2 {
		t.Fatalf("second look: last drift %q after %d writes; want the drift recorded by a second write", rt.LastDrift, writes())
	}
	report()
	if writes() != 2 {
		t.Fatalf("a look that saw nothing new wrote a report (%d writes)", writes())
	}
	view := func() map[string]ServerRuntime {
		out := map[string]ServerRuntime{}
		n.FSM().Read(func(s *raftfsm.State) {
			for _, sr := range envRuntime(s, s.Envs["prod"], n.Members()) {
				out[sr.Node] = sr
			}
		})
		return out
	}
	if v := view()["a"]; v.Drift != "runs nothing; should run v1" {
		t.Errorf("the environment's view of a: drift %q", v.Drift)
	}

	installed(t, d.newWorker("web", "prod"), "v1", d1, false)
	rt = report()
	if rt.Release != "v1" || rt.Installed != "v1" || rt.Health != raftfsm.RuntimeNoExec || writes() != 3 {
		t.Fatalf("after the install: %+v after %d writes; want v1 installed without exec, reported once", rt, writes())
	}
	if rt.LastDrift == "" {
		t.Error("the repaired drift was forgotten: last_drift keeps it")
	}
	n.SetMembers(node.Member{Name: "a", Status: node.StatusAlive}, node.Member{Name: "b", Status: node.StatusDead},
		node.Member{Name: "c", Status: node.StatusAlive})
	v := view()
	if v["a"].Drift != "" {
		t.Errorf("a runs the desired release but shows drift %q", v["a"].Drift)
	}
	if v["b"].Drift != "server is dead; it should run v1" {
		t.Errorf("dead server b shows drift %q", v["b"].Drift)
	}

	n.MustApply(t, &raftfsm.EnvPut{Env: raftfsm.Env{Name: "prod", App: "web", Servers: []string{"b", "c"},
		Strategy: raftfsm.Strategy{Kind: "rolling", BatchSize: 1}}})
	if rt := report(); rt != nil {
		t.Errorf("a server taken out of prod kept its report: %+v", rt)
	}
}
