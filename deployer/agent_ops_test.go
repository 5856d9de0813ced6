package deployer

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/shoal-ci/shoal/raftfsm"
)

// TestAgentRestartKeepsProcesses closes and attaches a node's deployer five times: each new agent adopts
// the running app (same pid) instead of starting it again.
func TestAgentRestartKeepsProcesses(t *testing.T) {
	dc := newDeployCluster(t, 1, nil)
	dc.createApp("web", "prod", []string{"n1"}, nil, raftfsm.Strategy{Kind: "all"}, false)
	dc.release("web", "v1", releaseOpts{})
	res := dc.deploy("n1", "prod", CreateRequest{Release: "v1"})
	dc.waitDeployment(res.Deployment.ID, 60*time.Second, raftfsm.DeploySucceeded)
	dc.waitServing(10*time.Second, "v1", "n1")
	first := dc.serving("n1")
	for i := range 5 {
		dc.detach("n1")
		if got := dc.serving("n1"); got != first {
			t.Fatalf("cycle %d: with the agent stopped the app serves %q, want %q", i, got, first)
		}
		d := dc.attach(dc.node("n1"), prometheus.NewRegistry())
		dc.eventually(10*time.Second, "the new agent to supervise the app", func() (bool, string) {
			return d.supervisor("web", "prod").Running(), "not yet"
		})
		pids := d.supervisor("web", "prod").PIDs()
		if len(pids) != 1 || !strings.HasSuffix(first, fmt.Sprintf("pid=%d", pids[0])) {
			t.Fatalf("cycle %d: supervising %v; the app is %q", i, pids, first)
		}
	}
	if got := dc.serving("n1"); got != first {
		t.Fatalf("after five agent restarts the app serves %q, want %q (same pid)", got, first)
	}
}

// TestExecRestartIsCounted kills the app: the supervisor starts it again and counts the restart.
func TestExecRestartIsCounted(t *testing.T) {
	dc := newDeployCluster(t, 1, nil)
	dc.createApp("web", "prod", []string{"n1"}, nil, raftfsm.Strategy{Kind: "all"}, false)
	dc.release("web", "v1", releaseOpts{})
	res := dc.deploy("n1", "prod", CreateRequest{Release: "v1"})
	dc.waitDeployment(res.Deployment.ID, 60*time.Second, raftfsm.DeploySucceeded)
	d := dc.deps["n1"]
	pids := d.supervisor("web", "prod").PIDs()
	if len(pids) != 1 {
		t.Fatalf("pids %v", pids)
	}
	p, _ := os.FindProcess(pids[0])
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	dc.eventually(20*time.Second, "a new app process", func() (bool, string) {
		got := d.supervisor("web", "prod").PIDs()
		return len(got) == 1 && got[0] != pids[0] && version(dc.serving("n1")) == "v1", fmt.Sprint(got)
	})
	if n := counterValue(t, d.m.execRestarts.WithLabelValues("web", "prod")); n != 1 {
		t.Fatalf("shoal_exec_restarts_total = %v, want 1", n)
	}
}

// TestRestartAndTerminateDeployments runs a restart deployment (hooks run, a new process serves), then a
// terminate (hooks run, the app stops and stays stopped when the agent restarts), then a deploy that
// starts it again.
func TestRestartAndTerminateDeployments(t *testing.T) {
	dc := newDeployCluster(t, 2, webTags)
	dc.createApp("web", "prod", nil, map[string]string{"role": "web"}, raftfsm.Strategy{Kind: "all"}, false)
	hooks := releaseOpts{deploy: map[string]string{
		"pre_restart":    `echo "pre_restart $SHOAL_DEPLOYMENT" >> ../../hooks.txt`,
		"post_restart":   `echo post_restart >> ../../hooks.txt`,
		"pre_terminate":  `echo pre_terminate >> ../../hooks.txt`,
		"terminate":      `echo terminate >> ../../hooks.txt`,
		"post_terminate": `echo post_terminate >> ../../hooks.txt`,
	}}
	dc.release("web", "v1", hooks)
	res := dc.deploy("n1", "prod", CreateRequest{Release: "v1"})
	dc.waitDeployment(res.Deployment.ID, 60*time.Second, raftfsm.DeploySucceeded)
	dc.waitServing(10*time.Second, "v1", "n1", "n2")
	before := map[string]string{"n1": dc.serving("n1"), "n2": dc.serving("n2")}

	rs := dc.deploy("n2", "prod", CreateRequest{Kind: raftfsm.DeployKindRestart})
	if rs.Deployment.Release != "v1" {
		t.Fatalf("a restart names the running release: %+v", rs.Deployment)
	}
	dc.waitDeployment(rs.Deployment.ID, 60*time.Second, raftfsm.DeploySucceeded)
	for _, name := range []string{"n1", "n2"} {
		now := dc.serving(name)
		if version(now) != "v1" || now == before[name] {
			t.Fatalf("%s after restart serves %q (before %q): want v1 from a new process", name, now, before[name])
		}
		hooksOf := readHooks(t, dc, name)
		if !slices.Equal(hooksOf, []string{"pre_restart " + rs.Deployment.ID, "post_restart"}) {
			t.Fatalf("%s ran hooks %q", name, hooksOf)
		}
	}
	if e := dc.env("prod"); e.Desired != "v1" {
		t.Fatalf("a restart changed the desired release: %+v", e)
	}

	tm := dc.deploy("n1", "prod", CreateRequest{Kind: raftfsm.DeployKindTerminate})
	dc.waitDeployment(tm.Deployment.ID, 60*time.Second, raftfsm.DeploySucceeded)
	for _, name := range []string{"n1", "n2"} {
		if got := dc.serving(name); got != "" {
			t.Fatalf("%s still serves %q after terminate", name, got)
		}
		h := readHooks(t, dc, name)
		if !slices.Equal(h[2:], []string{"pre_terminate", "terminate", "post_terminate"}) {
			t.Fatalf("%s ran hooks %q", name, h)
		}
		if dc.deps[name].supervisor("web", "prod").Running() {
			t.Fatalf("%s still supervises after terminate", name)
		}
	}
	// A terminated environment stays stopped when its agent starts again.
	dc.detach("n1")
	d := dc.attach(dc.node("n1"), prometheus.NewRegistry())
	if d.supervisor("web", "prod").Running() {
		t.Fatal("the terminated app was resumed by a new agent")
	}

	// Deploying again starts it (the same release needs --force: it is still the environment's release).
	if r := dc.deploy("n2", "prod", CreateRequest{Release: "v1"}); !r.Noop {
		t.Fatalf("deploying the active release again without force: %+v", r)
	}
	again := dc.deploy("n2", "prod", CreateRequest{Release: "v1", Force: true})
	dc.waitDeployment(again.Deployment.ID, 60*time.Second, raftfsm.DeploySucceeded)
	dc.waitServing(10*time.Second, "v1", "n1", "n2")
	for _, name := range []string{"n1", "n2"} {
		if cur := currentBase(dc.deps[name].EnvDir("web", "prod")); cur != "v1~1" {
			t.Fatalf("%s: a forced redeploy installs into a new directory; current is %q", name, cur)
		}
	}
}

func readHooks(t *testing.T, dc *deployCluster, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dc.deps[name].EnvDir("web", "prod"), "hooks.txt"))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// TestFailureWithoutRollbackReturnsToStable: a failed deployment without auto-rollback stops where it failed,
// and every server returns to (or stays on) the environment's stable release: the servers it reached leave the
// broken one. `node rollback` then has nothing to undo but still pins the environment.
func TestFailureWithoutRollbackReturnsToStable(t *testing.T) {
	dc := newDeployCluster(t, 3, webTags)
	dc.createApp("web", "prod", nil, map[string]string{"role": "web"}, raftfsm.Strategy{Kind: "rolling", BatchSize: 2}, false)
	dc.release("web", "v1", releaseOpts{})
	res := dc.deploy("n1", "prod", CreateRequest{Release: "v1"})
	dc.waitDeployment(res.Deployment.ID, 60*time.Second, raftfsm.DeploySucceeded)
	dc.release("web", "v2", releaseOpts{unhealthy: true})
	bad := dc.deploy("n1", "prod", CreateRequest{Release: "v2"})
	d := dc.waitDeployment(bad.Deployment.ID, 60*time.Second, raftfsm.DeployFailed)
	if d.Batch != 0 || !strings.Contains(d.Error, "servers failed") {
		t.Fatalf("failed deployment: %s", describe(d))
	}
	dc.waitServing(30*time.Second, "v1", "n1", "n2", "n3")
	if e := dc.env("prod"); e.Desired != "v1" || e.Stable != "v1" || e.Pinned {
		t.Fatalf("environment after a failure without rollback: %+v", e)
	}
	// The failed deployment's record is what it was when it ended.
	if after := dc.deployment(bad.Deployment.ID); describe(after) != describe(d) || after.ModifyIndex != d.ModifyIndex {
		t.Fatalf("a finished deployment changed:\n%s\n%s", describe(d), describe(after))
	}

	var rb CreateResult
	if _, err := dc.api("n3").Post(t.Context(), "/v1/envs/prod/rollback", RollbackRequest{}, &rb); err != nil {
		t.Fatal(err)
	}
	if rb.Deployment == nil || rb.Deployment.Release != "v1" {
		t.Fatalf("rollback: %+v", rb)
	}
	dc.waitDeployment(rb.Deployment.ID, 60*time.Second, raftfsm.DeploySucceeded)
	dc.waitServing(10*time.Second, "v1", "n1", "n2", "n3")
	if e := dc.env("prod"); !e.Pinned || !strings.Contains(e.PinReason, "rolled back to v1") {
		t.Fatalf("a rollback pins the environment: %+v", e)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestDeployAPIAfterJoinAnswersAtOnce: a membership change is the latest Raft entry right after a join, and it
// never moves the state's index. Deploy, cancel and rollback read the latest state first; they must not wait
// for the state's index to reach Raft's applied index (they stalled 10 s after every join or leave).
func TestDeployAPIAfterJoinAnswersAtOnce(t *testing.T) {
	dc := newDeployCluster(t, 2, nil)
	dc.createApp("web", "prod", []string{"nowhere"}, nil, raftfsm.Strategy{Kind: "all"}, false)
	dc.release("web", "v1", releaseOpts{})
	dc.release("web", "v2", releaseOpts{})
	dc.join("n3")
	n1 := dc.node("n1")
	// Wait for the moment the bug needed: a membership entry (n3 made a voter) is the latest one applied.
	dc.eventually(20*time.Second, "a membership entry to be the latest", func() (bool, string) {
		st := n1.Status()
		return st.AppliedIndex > n1.FSM().Index(), fmt.Sprintf("raft applied %d, state %d", st.AppliedIndex, n1.FSM().Index())
	})
	for _, v := range []string{"v1", "v2"} {
		start := time.Now()
		res := dc.deploy("n1", "prod", CreateRequest{Release: v})
		if took := time.Since(start); took > 3*time.Second {
			t.Fatalf("deploy %s after a join took %s", v, took)
		}
		dc.waitDeployment(res.Deployment.ID, 30*time.Second, raftfsm.DeploySucceeded)
	}
	start := time.Now()
	var rb CreateResult
	if _, err := dc.api("n2").Post(t.Context(), "/v1/envs/prod/rollback", RollbackRequest{}, &rb); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("rollback after a join took %s", took)
	}
}

// TestTerminateReachesServerOutsideIt: a server that was in no batch of a terminate (it was away) stops the app
// too, without the deployment: the environment's present state is "stopped". A restart brings both back.
func TestTerminateReachesServerOutsideIt(t *testing.T) {
	dc := newDeployCluster(t, 2, webTags)
	dc.createApp("web", "prod", nil, map[string]string{"role": "web"}, raftfsm.Strategy{Kind: "all"}, false)
	dc.release("web", "v1", releaseOpts{})
	res := dc.deploy("n1", "prod", CreateRequest{Release: "v1"})
	dc.waitDeployment(res.Deployment.ID, 60*time.Second, raftfsm.DeploySucceeded)
	dc.waitServing(10*time.Second, "v1", "n1", "n2")

	e := dc.env("prod")
	term := NewDeployment(&e, nil, raftfsm.DeployKindTerminate, "", "test", false, nil, time.Now())
	term.Batches = [][]string{{"n1"}} // n2 was away when it was created
	dc.apply(&raftfsm.DeployCreate{Deployment: term})
	done := dc.waitDeployment(term.ID, 60*time.Second, raftfsm.DeploySucceeded)
	dc.waitServing(30*time.Second, "", "n1", "n2")
	if after := dc.deployment(term.ID); after.ModifyIndex != done.ModifyIndex || after.Nodes["n2"] != nil {
		t.Fatalf("n2's convergence changed the finished terminate: %s", describe(after))
	}
	rs := dc.deploy("n2", "prod", CreateRequest{Kind: raftfsm.DeployKindRestart})
	dc.waitDeployment(rs.Deployment.ID, 60*time.Second, raftfsm.DeploySucceeded)
	dc.waitServing(30*time.Second, "v1", "n1", "n2")
}
