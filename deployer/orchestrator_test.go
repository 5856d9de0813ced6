package deployer

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

func TestBatches(t *testing.T) {
	servers := []string{"a", "b", "c", "d", "e"}
	for _, tc := range []struct {
		st   raftfsm.Strategy
		want string
	}{
		{raftfsm.Strategy{Kind: "all"}, "[[a b c d e]]"},
		{raftfsm.Strategy{}, "[[a b c d e]]"},
		{raftfsm.Strategy{Kind: "rolling"}, "[[a] [b] [c] [d] [e]]"},
		{raftfsm.Strategy{Kind: "rolling", BatchSize: 2}, "[[a b] [c d] [e]]"},
		{raftfsm.Strategy{Kind: "rolling", BatchPercent: 40}, "[[a b] [c d] [e]]"},
		{raftfsm.Strategy{Kind: "rolling", BatchPercent: 1}, "[[a] [b] [c] [d] [e]]"},
		{raftfsm.Strategy{Kind: "rolling", BatchSize: 9}, "[[a b c d e]]"},
		// min_healthy caps the batch: 4 must stay out of it.
		{raftfsm.Strategy{Kind: "rolling", BatchSize: 3, MinHealthy: 4}, "[[a] [b] [c] [d] [e]]"},
		{raftfsm.Strategy{Kind: "all", MinHealthy: 2}, "[[a b c] [d e]]"},
		// An impossible min_healthy still makes progress, one server at a time.
		{raftfsm.Strategy{Kind: "all", MinHealthy: 9}, "[[a] [b] [c] [d] [e]]"},
	} {
		if got := fmt.Sprint(Batches(servers, tc.st)); got != tc.want {
			t.Errorf("Batches(%+v) = %s, want %s", tc.st, got, tc.want)
		}
	}
	if got := Batches(nil, raftfsm.Strategy{Kind: "rolling"}); got != nil {
		t.Errorf("no servers: %v", got)
	}
}

func TestEnvServers(t *testing.T) {
	e := &raftfsm.Env{Servers: []string{"db1"}, Tags: map[string]string{"role": "web", "dc": "x"}}
	members := []node.Member{
		{Name: "db1", Status: node.StatusAlive},
		{Name: "w1", Status: node.StatusAlive, Tags: map[string]string{"role": "web", "dc": "x"}},
		{Name: "w2", Status: node.StatusSuspect, Tags: map[string]string{"role": "web", "dc": "x", "extra": "1"}},
		{Name: "w3", Status: node.StatusDead, Tags: map[string]string{"role": "web", "dc": "x"}},
		{Name: "w4", Status: node.StatusAlive, Tags: map[string]string{"role": "web"}},
	}
	if got := EnvServers(e, members); !slices.Equal(got, []string{"db1", "w1", "w2"}) {
		t.Fatalf("EnvServers = %v", got)
	}
	if InEnv(&raftfsm.Env{}, "x", map[string]string{"a": "b"}) {
		t.Fatal("an environment without servers or tags selects nobody")
	}
}

// planFixture builds states for the pure rules.
type planFixture struct {
	s   *raftfsm.State
	idx uint64
}

func newPlanFixture() *planFixture {
	f := &planFixture{s: raftfsm.NewState()}
	f.s.Apps["web"] = &raftfsm.App{Name: "web", Branch: "main"}
	f.s.Envs["prod"] = &raftfsm.Env{Name: "prod", App: "web", Tags: map[string]string{"role": "web"}, Desired: "v1", Stable: "v1",
		Strategy: raftfsm.Strategy{Kind: "rolling", BatchSize: 1}}
	f.release("v1")
	return f
}

func (f *planFixture) next() uint64 { f.idx++; return f.idx }

func (f *planFixture) release(v string) *raftfsm.Release {
	r := &raftfsm.Release{App: "web", Version: v, Branch: "main", Digest: strings.Repeat("a", 64), Meta: raftfsm.Meta{CreateIndex: f.next()}}
	f.s.Releases[raftfsm.ReleaseKey("web", v)] = r
	return r
}

func (f *planFixture) deploy(kind, release, state string, batches [][]string, batch int) *raftfsm.Deployment {
	d := &raftfsm.Deployment{ID: fmt.Sprintf("d%d", f.idx+1), Kind: kind, App: "web", Env: "prod", Release: release, State: state,
		Strategy: f.s.Envs["prod"].Strategy, Batches: batches, Batch: batch, Nodes: map[string]*raftfsm.NodeStatus{},
		CreatedAt: time.Unix(1900, 0), Meta: raftfsm.Meta{CreateIndex: f.next()}}
	f.s.Deploys[d.ID] = d
	return d
}

func status(d *raftfsm.Deployment, node, state string) {
	d.Nodes[node] = &raftfsm.NodeStatus{State: state, Error: "boom on " + node}
}

func plannerAt(now time.Time, members ...node.Member) *planner {
	return &planner{members: memberViews(members), all: members, now: now, deadAfter: time.Minute}
}

func aliveMembers(names ...string) []node.Member {
	var out []node.Member
	for _, n := range names {
		out = append(out, node.Member{Name: n, Status: node.StatusAlive, Tags: map[string]string{"role": "web"}, Since: time.Unix(0, 0)})
	}
	return out
}

// commands returns the command types of actions, for comparing plans.
func commands(acts []action) string {
	var out []string
	for _, a := range acts {
		switch c := a.cmd.(type) {
		case *raftfsm.DeployUpdate:
			s := fmt.Sprintf("update %s %s batch=%d", c.ID, c.State, c.Batch)
			if c.SetDesired != "" {
				s += " desired=" + c.SetDesired
			}
			if c.Rollback != nil {
				s += fmt.Sprintf(" +rollback(%s %s by=%s)", c.Rollback.Kind, c.Rollback.Release, c.Rollback.By)
			}
			out = append(out, s)
		case *raftfsm.DeployCreate:
			out = append(out, fmt.Sprintf("create %s %s %s by=%s", c.Deployment.Env, c.Deployment.Kind, c.Deployment.Release, c.Deployment.By))
		case *raftfsm.EnvPin:
			out = append(out, fmt.Sprintf("pin %s %v", c.Name, c.Pinned))
		case *raftfsm.NodeStatusSet:
			out = append(out, fmt.Sprintf("status %s %s %s", c.ID, c.Node, c.Status.State))
		default:
			out = append(out, fmt.Sprintf("%T", c))
		}
	}
	return strings.Join(out, "; ")
}

func TestPlanAdvancesBatches(t *testing.T) {
	f := newPlanFixture()
	f.release("v2")
	p := plannerAt(time.Unix(2000, 0), aliveMembers("a", "b", "c")...)
	d := f.deploy(raftfsm.DeployKindDeploy, "v2", raftfsm.DeployPending, [][]string{{"a"}, {"b"}, {"c"}}, 0)
	if got := commands(p.plan(f.s)); got != "update d3 running batch=0" {
		t.Fatalf("pending: %s", got)
	}
	d.State = raftfsm.DeployRunning
	if got := commands(p.plan(f.s)); got != "" {
		t.Fatalf("batch 1 working: %s", got)
	}
	status(d, "a", raftfsm.NodeStarting)
	if got := commands(p.plan(f.s)); got != "" {
		t.Fatalf("batch 1 still starting: %s", got)
	}
	status(d, "a", raftfsm.NodeHealthy)
	if got := commands(p.plan(f.s)); got != "update d3 running batch=1" {
		t.Fatalf("batch 1 healthy: %s", got)
	}
	d.Batch = 2
	status(d, "b", raftfsm.NodeHealthy)
	status(d, "c", raftfsm.NodeHealthy)
	if got := commands(p.plan(f.s)); got != "update d3 succeeded batch=2 desired=v2" {
		t.Fatalf("last batch healthy: %s", got)
	}
}

func TestPlanAbortsAndRollsBack(t *testing.T) {
	f := newPlanFixture()
	f.release("v2")
	f.s.Envs["prod"].Strategy.AutoRollback = true
	p := plannerAt(time.Unix(2000, 0), aliveMembers("a", "b", "c")...)
	d := f.deploy(raftfsm.DeployKindDeploy, "v2", raftfsm.DeployRunning, [][]string{{"a"}, {"b"}, {"c"}}, 0)
	status(d, "a", raftfsm.NodeFailed)
	got := commands(p.plan(f.s))
	want := "pin prod true; update d3 rolled_back batch=0 +rollback(deploy v1 by=auto-rollback of d3)"
	if got != want {
		t.Fatalf("plan:\n%s\nwant:\n%s", got, want)
	}
	acts := p.plan(f.s)
	u := acts[1].cmd.(*raftfsm.DeployUpdate)
	if !strings.Contains(u.Error, "1 of 1 servers failed") || !strings.Contains(u.Error, "a: boom on a") {
		t.Fatalf("the error says who failed and why: %q", u.Error)
	}
	rb := *u.Rollback
	if !strings.Contains(u.Error, "rolling back to v1 in deployment "+rb.ID) {
		t.Fatalf("the error names the rollback: %q", u.Error)
	}
	if rb.Strategy.Kind != "all" || fmt.Sprint(rb.Batches) != "[[a b c]]" {
		t.Fatalf("the rollback goes to every server at once: %+v", rb)
	}

	// Within abort_after, a failure is tolerated and the rollout goes on.
	d.Strategy.AbortAfter = 1
	if got := commands(p.plan(f.s)); got != "update d3 running batch=1" {
		t.Fatalf("tolerated failure: %s", got)
	}
	// Without auto rollback, or without a stable release, the deployment just fails.
	d.Strategy.AbortAfter = 0
	d.Strategy.AutoRollback = false
	if got := commands(p.plan(f.s)); got != "update d3 failed batch=0" {
		t.Fatalf("no auto rollback: %s", got)
	}
	d.Strategy.AutoRollback = true
	f.s.Envs["prod"].Stable = ""
	if got := commands(p.plan(f.s)); got != "update d3 failed batch=0" {
		t.Fatalf("no stable release: %s", got)
	}
}

func TestPlanServerDown(t *testing.T) {
	f := newPlanFixture()
	f.release("v2")
	members := aliveMembers("a", "b")
	members = append(members, node.Member{Name: "c", Status: node.StatusDead, Since: time.Unix(1990, 0)})
	d := f.deploy(raftfsm.DeployKindDeploy, "v2", raftfsm.DeployRunning, [][]string{{"a", "b", "c"}}, 0)
	d.Strategy.AbortAfter = 1
	status(d, "a", raftfsm.NodeHealthy)
	status(d, "b", raftfsm.NodeHealthy)
	// Down for 10 s: wait.
	if got := commands(plannerAt(time.Unix(2000, 0), members...).plan(f.s)); got != "" {
		t.Fatalf("briefly down: %s", got)
	}
	// Down past deadAfter: counted as failed (and tolerated here), so the deployment ends.
	got := commands(plannerAt(time.Unix(2100, 0), members...).plan(f.s))
	if got != "status d3 c failed; update d3 succeeded batch=0 desired=v2" {
		t.Fatalf("down for good: %s", got)
	}
}

func TestPlanMinHealthy(t *testing.T) {
	f := newPlanFixture()
	f.release("v2")
	d := f.deploy(raftfsm.DeployKindDeploy, "v2", raftfsm.DeployRunning, [][]string{{"a"}, {"b"}, {"c"}, {"d"}}, 0)
	d.Strategy = raftfsm.Strategy{Kind: "rolling", BatchSize: 1, MinHealthy: 3, AbortAfter: 1}
	status(d, "a", raftfsm.NodeFailed)
	// a failed (tolerated); starting b would leave c and d healthy: 2 < 3.
	got := commands(plannerAt(time.Unix(2000, 0), aliveMembers("a", "b", "c", "d")...).plan(f.s))
	if got != "update d3 failed batch=0" {
		t.Fatalf("min healthy: %s", got)
	}
}

func TestPlanAutoDeploy(t *testing.T) {
	f := newPlanFixture()
	e := f.s.Envs["prod"]
	e.AutoDeploy = true
	p := plannerAt(time.Unix(2000, 0), aliveMembers("a")...)
	if got := commands(p.plan(f.s)); got != "" {
		t.Fatalf("v1 is already desired: %s", got)
	}
	f.release("v2")
	if got := commands(p.plan(f.s)); got != "create prod deploy v2 by=auto-deploy" {
		t.Fatalf("new release: %s", got)
	}
	e.Pinned = true
	if got := commands(p.plan(f.s)); got != "" {
		t.Fatalf("pinned: %s", got)
	}
	e.Pinned = false
	// A release of another branch is not this app's to deploy.
	r := f.release("v3")
	r.Branch = "feature"
	if got := commands(p.plan(f.s)); got != "create prod deploy v2 by=auto-deploy" {
		t.Fatalf("other branch: %s", got)
	}
	// A release that was deployed once (and failed) is not tried again by itself.
	f.deploy(raftfsm.DeployKindDeploy, "v2", raftfsm.DeployRolledBack, [][]string{{"a"}}, 0)
	if got := commands(p.plan(f.s)); got != "" {
		t.Fatalf("already tried: %s", got)
	}
}

func TestNodesOnRelease(t *testing.T) {
	f := newPlanFixture()
	a := f.deploy(raftfsm.DeployKindDeploy, "v1", raftfsm.DeploySucceeded, [][]string{{"a", "b"}}, 0)
	status(a, "a", raftfsm.NodeHealthy)
	status(a, "b", raftfsm.NodeHealthy)
	f.release("v2")
	b := f.deploy(raftfsm.DeployKindDeploy, "v2", raftfsm.DeployRunning, [][]string{{"a"}, {"b"}}, 0)
	status(b, "a", raftfsm.NodeHealthy)
	got := nodesOnRelease(f.s)
	if got[[3]string{"web", "prod", "v1"}] != 1 || got[[3]string{"web", "prod", "v2"}] != 1 || len(got) != 2 {
		t.Fatalf("nodes on release: %v", got)
	}
	// Failed: a went back to the stable release.
	b.State = raftfsm.DeployFailed
	got = nodesOnRelease(f.s)
	if got[[3]string{"web", "prod", "v1"}] != 2 || len(got) != 1 {
		t.Fatalf("nodes on release after a failure: %v", got)
	}
}
