package builder

import (
	"strings"
	"testing"

	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

func planState() *raftfsm.State {
	st := &raftfsm.State{Apps: map[string]*raftfsm.App{}, Builds: map[string]*raftfsm.Build{}}
	st.Apps["web"] = &raftfsm.App{Name: "web"}
	st.Apps["gpu"] = &raftfsm.App{Name: "gpu", BuildCapabilities: []string{"cuda", "linux"}}
	return st
}

func addBuild(st *raftfsm.State, id, app, branch, state, node string, index uint64) {
	st.Builds[id] = &raftfsm.Build{ID: id, App: app, Branch: branch, State: state, Node: node,
		Remote: state == raftfsm.BuildRunning && node != "leader", Meta: raftfsm.Meta{CreateIndex: index}}
}

func TestPlanWithoutBuildServersKeepsBuildsOnTheLeader(t *testing.T) {
	st := planState()
	addBuild(st, "web-1", "web", "main", raftfsm.BuildQueued, "", 5)
	addBuild(st, "web-2", "web", "dev", raftfsm.BuildQueued, "", 3)
	addBuild(st, "web-3", "web", "dev", raftfsm.BuildQueued, "", 7)
	addBuild(st, "gpu-1", "gpu", "main", raftfsm.BuildQueued, "", 4)
	p := PlanBuilds(st, nil)
	if strings.Join(p.Local, ",") != "web-2,web-1" || len(p.Assign) != 0 {
		t.Fatalf("local %v assign %v", p.Local, p.Assign)
	}
	if w := p.Waiting["gpu-1"]; !strings.Contains(w, "capabilities cuda, linux") || !strings.Contains(w, "--tag build=cuda,linux") {
		t.Fatalf("gpu-1 waits for %q", w)
	}
	if w := p.Waiting["web-3"]; !strings.Contains(w, "web-2") {
		t.Fatalf("web-3 waits for %q, want the dev branch's build web-2", w)
	}
}

func TestPlanAssignsLeastBusyMatchingServerWithinSlots(t *testing.T) {
	st := planState()
	servers := BuildServers([]node.Member{
		{Name: "voter", Status: node.StatusAlive},
		{Name: "b-dead", Status: node.StatusDead, Tags: map[string]string{"build": "linux,cuda"}},
		{Name: "b1", Status: node.StatusAlive, Tags: map[string]string{"build": "linux", "build-slots": "2"}},
		{Name: "b2", Status: node.StatusAlive, Tags: map[string]string{"build": "linux, cuda", "build-slots": "1"}},
	})
	if len(servers) != 2 || servers[1].Name != "b2" || strings.Join(servers[1].Caps, ",") != "cuda,linux" || servers[1].Slots != 1 {
		t.Fatalf("build servers %+v", servers)
	}
	addBuild(st, "web-1", "web", "a", raftfsm.BuildRunning, "b1", 1)
	for i, br := range []string{"b", "c", "d", "e"} {
		addBuild(st, "web-"+string(rune('2'+i)), "web", br, raftfsm.BuildQueued, "", uint64(10+i))
	}
	addBuild(st, "gpu-1", "gpu", "main", raftfsm.BuildQueued, "", 9)
	p := PlanBuilds(st, servers)
	got := []string{}
	for _, a := range p.Assign {
		got = append(got, a.Build+"@"+a.Node)
	}
	// gpu-1 comes first (queued first) and only b2 offers cuda; b1 has one slot left after web-1; then both are full.
	if strings.Join(got, " ") != "gpu-1@b2 web-2@b1" {
		t.Fatalf("assigned %v", got)
	}
	if len(p.Local) != 0 {
		t.Fatalf("with build servers nothing runs on the leader: %v", p.Local)
	}
	for _, id := range []string{"web-3", "web-4", "web-5"} {
		if w := p.Waiting[id]; !strings.Contains(w, "all 2 build servers with any capability are busy") {
			t.Fatalf("%s waits for %q", id, w)
		}
	}

	// The least busy server wins: with b1 empty and b2 running one (of two slots), web goes to b1.
	st2 := planState()
	servers[1].Slots = 2
	addBuild(st2, "gpu-1", "gpu", "main", raftfsm.BuildRunning, "b2", 1)
	addBuild(st2, "web-1", "web", "main", raftfsm.BuildQueued, "", 2)
	addBuild(st2, "gpu-2", "gpu", "main", raftfsm.BuildQueued, "", 3)
	p = PlanBuilds(st2, servers)
	if len(p.Assign) != 1 || p.Assign[0] != (Assignment{Build: "web-1", Node: "b1"}) {
		t.Fatalf("assigned %v", p.Assign)
	}
	if !strings.Contains(p.Waiting["gpu-2"], "gpu-1") {
		t.Fatalf("gpu-2 waits for %q", p.Waiting["gpu-2"])
	}
}

func TestPlanCapabilityNoServerHas(t *testing.T) {
	st := planState()
	addBuild(st, "gpu-1", "gpu", "main", raftfsm.BuildQueued, "", 1)
	servers := []BuildServer{{Name: "b1", Caps: []string{"linux"}, Slots: 2}}
	p := PlanBuilds(st, servers)
	w := p.Waiting["gpu-1"]
	if len(p.Assign) != 0 || !strings.Contains(w, "no alive build server has it") || !strings.Contains(w, "b1: linux") {
		t.Fatalf("assign %v, waiting %q", p.Assign, w)
	}
}
