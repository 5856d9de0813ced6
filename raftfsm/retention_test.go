package raftfsm

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// TestPrunePlan: the leader's plan keeps the newest N of each app and environment and everything an environment
// needs, Apply takes it, refuses a prune of a needed record without changing anything, and the log replays to
// the same state.
func TestPrunePlan(t *testing.T) {
	a := newApplier(t)
	a.ok(&AppPut{App: App{Name: "web"}, Create: true})
	a.ok(&EnvPut{Env: Env{Name: "prod", App: "web", Servers: []string{"n1"}}, Create: true})
	a.ok(&LeaderEpoch{Term: 1, Node: "n1"})
	for i := 1; i <= 6; i++ {
		id := fmt.Sprintf("web-%d", i)
		a.ok(&BuildQueue{App: "web", Commit: fmt.Sprintf("c%d", i), Branch: "main", Trigger: "push", At: t0})
		a.ok(&BuildStart{ID: id, Term: 1, Node: "n1", At: t0})
		a.ok(&BuildFinish{ID: id, Term: 1, State: BuildSucceeded, Release: &Release{Digest: "d", Size: 1, PieceSize: 1}, At: t0})
	}
	// v2 then v3 deployed, a failed deployment of v4, and v5 deployed (so v3 is prod's rollback target).
	for i, v := range []string{"v2", "v3", "v4", "v5"} {
		id := fmt.Sprintf("d%d", i)
		a.ok(&DeployCreate{Deployment: Deployment{ID: id, Env: "prod", Release: v, Batches: [][]string{{"n1"}}, CreatedAt: t0}})
		a.ok(&DeployUpdate{ID: id, State: DeployRunning, At: t0})
		if v == "v4" {
			a.ok(&DeployUpdate{ID: id, State: DeployFailed, At: t0})
			continue
		}
		a.ok(&DeployUpdate{ID: id, State: DeploySucceeded, SetDesired: v, At: t0})
	}
	a.ok(&MemberLeave{Name: "old", At: t0})
	a.ok(&MemberLeave{Name: "recent", At: t0.Add(29 * 24 * time.Hour)})
	a.rejected(&RetentionSet{Retention: Retention{Builds: -1}}, KindBadRequest)
	a.ok(&RetentionSet{Retention: Retention{Builds: 1, Releases: 1, Deployments: 1, Apps: map[string]AppRetention{"other": {Builds: 9}}}})

	// A prune of what prod needs is refused whole.
	a.rejected(&Prune{Releases: []string{"web/v1", ReleaseKey("web", "v5")}}, KindConflict) // desired
	a.rejected(&Prune{Releases: []string{ReleaseKey("web", "v3")}}, KindConflict)           // rollback target
	a.rejected(&Prune{Deploys: []string{"d3"}}, KindConflict)                               // latest
	a.rejected(&Prune{Builds: []string{"web-5"}}, KindConflict)                             // its release v5 stays

	plan := a.f.state.PrunePlan(t0.Add(31 * 24 * time.Hour))
	if plan == nil {
		t.Fatal("nothing to prune")
	}
	// v6 is the newest (auto deploy's target), v5 desired and stable, v3 what a rollback goes back to.
	if got := fmt.Sprint(plan.Releases); got != "[web/v1 web/v2 web/v4]" {
		t.Fatalf("releases pruned %s", got)
	}
	if got := fmt.Sprint(plan.Builds); got != "[web-1 web-2 web-4]" {
		t.Fatalf("builds pruned %s", got)
	}
	// d3 is the latest, the latest succeeded, and the one prod's rollback target (its previous release) comes from.
	if got := fmt.Sprint(plan.Deploys); got != "[d0 d1 d2]" {
		t.Fatalf("deployments pruned %s", got)
	}
	if got := fmt.Sprint(plan.Departed); got != "[old]" {
		t.Fatalf("departed pruned %s", got)
	}
	a.ok(plan)
	if p := a.f.state.PrunePlan(t0.Add(31 * 24 * time.Hour)); p != nil {
		t.Fatalf("a second plan right after the first prunes %+v", p)
	}
	e := a.f.state.Envs["prod"]
	if e.Desired != "v5" || a.f.state.PreviousRelease(e) != "v3" {
		t.Fatalf("prod now desired %s, rolls back to %q", e.Desired, a.f.state.PreviousRelease(e))
	}
	// The builder's logs follow the builds: a pruned build's log may go.
	if !a.f.state.BuildGone("web-1") || a.f.state.BuildGone("web-6") || a.f.state.BuildGone("web-7") || !a.f.state.BuildGone("gone-1") {
		t.Fatal("BuildGone is wrong")
	}
	replayEquals(t, a)
}

// TestPruneProperty runs random sequences in which leaders prune with small limits (runRandom's cases 19-21):
// every accepted prune keeps what environments need (checked in applier.apply), and the log replays the same.
func TestPruneProperty(t *testing.T) {
	accepted := 0
	for seed := uint64(100); seed < 140; seed++ {
		a := newApplier(t)
		runRandom(a, rand.New(rand.NewPCG(seed, 3)), 400)
		for _, l := range a.log {
			if l.Data[1] == byte(CmdPrune) && len(l.Data) > 4 {
				accepted++
			}
		}
		replayEquals(t, a)
	}
	if accepted == 0 {
		t.Fatal("no random sequence pruned anything: the property is not exercised")
	}
}

func replayEquals(t *testing.T, a *applier) {
	t.Helper()
	want, _ := a.f.MarshalState()
	replay := New()
	for _, l := range a.log {
		replay.Apply(l)
	}
	if got, _ := replay.MarshalState(); !bytes.Equal(want, got) {
		t.Fatal("the log replays to a different state")
	}
}
