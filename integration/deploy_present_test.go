package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/deployer"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// The tests of issue 11's defects: an agent acts only on the present (restarts do not replay history), a failed
// or cancelled deployment leaves every server on the stable release, cancel frees a busy server at once,
// finished deployments never change, and `--wait` ends only at the final state.

// agentReadyLine is what an agent logs once it caught up with the leader and may act.
const agentReadyLine = "agent ready: caught up with the leader"

// waitAgentReady waits until n's running process logged that its agent caught up.
func waitAgentReady(t testing.TB, n *pnode) {
	t.Helper()
	testutil.Eventually(t, 90*time.Second, n.name+"'s agent to catch up", func() (bool, string) {
		return strings.Contains(n.proc.Stderr(), agentReadyLine), "not yet"
	})
}

// phasesLogged returns the lifecycle phases n's running process has run, as "release/phase".
func phasesLogged(n *pnode) []string {
	var out []string
	for _, line := range strings.Split(n.proc.Stderr(), "\n") {
		if !strings.Contains(line, `msg="deploy phase"`) {
			continue
		}
		out = append(out, field(line, "release")+"/"+field(line, "phase"))
	}
	return out
}

// field returns the value of key=value in a text log line.
func field(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	v, _, _ := strings.Cut(line[i+len(key)+2:], " ")
	return v
}

// servingAll asks every server what it serves ("v3 pid=123").
func servingAll(app *deployApp, m *pmesh) map[string]string {
	out := map[string]string{}
	for _, n := range m.nodes {
		out[n.name] = app.serving(n.name)
	}
	return out
}

// finished reads the environment's finished deployments, as JSON, by id.
func finished(t testing.TB, clients func() []*client.Client, env string) map[string]string {
	t.Helper()
	var ds []raftfsm.Deployment
	testutil.Eventually(t, 30*time.Second, "the deployments of "+env, func() (bool, string) {
		for _, cl := range clients() {
			if _, err := cl.Get(context.Background(), "/v1/envs/"+env+"/deployments?limit=0&consistent", &ds); err == nil {
				return true, ""
			}
		}
		return false, "no node answered"
	})
	out := map[string]string{}
	for _, d := range ds {
		if d.Finished() {
			b, _ := json.Marshal(d)
			out[d.ID] = string(b)
		}
	}
	return out
}

// checkHistory fails if a deployment that had finished in before changed since.
func checkHistory(t testing.TB, clients func() []*client.Client, env string, before map[string]string, when string) {
	t.Helper()
	now := finished(t, clients, env)
	for id, was := range before {
		if now[id] != was {
			t.Fatalf("%s: finished deployment %s changed:\nwas %s\nnow %s", when, id, was, now[id])
		}
	}
}

// checkDeployLogs fails unless each server's log of each deployment of a release holds that release's install
// only.
func checkDeployLogs(t testing.TB, cl *client.Client, m *pmesh, history map[string]string) {
	t.Helper()
	for id, js := range history {
		var d raftfsm.Deployment
		_ = json.Unmarshal([]byte(js), &d)
		for _, n := range m.nodes {
			var lr deployer.LogResponse
			if _, err := cl.Get(context.Background(), "/v1/deployments/"+id+"/nodes/"+n.name+"/log", &lr); err != nil {
				t.Fatalf("log of %s on %s: %v", id, n.name, err)
			}
			for _, line := range strings.Split(lr.Log, "\n") {
				if strings.Contains(line, "deploying web release ") && !strings.Contains(line, "deploying web release "+d.Release+" ") {
					t.Fatalf("%s's log of deployment %s (release %s) holds another install: %s", n.name, id, d.Release, line)
				}
			}
		}
	}
}

// TestDeployRestartActsOnlyOnThePresent deploys v1, v2, v3, then restarts agents (kill -9, SIGTERM, and the whole
// mesh): no agent runs any lifecycle phase (no intermediate release, no restart of an unchanged app: the same
// pids serve v3), finished deployments do not change, and the fourth deployment replaces each app once.
func TestDeployRestartActsOnlyOnThePresent(t *testing.T) {
	needProcesses(t)
	m := startPmesh(t, 3)
	cl := m.client(m.nodes[0])
	cl.RetryNoLeader = 30 * time.Second
	app := newDeployApp(t, cl, "web", "prod", names(m), names(m), raftfsm.Strategy{Kind: "all"}, false, "")
	stopAppsAtEnd(t, m, app)
	for _, v := range []string{"v1", "v2", "v3"} {
		app.push(cl, v, false)
		d := app.deploy(cl, deployer.CreateRequest{Release: v})
		waitDeployment(t, liveClients(m), d.ID, 90*time.Second, raftfsm.DeploySucceeded)
	}
	app.waitServing(30*time.Second, "v3", names(m)...)
	serving := servingAll(app, m)
	history := finished(t, liveClients(m), "prod")

	check := func(when string, restarted ...*pnode) {
		t.Helper()
		for _, n := range restarted {
			waitAgentReady(t, n)
		}
		if now := servingAll(app, m); fmt.Sprint(now) != fmt.Sprint(serving) {
			t.Fatalf("%s: the servers serve %v, before %v (same release, same pid expected)", when, now, serving)
		}
		for _, n := range restarted {
			if ph := phasesLogged(n); len(ph) > 0 {
				t.Fatalf("%s: %s's new agent ran lifecycle phases %v, with v3 installed and desired", when, n.name, ph)
			}
		}
		checkHistory(t, liveClients(m), "prod", history, when)
	}
	n2, n3 := m.nodes[1], m.nodes[2]
	n2.proc.Kill()
	m.restart(n2)
	check("after kill -9 of n2", n2)
	n3.proc.Stop()
	m.restart(n3)
	check("after SIGTERM of n3", n3)
	for _, n := range m.nodes {
		n.proc.Stop()
	}
	for _, n := range m.nodes {
		m.restart(n)
	}
	check("after a whole-mesh restart", m.nodes...)
	m.waitHealthy(m.nodes...)

	// The fourth deployment replaces each app once; the agents that restarted run v4's phases only.
	app.push(cl, "v4", false)
	d := app.deploy(cl, deployer.CreateRequest{Release: "v4"})
	waitDeployment(t, liveClients(m), d.ID, 90*time.Second, raftfsm.DeploySucceeded)
	app.waitServing(30*time.Second, "v4", names(m)...)
	for _, n := range m.nodes {
		for _, ph := range phasesLogged(n) {
			if !strings.HasPrefix(ph, "v4/") {
				t.Fatalf("%s ran phase %s after the restarts; only v4's were asked for", n.name, ph)
			}
		}
	}
	checkHistory(t, liveClients(m), "prod", history, "after the fourth deployment")
	checkDeployLogs(t, cl, m, finished(t, liveClients(m), "prod"))
}

// seesUp waits until node from's gossip shows every named server alive.
func seesUp(t testing.TB, m *pmesh, from *pnode, names ...string) {
	t.Helper()
	testutil.Eventually(t, 60*time.Second, from.name+" to see "+strings.Join(names, ", ")+" alive", func() (bool, string) {
		ms, err := m.members(from)
		if err != nil {
			return false, err.Error()
		}
		alive := 0
		for _, x := range ms {
			if slices.Contains(names, x.Name) && x.Status == node.StatusAlive {
				alive++
			}
		}
		return alive == len(names), memberSummary(ms)
	})
}

// pidIn returns the pid in what a server serves ("v3 pid=123"), or 0.
func pidIn(serving string) int {
	var pid int
	if _, after, ok := strings.Cut(serving, "pid="); ok {
		fmt.Sscanf(after, "%d", &pid)
	}
	return pid
}

// TestDeployFailureAndCancelKeepStable: after A and B, a release C that fails at Extract leaves every server on
// B (the same processes), also after an agent restart, and `node deploy web B` rightly has nothing to do. A
// deployment cancelled while one server was busy in a hook and the other's agent was down is interrupted on the
// busy one at once and never installed on either, not even after the restart. With auto rollback, `--wait` prints
// rolled_back only once the servers serve B again; `--wait --timeout` gives up in time. Finished deployments do
// not change meanwhile.
func TestDeployFailureAndCancelKeepStable(t *testing.T) {
	needProcesses(t)
	m := startPmesh(t, 3) // n3 keeps a quorum while n2 is down; the environment is n1 and n2
	n1, n2 := m.nodes[0], m.nodes[1]
	servers := []string{n1.name, n2.name}
	cl := m.client(n1)
	cl.RetryNoLeader = 30 * time.Second
	app := newDeployApp(t, cl, "web", "prod", servers, servers, raftfsm.Strategy{Kind: "all"}, false, "")
	stopAppsAtEnd(t, m, app)
	for _, v := range []string{"A", "B"} {
		app.push(cl, v, false)
		d := app.deploy(cl, deployer.CreateRequest{Release: v})
		waitDeployment(t, liveClients(m), d.ID, 90*time.Second, raftfsm.DeploySucceeded)
	}
	app.waitServing(30*time.Second, "B", servers...)
	onB := servingAll(app, m)
	stayOnB := func(when string) {
		t.Helper()
		if now := servingAll(app, m); fmt.Sprint(now) != fmt.Sprint(onB) {
			t.Fatalf("%s: the servers serve %v, want %v (B, the same processes)", when, now, onB)
		}
		for _, n := range []*pnode{n1, n2} {
			if cur := app.checkCurrent(n.dir); cur != "B" {
				t.Fatalf("%s: %s's current is %q, want B", when, n.name, cur)
			}
		}
	}

	// C fails at Extract on every server: the deployment fails, B stays desired, stable and running.
	files := releaseFiles("C", false)
	files["pipe.fifo"] = ""
	app.pushFiles(cl, "C", files)
	c := app.deploy(cl, deployer.CreateRequest{Release: "C"})
	c = waitDeployment(t, liveClients(m), c.ID, 90*time.Second, raftfsm.DeployFailed)
	if !strings.Contains(describeDeployment(c), "fifo") && !strings.Contains(describeDeployment(c), "Extract") {
		t.Logf("failed deployment: %s", describeDeployment(c))
	}
	stayOnB("after C failed")
	n1.proc.Kill()
	m.restart(n1)
	waitAgentReady(t, n1)
	stayOnB("after C failed and n1's agent was killed and restarted")
	m.waitHealthy(m.nodes...)
	seesUp(t, m, n1, servers...) // a deployment's batches are the servers its API node sees up
	var e raftfsm.Env
	if _, err := cl.Get(context.Background(), "/v1/envs/prod", &e); err != nil || e.Desired != "B" || e.Stable != "B" {
		t.Fatalf("environment after C failed: %+v %v", e, err)
	}
	out, _, code := nodeCLI(t, m, n1, "deploy", "web", "B", "--env", "prod")
	if code != 0 || !strings.Contains(out, "nothing to do") {
		t.Fatalf("deploy B again: exit %d: %s", code, out)
	}
	history := finished(t, liveClients(m), "prod")

	// D: both servers busy in PreInstall; n2's agent dies; D is cancelled. n1's hook is killed at once (the
	// deployment frees it), and neither server ever installs D.
	app.push(cl, "D", false)
	app.block("PreInstall")
	d := app.deploy(cl, deployer.CreateRequest{Release: "D"})
	testutil.Eventually(t, 60*time.Second, "both servers in D's PreInstall", func() (bool, string) {
		got, _ := getDeployment(cl, d.ID)
		busy := 0
		for _, st := range got.Nodes {
			if st.Phase == deployer.PhasePreInstall {
				busy++
			}
		}
		on2, err := getDeployment(m.client(n2), d.ID)
		return busy == 2, fmt.Sprintf("%s batches %v; n2 sees %s %v", describeDeployment(got), got.Batches, describeDeployment(on2), err)
	})
	n2.proc.Kill()
	m.waitLeader(n1, m.nodes[2])
	var cancelled raftfsm.Deployment
	if _, err := cl.Post(context.Background(), "/v1/deployments/"+d.ID+"/cancel", struct{}{}, &cancelled); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, "n1's install of D to be interrupted", func() (bool, string) {
		return strings.Contains(n1.proc.Stderr(), `msg="install interrupted"`), "still working"
	})
	app.open("PreInstall") // a hook that survived the cancel would now go on and install D
	m.restart(n2)
	waitAgentReady(t, n2)
	m.waitHealthy(m.nodes...)
	app.waitServing(30*time.Second, "B", servers...)
	stayOnB("after D was cancelled")
	for _, n := range m.nodes {
		for _, ph := range phasesLogged(n) {
			if strings.HasPrefix(ph, "D/") && ph != "D/Env" && ph != "D/PreInstall" {
				t.Fatalf("%s went on with cancelled D: phase %s", n.name, ph)
			}
		}
	}
	history = finished(t, liveClients(m), "prod")
	if dd, ok := history[d.ID]; !ok || !strings.Contains(dd, `"state":"cancelled"`) {
		t.Fatalf("D after the cancel: %s", dd)
	}

	// With auto rollback, `node deploy --wait` of a release that never turns healthy ends only once the
	// rollback put the servers back on B.
	if _, err := cl.Do(context.Background(), "PUT", "/v1/envs/prod", map[string]any{"strategy": raftfsm.Strategy{Kind: "all", AutoRollback: true}}, nil); err != nil {
		t.Fatal(err)
	}
	app.push(cl, "E", true)
	out, _, code = nodeCLI(t, m, n1, "deploy", "web", "E", "--env", "prod", "--wait", "--timeout", "3m")
	after := servingAll(app, m)
	if code == 0 || !strings.Contains(out, "rolled_back: the servers serve B again") {
		t.Fatalf("deploy E --wait: exit %d\n%s", code, out)
	}
	for _, name := range servers {
		if got := after[name]; versionOf(got) != "B" {
			t.Fatalf("--wait said rolled_back while %s serves %q\n%s", name, got, out)
		}
	}

	// --timeout gives up on a deployment that is stuck, and says it goes on.
	app.push(cl, "F", false)
	app.block("PreInstall")
	start := time.Now()
	out, errOut, code := nodeCLI(t, m, n1, "deploy", "web", "F", "--env", "prod", "--wait", "--timeout", "3s")
	if code == 0 || !strings.Contains(errOut, "after --timeout 3s; it goes on") || time.Since(start) > 30*time.Second {
		t.Fatalf("deploy F --wait --timeout 3s: exit %d after %s\n%s\n%s", code, time.Since(start), out, errOut)
	}
	var ds []raftfsm.Deployment
	if _, err := cl.Get(context.Background(), "/v1/envs/prod/deployments?limit=1", &ds); err != nil || len(ds) != 1 || ds[0].Release != "F" {
		t.Fatalf("latest deployment: %+v %v", ds, err)
	}
	if _, err := cl.Post(context.Background(), "/v1/deployments/"+ds[0].ID+"/cancel", struct{}{}, nil); err != nil {
		t.Fatal(err)
	}
	app.open("PreInstall")
	if _, _, code := nodeCLI(t, m, n1, "deploy", "web", "F", "--env", "prod", "--timeout", "3s"); code == 0 {
		t.Fatal("--timeout without --wait must be refused")
	}

	// A server that makes no progress for the environment's progress deadline is failed with a reason in
	// words, its hook is interrupted, and the deployment rolls back as its strategy says.
	if out, errOut, code := nodeCLI(t, m, n1, "env", "update", "prod", "--progress-deadline", "4s"); code != 0 {
		t.Fatalf("env update --progress-deadline: exit %d\n%s%s", code, out, errOut)
	}
	if out, _, _ := nodeCLI(t, m, n1, "env", "show", "prod"); !strings.Contains(out, "progress deadline:") || !strings.Contains(out, "4s") {
		t.Fatalf("env show does not give the progress deadline:\n%s", out)
	}
	if _, errOut, code := nodeCLI(t, m, n1, "env", "update", "prod", "--progress-deadline", "10ms"); code == 0 || !strings.Contains(errOut, "at least 1s") {
		t.Fatalf("a progress deadline under 1s must be refused: exit %d %s", code, errOut)
	}
	app.push(cl, "G", false)
	app.block("PreInstall")
	gd := app.deploy(cl, deployer.CreateRequest{Release: "G"})
	gd = waitDeployment(t, liveClients(m), gd.ID, 60*time.Second, raftfsm.DeployFailed, raftfsm.DeployRolledBack)
	var reasons []string
	for _, st := range gd.Nodes {
		reasons = append(reasons, st.Error)
	}
	if all := strings.Join(reasons, "\n"); !strings.Contains(all, "web release G on n") || !strings.Contains(all, "no progress for") {
		t.Fatalf("a stalled server's reason: %s", describeDeployment(gd))
	}
	t.Logf("progress deadline: %s", describeDeployment(gd))
	app.open("PreInstall")
	if _, err := cl.Do(context.Background(), "PUT", "/v1/envs/prod", map[string]any{"progress_deadline": ""}, nil); err != nil {
		t.Fatal(err)
	}
	app.waitServing(30*time.Second, "B", servers...)
	if now := servingAll(app, m); fmt.Sprint(now) != fmt.Sprint(after) {
		t.Fatalf("after G stalled in PreInstall the servers serve %v, before %v (the same processes)", now, after)
	}
	if gd.Rollback != "" {
		// The servers serve B before the rollback deployment has heard from all of them: let it end.
		waitDeployment(t, liveClients(m), gd.Rollback, 60*time.Second, raftfsm.DeploySucceeded)
	}

	// The rollback deployment (B again, proving healthy) ends before the next one can start.
	if gd.Rollback != "" {
		waitDeployment(t, liveClients(m), gd.Rollback, 60*time.Second, raftfsm.DeploySucceeded)
	}
	// The next deployment works, and nothing that had finished changed.
	g := app.deploy(cl, deployer.CreateRequest{Release: "F"})
	waitDeployment(t, liveClients(m), g.ID, 90*time.Second, raftfsm.DeploySucceeded)
	app.waitServing(30*time.Second, "F", servers...)
	checkHistory(t, liveClients(m), "prod", history, "at the end")
	checkDeployLogs(t, cl, m, finished(t, liveClients(m), "prod"))
}
