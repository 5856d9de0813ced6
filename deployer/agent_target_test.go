package deployer

import (
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

// TestDesiredFor: a server acts on the running deployment of its started batch, else on the environment's
// desired release now. Finished deployments (succeeded, failed, cancelled, rolled back) are history: never acted
// on, never reported to.
func TestDesiredFor(t *testing.T) {
	f := newPlanFixture()
	e := f.s.Envs["prod"]
	want := func(who string, kind, release string, live bool) {
		t.Helper()
		got := desiredFor(f.state(), e, who)
		if got.Kind != kind || got.Release != release || got.Live != live || (got.Dep != nil) != live {
			t.Fatalf("%s: got %+v, want kind=%q release=%q live=%v", who, got, kind, release, live)
		}
	}
	deploy := raftfsm.DeployKindDeploy
	want("a", deploy, "v1", false)
	// A succeeded deployment of the desired release is not reported to by a server that converges later.
	f.deploy(deploy, "v1", raftfsm.DeploySucceeded, [][]string{{"a", "b", "c"}}, 0)
	want("late", deploy, "v1", false)

	f.release("v2")
	d := f.deploy(deploy, "v2", raftfsm.DeployRunning, [][]string{{"a"}, {"b"}, {"c"}}, 0)
	want("a", deploy, "v2", true)
	want("b", deploy, "v1", false) // its batch has not started
	want("late", deploy, "v1", false)
	d.Batch = 1
	want("b", deploy, "v2", true)

	// Failed, cancelled or rolled back: every server goes back to (or stays on) the desired release, the
	// servers that had moved included; the deployment is never run again.
	for _, end := range []string{raftfsm.DeployFailed, raftfsm.DeployCancelled, raftfsm.DeployRolledBack} {
		d.State = end
		for _, who := range []string{"a", "b", "c", "late"} {
			want(who, deploy, "v1", false)
		}
	}
	// The stable release after A, B and a failed C is B, on every server.
	f.release("v3")
	f.s.Envs["prod"].Desired, f.s.Envs["prod"].Stable = "v2", "v2"
	f.deploy(deploy, "v3", raftfsm.DeployFailed, [][]string{{"a", "b", "c"}}, 0)
	want("a", deploy, "v2", false)

	// Pending and waiting deployments change nothing.
	w := f.deploy(deploy, "v3", raftfsm.DeployWaiting, [][]string{{"a", "b", "c"}}, 0)
	want("a", deploy, "v2", false)
	w.State = raftfsm.DeployPending
	want("a", deploy, "v2", false)
	w.State, w.Batch = raftfsm.DeployCancelled, -1

	// A running restart is run once by its started batch.
	r := f.deploy(raftfsm.DeployKindRestart, "v2", raftfsm.DeployRunning, [][]string{{"a"}, {"b"}}, 0)
	want("a", raftfsm.DeployKindRestart, "", true)
	want("b", deploy, "v2", false)
	r.State = raftfsm.DeploySucceeded
	want("a", deploy, "v2", false) // done: not run again

	// A succeeded terminate stops the environment on every server, one that was away included; a cancelled or
	// failed one stops nothing; a later succeeded restart or deploy runs it again.
	tm := f.deploy(raftfsm.DeployKindTerminate, "v2", raftfsm.DeploySucceeded, [][]string{{"a", "b"}}, 0)
	want("a", kindStopped, "", false)
	want("late", kindStopped, "", false)
	f.deploy(deploy, "v3", raftfsm.DeployFailed, [][]string{{"a", "b"}}, 0)
	want("a", kindStopped, "", false)
	tm.State = raftfsm.DeployCancelled
	want("late", deploy, "v2", false)
	tm.State = raftfsm.DeploySucceeded
	f.deploy(raftfsm.DeployKindRestart, "v2", raftfsm.DeploySucceeded, [][]string{{"a", "b"}}, 0)
	want("a", deploy, "v2", false)

	// A deployment of another app's environment of the same name is not this one's.
	other := f.deploy(deploy, "v3", raftfsm.DeployRunning, [][]string{{"a"}}, 0)
	other.App = "api"
	want("a", deploy, "v2", false)
}

// TestTargetSame: the guard interrupts work when the target changes in any way that matters.
func TestTargetSame(t *testing.T) {
	d1, d2 := &raftfsm.Deployment{ID: "d1"}, &raftfsm.Deployment{ID: "d2"}
	a := target{Kind: raftfsm.DeployKindDeploy, Release: "v2", Dep: d1, Live: true}
	for _, b := range []target{
		{Kind: raftfsm.DeployKindDeploy, Release: "v2"},
		{Kind: raftfsm.DeployKindDeploy, Release: "v2", Dep: d2, Live: true},
		{Kind: raftfsm.DeployKindDeploy, Release: "v1", Dep: d1, Live: true},
		{Kind: kindStopped},
	} {
		if a.same(b) {
			t.Fatalf("%+v and %+v ask for different work", a, b)
		}
	}
	if !a.same(target{Kind: raftfsm.DeployKindDeploy, Release: "v2", Dep: &raftfsm.Deployment{ID: "d1", State: "x"}, Live: true}) {
		t.Fatal("the same deployment's target is the same work")
	}
}

// TestPlanProgressDeadline: a server of a started batch that reports no progress for the environment's
// progress deadline is failed with a reason that names app, release, phase and cause; the deployment then
// fails (or rolls back) as its strategy says.
func TestPlanProgressDeadline(t *testing.T) {
	f := newPlanFixture()
	f.release("v2").Holders = []string{"gone"}
	e := f.s.Envs["prod"]
	e.ProgressDeadline = raftfsm.Duration(time.Minute)
	start := time.Unix(5000, 0)
	d := f.deploy(raftfsm.DeployKindDeploy, "v2", raftfsm.DeployRunning, [][]string{{"a", "b"}, {"c"}}, 0)
	d.BatchStartedAt = start
	d.Nodes["a"] = &raftfsm.NodeStatus{State: raftfsm.NodeDownloading, Phase: "Fetch", UpdatedAt: start.Add(30 * time.Second)}
	members := aliveMembers("a", "b", "c")
	at := func(after time.Duration) []action { return plannerAt(start.Add(after), members...).plan(f.state()) }
	if got := commands(at(59 * time.Second)); got != "" {
		t.Fatalf("in time: %s", got)
	}
	// b never reported: failed after a minute; a reported 30 s in: still in time.
	acts := at(61 * time.Second)
	if got := commands(acts); got != "status d3 b failed; update d3 failed batch=0" {
		t.Fatalf("b stalled: %s", got)
	}
	if u := acts[1].cmd.(*raftfsm.DeployUpdate); !strings.Contains(u.Error, "b: web release v2 on b: no progress") {
		t.Fatalf("the deployment's error names the cause: %q", u.Error)
	}
	why := acts[0].cmd.(*raftfsm.NodeStatusSet).Status.Error
	if !strings.Contains(why, "web release v2 on b: no progress for 1m1s") || !strings.Contains(why, "reported nothing") {
		t.Fatalf("reason: %q", why)
	}
	d.Strategy.AbortAfter = 1
	acts = at(91 * time.Second)
	if got := commands(acts); got != "status d3 a failed; status d3 b failed; update d3 failed batch=0" {
		t.Fatalf("a stalled too: %s", got)
	}
	why = acts[0].cmd.(*raftfsm.NodeStatusSet).Status.Error
	for _, part := range []string{"web release v2 on a", "phase Fetch", "download stalled at 0%", "no server that is up holds the archive (holders: gone)"} {
		if !strings.Contains(why, part) {
			t.Fatalf("reason %q lacks %q", why, part)
		}
	}
	// A hook that never ends names the hook; with auto rollback the deployment rolls back.
	d.Strategy.AbortAfter = 0
	d.Strategy.AutoRollback = true
	d.Nodes["a"] = &raftfsm.NodeStatus{State: raftfsm.NodeInstalling, Phase: PhasePreInstall, UpdatedAt: start}
	d.Nodes["b"] = &raftfsm.NodeStatus{State: raftfsm.NodeHealthy}
	acts = at(2 * time.Minute)
	if got := commands(acts); !strings.HasPrefix(got, "status d3 a failed; pin prod true; update d3 rolled_back batch=0 +rollback(deploy v1") {
		t.Fatalf("rollback after a stalled hook: %s", got)
	}
	if why := acts[0].cmd.(*raftfsm.NodeStatusSet).Status.Error; !strings.Contains(why, "the PreInstall hook has not finished") {
		t.Fatalf("reason: %q", why)
	}
	// The default applies when the environment sets none.
	e.ProgressDeadline = 0
	if ProgressDeadline(e) != DefaultProgressDeadline {
		t.Fatal("default progress deadline")
	}
	if got := commands(at(5 * time.Minute)); got != "" {
		t.Fatalf("within the default deadline: %s", got)
	}
}

// A server stuck in its health wait while its runtime report says the Exec processes crash-loop is failed with
// that report's detail, not only "the health check has not passed": a crash loop whose restarts back off past
// the deadline is still named.
func TestPlanProgressDeadlineNamesACrashLoop(t *testing.T) {
	f := newPlanFixture()
	e := f.s.Envs["prod"]
	e.ProgressDeadline = raftfsm.Duration(time.Minute)
	start := time.Unix(5000, 0)
	d := f.deploy(raftfsm.DeployKindDeploy, "v2", raftfsm.DeployRunning, [][]string{{"a"}}, 0)
	d.BatchStartedAt = start
	d.Nodes["a"] = &raftfsm.NodeStatus{State: raftfsm.NodeStarting, Phase: PhaseHealth, UpdatedAt: start}
	st := f.state()
	st.Runtimes = map[string]*raftfsm.Runtime{raftfsm.RuntimeKey("prod", "a"): {Env: "prod", App: "web", Node: "a",
		Release: "v2", Health: raftfsm.RuntimeCrashLoop, Detail: "crash loop: exit status 1 after 2ms, 5 restarts"}}
	acts := plannerAt(start.Add(61*time.Second), aliveMembers("a")...).plan(st)
	if len(acts) == 0 {
		t.Fatal("no action after the deadline")
	}
	why := acts[0].cmd.(*raftfsm.NodeStatusSet).Status.Error
	if !strings.Contains(why, "the health check has not passed: crash loop: exit status 1 after 2ms, 5 restarts") {
		t.Fatalf("reason %q does not name the crash loop", why)
	}
}
