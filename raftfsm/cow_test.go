package raftfsm

import (
	"bytes"
	"io"
	"testing"
)

// TestSnapshotIsAView applies every kind of command that changes a record, each right after a snapshot and
// before that snapshot is encoded: the snapshot must hold the state of its own index, so no command may change a
// record in place (cow.go).
func TestSnapshotIsAView(t *testing.T) {
	a := newApplier(t)
	rel := &Release{Digest: "d", Size: 1, PieceSize: 1}
	steps := []Command{
		&AppPut{App: App{Name: "web"}, Create: true},
		&EnvPut{Env: Env{Name: "prod", App: "web", Servers: []string{"n1"}}, Create: true},
		&EnvPin{Name: "prod", Pinned: true, Reason: "test"},
		&LeaderEpoch{Term: 1, Node: "n1"},
		&BuildQueue{App: "web", Commit: "c1", Branch: "main", Trigger: "push", Delivery: "x1", At: t0},
		&BuildQueue{App: "web", Commit: "c2", Branch: "main", Trigger: "push", Delivery: "x2", At: t0},
		&BuildStart{ID: "web-1", Term: 1, Node: "n1", At: t0},
		&BuildStart{ID: "web-2", Term: 1, Node: "n1", At: t0},
		&BuildCancel{ID: "web-2", At: t0},
		&BuildFinish{ID: "web-1", Term: 1, State: BuildSucceeded, Release: rel, At: t0},
		&LeaderEpoch{Term: 2, Node: "n2"},
		&ReleaseCreate{Release: Release{App: "web", Digest: "d", Size: 1, PieceSize: 1}},
		&ReleaseHolders{App: "web", Version: "v1", Node: "n1"},
		&ReleaseHolders{App: "web", Version: "v1", Node: "n2"},
		&ReleaseDrop{App: "web", Version: "v1", Node: "n2"},
		&ReleaseDrop{Node: "n1"},
		&DeployCreate{Deployment: Deployment{ID: "d1", Env: "prod", Release: "v1", Batches: [][]string{{"n1"}}, CreatedAt: t0}},
		&DeployUpdate{ID: "d1", State: DeployRunning, At: t0},
		&NodeStatusSet{ID: "d1", Node: "n1", Status: NodeStatus{State: NodeHealthy, UpdatedAt: t0}},
		&DeployUpdate{ID: "d1", State: DeploySucceeded, SetDesired: "v1", At: t0},
		&DeployCreate{Deployment: Deployment{ID: "d2", Env: "prod", Release: "v2", Batches: [][]string{{"n1"}}, CreatedAt: t0}},
		&DeployUpdate{ID: "d2", State: DeployRunning, At: t0},
		&DeployUpdate{ID: "d2", State: DeployRolledBack, At: t0,
			Rollback: &Deployment{ID: "d3", Env: "prod", Release: "v1", Batches: [][]string{{"n1"}}, CreatedAt: t0}},
		&MemberLeave{Name: "n3", At: t0},
	}
	for _, c := range steps {
		before, _ := a.f.MarshalState()
		snap, err := a.f.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		a.ok(c)
		sink := &memSink{}
		if err := snap.Persist(sink); err != nil {
			t.Fatal(err)
		}
		g := New()
		if err := g.Restore(io.NopCloser(&sink.buf)); err != nil {
			t.Fatal(err)
		}
		if got, _ := g.MarshalState(); !bytes.Equal(got, before) {
			t.Fatalf("%T changed a record a snapshot taken before it was encoding:\nwant %s\n got %s", c, before, got)
		}
	}
}
