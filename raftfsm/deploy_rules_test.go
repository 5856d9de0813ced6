package raftfsm

import (
	"testing"
	"time"
)

// deployFixture is an app with an environment, two releases and a running deployment d1 of v2 in two batches,
// the first one started.
func deployFixture(t *testing.T) *applier {
	a := newApplier(t)
	a.ok(&AppPut{App: App{Name: "web"}, Create: true})
	a.ok(&EnvPut{Env: Env{Name: "prod", App: "web"}, Create: true})
	a.ok(&ReleaseCreate{Release: Release{App: "web", Version: "v1", Digest: "d1", Size: 1, PieceSize: 1}})
	a.ok(&ReleaseCreate{Release: Release{App: "web", Version: "v2", Digest: "d2", Size: 1, PieceSize: 1}})
	a.ok(&DeployCreate{Deployment: Deployment{ID: "d0", Env: "prod", Release: "v1", Batches: [][]string{{"a", "b", "c"}}}})
	a.ok(&DeployUpdate{ID: "d0", State: DeploySucceeded, SetDesired: "v1", At: time.Unix(10, 0)})
	a.ok(&DeployCreate{Deployment: Deployment{ID: "d1", Env: "prod", Release: "v2", Batches: [][]string{{"a"}, {"b", "c"}}}})
	return a
}

// TestNodeStatusOnlyWhileRunning: a server reports only into a running deployment, only when its batch has
// started, and never after its failure; a finished deployment's rows never change. Each refusal is a result.
func TestNodeStatusOnlyWhileRunning(t *testing.T) {
	a := deployFixture(t)
	st := NodeStatus{State: NodeDownloading, Phase: "Fetch"}
	a.rejected(&NodeStatusSet{ID: "d1", Node: "a", Status: st}, KindConflict) // pending: not started
	started := time.Unix(100, 0)
	d := as[Deployment](t, a.ok(&DeployUpdate{ID: "d1", State: DeployRunning, Batch: 0, At: started, From: []string{DeployPending}}))
	if !d.BatchStartedAt.Equal(started) {
		t.Fatalf("batch start not recorded: %+v", d)
	}
	a.ok(&NodeStatusSet{ID: "d1", Node: "a", Status: st})
	a.rejected(&NodeStatusSet{ID: "d1", Node: "b", Status: st}, KindConflict) // batch 2 has not started
	a.rejected(&NodeStatusSet{ID: "d1", Node: "a", Status: NodeStatus{State: "waiting"}}, KindBadRequest)
	a.rejected(&NodeStatusSet{ID: "nope", Node: "a", Status: st}, KindNotFound)
	a.ok(&NodeStatusSet{ID: "d1", Node: "a", Status: NodeStatus{State: NodeFailed, Error: "no progress"}})
	a.rejected(&NodeStatusSet{ID: "d1", Node: "a", Status: NodeStatus{State: NodeHealthy}}, KindConflict)

	next := time.Unix(200, 0)
	d = as[Deployment](t, a.ok(&DeployUpdate{ID: "d1", State: DeployRunning, Batch: 1, At: next, From: []string{DeployRunning}}))
	if !d.BatchStartedAt.Equal(next) {
		t.Fatalf("second batch start not recorded: %+v", d)
	}
	a.ok(&NodeStatusSet{ID: "d1", Node: "b", Status: st})
	a.ok(&DeployUpdate{ID: "d1", State: DeployFailed, Batch: 1, At: time.Unix(300, 0)})
	// Ended: nothing about it changes any more, rows included.
	a.rejected(&NodeStatusSet{ID: "d1", Node: "b", Status: NodeStatus{State: NodeHealthy}}, KindConflict)
	a.rejected(&NodeStatusSet{ID: "d1", Node: "c", Status: st}, KindConflict)
	a.rejected(&DeployUpdate{ID: "d1", State: DeploySucceeded, Batch: 1}, KindConflict)
	a.rejected(&NodeStatusSet{ID: "d0", Node: "a", Status: NodeStatus{State: NodeHealthy}}, KindConflict)
}

// TestRollbackInOneEntry: ending a deployment rolled_back creates its rollback deployment in the same entry,
// and links the two; a rollback that cannot be created refuses the whole entry.
func TestRollbackInOneEntry(t *testing.T) {
	a := deployFixture(t)
	a.ok(&DeployUpdate{ID: "d1", State: DeployRunning, Batch: 0, At: time.Unix(100, 0)})
	rb := Deployment{ID: "rb", Env: "prod", Release: "v1", Batches: [][]string{{"a", "b", "c"}}, By: "auto-rollback of d1"}
	bad := rb
	bad.Release = "v9"
	a.rejected(&DeployUpdate{ID: "d1", State: DeployRolledBack, Rollback: &bad, From: []string{DeployRunning}}, KindNotFound)
	a.rejected(&DeployUpdate{ID: "d1", State: DeployFailed, Rollback: &rb}, KindBadRequest)
	dup := rb
	dup.ID = "d0"
	a.rejected(&DeployUpdate{ID: "d1", State: DeployRolledBack, Rollback: &dup}, KindConflict)

	d := as[Deployment](t, a.ok(&DeployUpdate{ID: "d1", State: DeployRolledBack, Rollback: &rb, At: time.Unix(200, 0), From: []string{DeployRunning}}))
	if d.State != DeployRolledBack || d.Rollback != "rb" || d.EndedAt.IsZero() {
		t.Fatalf("rolled back deployment: %+v", d)
	}
	var got *Deployment
	a.f.Read(func(s *State) { c := *s.Deploys["rb"]; got = &c })
	if got.RollbackOf != "d1" || got.State != DeployPending || got.Previous != "v1" || got.CreateIndex != d.ModifyIndex {
		t.Fatalf("rollback deployment: %+v", got)
	}
	// It is the environment's one deployment in progress.
	a.rejected(&DeployCreate{Deployment: Deployment{ID: "d2", Env: "prod", Release: "v2"}}, KindConflict)
}

func TestEnvProgressDeadline(t *testing.T) {
	a := newApplier(t)
	a.ok(&AppPut{App: App{Name: "web"}, Create: true})
	a.rejected(&EnvPut{Env: Env{Name: "prod", App: "web", ProgressDeadline: Duration(-time.Second)}, Create: true}, KindBadRequest)
	a.rejected(&EnvPut{Env: Env{Name: "prod", App: "web", ProgressDeadline: Duration(time.Millisecond)}, Create: true}, KindBadRequest)
	e := as[Env](t, a.ok(&EnvPut{Env: Env{Name: "prod", App: "web", ProgressDeadline: Duration(90 * time.Second)}, Create: true}))
	if time.Duration(e.ProgressDeadline) != 90*time.Second {
		t.Fatalf("progress deadline: %+v", e)
	}
}
