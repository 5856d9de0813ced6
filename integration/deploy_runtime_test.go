package integration

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/deployer"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/raftfsm"
)

// envRuntime reads what the servers of env report they run, through cl (GET /v1/envs/{env}).
func envRuntime(cl *client.Client, env string) (map[string]deployer.ServerRuntime, error) {
	var v struct {
		raftfsm.Env
		Runtime []deployer.ServerRuntime `json:"runtime"`
	}
	if _, err := cl.Get(context.Background(), "/v1/envs/"+url.PathEscape(env), &v); err != nil {
		return nil, err
	}
	out := map[string]deployer.ServerRuntime{}
	for _, s := range v.Runtime {
		out[s.Node] = s
	}
	return out, nil
}

// waitRuntime waits until server's report of env, read through cl, satisfies cond.
func waitRuntime(t testing.TB, cl *client.Client, env, server, what string, cond func(s deployer.ServerRuntime) bool) deployer.ServerRuntime {
	t.Helper()
	var got deployer.ServerRuntime
	testutil.Eventually(t, 60*time.Second, server+": "+what, func() (bool, string) {
		rts, err := envRuntime(cl, env)
		if err != nil {
			return false, err.Error()
		}
		got = rts[server]
		return got.Report != nil && cond(got), describeRuntime(got)
	})
	return got
}

func describeRuntime(s deployer.ServerRuntime) string {
	if s.Report == nil {
		return fmt.Sprintf("%s up=%s: no report; drift %q", s.Node, s.Up, s.Drift)
	}
	r := s.Report
	exit := ""
	if r.LastExit != nil {
		exit = fmt.Sprintf(" last exit %s after %s (pid %d)", r.LastExit.Status, time.Duration(r.LastExit.Ran), r.LastExit.PID)
	}
	return fmt.Sprintf("%s up=%s: release %s (installed %s) %s %q procs %v restarts %d%s; drift %q last drift %q",
		s.Node, s.Up, r.Release, r.Installed, r.Health, r.Detail, r.Procs, r.Restarts, exit, s.Drift, r.LastDrift)
}

// pidOf is the pid in what the test app serves ("v1 pid=123").
func pidOf(t testing.TB, serving string) int {
	t.Helper()
	pid := servingPID(serving)
	if pid == 0 {
		t.Fatalf("no pid in %q", serving)
	}
	return pid
}

// nodeCLIOK runs the node binary as a client of server n and fails the test unless it exits 0.
func nodeCLIOK(t testing.TB, m *pmesh, n *pnode, args ...string) string {
	t.Helper()
	out, errOut, code := nodeCLI(t, m, n, args...)
	if code != 0 {
		t.Fatalf("node %v: exit %d\n%s%s", args, code, out, errOut)
	}
	return out
}

// TestDeployRuntimeReportedAndRepaired: on a 2-process mesh, the app runs on n1 and everything is read through
// n2. n1 reports the release, its app's pid and health; killing the app is reported (a restart, the last exit,
// a new pid) and healed by supervision, and the report survives a kill -9 and a TERM of the agent; a `current` moved back to the old release by hand is reported as drift
// and the agent installs the desired release again by itself.
func TestDeployRuntimeReportedAndRepaired(t *testing.T) {
	needProcesses(t)
	m := startPmesh(t, 2)
	n1, n2 := m.nodes[0], m.nodes[1]
	cl := m.client(n2)
	cl.RetryNoLeader = 30 * time.Second
	app := newDeployApp(t, cl, "web", "prod", []string{n1.name}, []string{n1.name}, raftfsm.Strategy{Kind: "all"}, false, "")
	stopAppsAtEnd(t, m, app)
	app.push(cl, "v1", false)
	d := app.deploy(cl, deployer.CreateRequest{Release: "v1"})
	waitDeployment(t, liveClients(m), d.ID, 60*time.Second, raftfsm.DeploySucceeded)
	app.waitServing(10*time.Second, "v1", n1.name)
	pid := pidOf(t, app.serving(n1.name))

	got := waitRuntime(t, cl, "prod", n1.name, "running v1, healthy, with the app's pid", func(s deployer.ServerRuntime) bool {
		r := s.Report
		return r.Release == "v1" && r.Health == raftfsm.RuntimeHealthy && len(r.Procs) == 1 && r.Procs[0].PID == pid && s.Drift == ""
	})
	if got.Up != "alive" || got.Report.Restarts != 0 || got.Report.Procs[0].StartedAt.IsZero() {
		t.Fatalf("report %s", describeRuntime(got))
	}
	if rts, _ := envRuntime(cl, "prod"); len(rts) != 1 {
		t.Fatalf("n2 is not in the environment but is listed: %v", rts)
	}
	out := nodeCLIOK(t, m, n2, "env", "show", "prod")
	if !strings.Contains(out, "HEALTH") || !strings.Contains(out, fmt.Sprint(pid)) || !strings.Contains(out, "healthy") {
		t.Fatalf("node env show prod (through n2) does not show what n1 runs:\n%s", out)
	}

	// Killing the app: reported, and supervision starts it again.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	got = waitRuntime(t, cl, "prod", n1.name, "a restart after the kill", func(s deployer.ServerRuntime) bool {
		r := s.Report
		return r.Restarts == 1 && r.LastExit != nil && r.LastExit.PID == pid && len(r.Procs) == 1 && r.Procs[0].PID != pid &&
			r.Health == raftfsm.RuntimeHealthy
	})
	if !strings.Contains(got.Report.LastExit.Status, "killed") {
		t.Fatalf("the last exit does not say the app was killed: %s", describeRuntime(got))
	}
	testutil.Eventually(t, 30*time.Second, "the restarted app serving", func() (bool, string) {
		s := app.serving(n1.name)
		return versionOf(s) == "v1" && strings.HasSuffix(s, fmt.Sprintf("pid=%d", got.Report.Procs[0].PID)), s
	})
	out = nodeCLIOK(t, m, n2, "env", "show", "prod")
	if !strings.Contains(out, "killed") {
		t.Fatalf("node env show prod does not show the last exit:\n%s", out)
	}

	// The agent killed (-9), then stopped (TERM), and started again each time: the app is the same process, and
	// the report keeps its restart and exit.
	restarted := got.Report.Procs[0].PID
	// (Closures, not method values: each restart makes a new process.)
	for _, stop := range []func(){func() { n1.proc.Kill() }, func() { n1.proc.Stop() }} {
		stop()
		m.restart(n1)
		m.waitHealthy(n1, n2)
		got = waitRuntime(t, cl, "prod", n1.name, "the same report after an agent restart", func(s deployer.ServerRuntime) bool {
			r := s.Report
			return s.Up == "alive" && r.Restarts == 1 && r.LastExit != nil && r.LastExit.PID == pid && len(r.Procs) == 1 &&
				r.Procs[0].PID == restarted && r.Health == raftfsm.RuntimeHealthy
		})
		if s := app.serving(n1.name); !strings.HasSuffix(s, fmt.Sprintf("pid=%d", restarted)) {
			t.Fatalf("after the agent restart the app serves %q, want pid %d", s, restarted)
		}
	}

	// v2, then `current` moved back to v1 by hand: drift, repaired by the agent.
	app.push(cl, "v2", false)
	d = app.deploy(cl, deployer.CreateRequest{Release: "v2"})
	waitDeployment(t, liveClients(m), d.ID, 60*time.Second, raftfsm.DeploySucceeded)
	app.waitServing(10*time.Second, "v2", n1.name)
	envDir := app.envDir(n1.dir)
	tmp := filepath.Join(envDir, "current.by-hand")
	if err := os.Symlink(filepath.Join("releases", "v1"), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(envDir, deployer.CurrentLink)); err != nil {
		t.Fatal(err)
	}
	got = waitRuntime(t, cl, "prod", n1.name, "the drift seen and repaired", func(s deployer.ServerRuntime) bool {
		r := s.Report
		return strings.Contains(r.LastDrift, "v1") && r.Release == "v2" && r.Installed == "v2" && s.Drift == "" &&
			r.Health == raftfsm.RuntimeHealthy
	})
	if cur := app.checkCurrent(n1.dir); cur != "v2" {
		t.Fatalf("after the repair current serves %q, want v2 (%s)", cur, describeRuntime(got))
	}
	app.waitServing(30*time.Second, "v2", n1.name)
	out = nodeCLIOK(t, m, n2, "env", "show", "prod")
	if !strings.Contains(out, "n1: repaired drift: current points to v1") {
		t.Fatalf("node env show prod does not show the repaired drift:\n%s", out)
	}
	t.Logf("node env show prod:\n%s", out)
}

// crashManifest is a release whose Exec runs script, without a health check.
func crashManifest(script string) map[string]string {
	return map[string]string{"shoal.yml": "package:\n  include: ['*']\ndeploy:\n  exec:\n    - " + script + "\n"}
}

// TestDeployCrashLoopNamed: without a health check, an Exec that exits at once fails the deployment with the crash
// loop named (exit status, run time, restarts), in the deployment and in `env show`; an app that exits after 3 s
// while the minimum healthy time is 5 s is never healthy; one that stays up is healthy only after that time.
func TestDeployCrashLoopNamed(t *testing.T) {
	needProcesses(t)
	m := startPmesh(t, 1)
	n := m.nodes[0]
	cl := m.client(n)
	cl.RetryNoLeader = 30 * time.Second
	app := newDeployApp(t, cl, "web", "prod", []string{n.name}, []string{n.name}, raftfsm.Strategy{Kind: "all"}, false, "")
	stopAppsAtEnd(t, m, app)

	app.pushFiles(cl, "v1", crashManifest("exit 1"))
	d := app.deploy(cl, deployer.CreateRequest{Release: "v1"})
	d = waitDeployment(t, liveClients(m), d.ID, 90*time.Second, raftfsm.DeployFailed)
	st := d.Nodes[n.name]
	if st == nil || !strings.Contains(st.Error, "Exec is crash-looping: exit status 1 after") || !strings.Contains(st.Error, "restarts") {
		t.Fatalf("the server's row does not name the crash loop: %s", describeDeployment(d))
	}
	got := waitRuntime(t, cl, "prod", n.name, "a crash loop", func(s deployer.ServerRuntime) bool {
		return s.Report.Health == raftfsm.RuntimeCrashLoop && strings.Contains(s.Report.Detail, "exit status 1 after")
	})
	if got.Report.Restarts < 2 || got.Report.LastExit == nil || got.Report.LastExit.Status != "exit status 1" {
		t.Fatalf("report %s", describeRuntime(got))
	}
	out := nodeCLIOK(t, m, n, "env", "show", "prod")
	if !strings.Contains(out, "crash_loop") || !strings.Contains(out, "exit status 1 after") {
		t.Fatalf("node env show prod does not name the crash loop:\n%s", out)
	}
	t.Logf("node env show prod:\n%s", out)

	// Up for 3 s, minimum healthy time 5 s: not healthy.
	nodeCLIOK(t, m, n, "env", "update", "prod", "--min-healthy-time", "5s")
	app.pushFiles(cl, "v2", crashManifest("sleep 3"))
	start := time.Now()
	d = app.deploy(cl, deployer.CreateRequest{Release: "v2"})
	d = waitDeployment(t, liveClients(m), d.ID, 120*time.Second, raftfsm.DeployFailed, raftfsm.DeploySucceeded)
	if d.State != raftfsm.DeployFailed || !strings.Contains(d.Nodes[n.name].Error, "exit status 0 after 3") {
		t.Fatalf("an app that exits after 3 s counted as healthy with a minimum healthy time of 5 s: %s", describeDeployment(d))
	}

	// Up for good: healthy, but not before the minimum healthy time (2 s here).
	nodeCLIOK(t, m, n, "env", "update", "prod", "--min-healthy-time", "2s")
	app.pushFiles(cl, "v3", crashManifest("exec sleep 600"))
	start = time.Now()
	d = app.deploy(cl, deployer.CreateRequest{Release: "v3"})
	d = waitDeployment(t, liveClients(m), d.ID, 60*time.Second, raftfsm.DeploySucceeded, raftfsm.DeployFailed)
	if d.State != raftfsm.DeploySucceeded {
		t.Fatalf("an app that stays up failed: %s", describeDeployment(d))
	}
	if took := time.Since(start); took < 2*time.Second {
		t.Fatalf("healthy after %s, before the minimum healthy time of 2s", took)
	}
	waitRuntime(t, cl, "prod", n.name, "v3 healthy, no drift", func(s deployer.ServerRuntime) bool {
		return s.Report.Release == "v3" && s.Report.Health == raftfsm.RuntimeHealthy && s.Report.Restarts == 0 && s.Drift == ""
	})
}
