package raftfsm

import (
	"bytes"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// fuzzSetup is a state with something of every kind for a fuzzed command to act on.
func fuzzSetup() []Command {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	return []Command{
		&MeshInit{Mesh: Mesh{Name: "m", CACert: "c", CAKey: "k", GossipKey: make([]byte, 32)}},
		&TokenCreate{Token: Token{ID: "t1", SecretHash: "h", Role: RoleAdmin}},
		&AppPut{App: App{Name: "web", Repo: "/srv/web.git"}, Create: true},
		&EnvPut{Env: Env{Name: "prod", App: "web", Servers: []string{"n1", "n2"}}, Create: true},
		&LeaderEpoch{Term: 2, Node: "n1"},
		&BuildQueue{App: "web", Commit: "c1", Branch: "main", Trigger: "push", Delivery: "d1", At: t0},
		&BuildStart{ID: "web-1", Term: 2, Node: "n1", At: t0},
		&BuildFinish{ID: "web-1", Term: 2, State: BuildSucceeded, At: t0,
			Release: &Release{Digest: "d", Size: 1, PieceSize: 1, Holders: []string{"n1"}}},
		&DeployCreate{Deployment: Deployment{ID: "dep1", Env: "prod", Release: "v1", State: DeployWaiting}},
		&PipelinePut{Pipeline: Pipeline{App: "web", Stages: []PipelineStage{{Env: "prod"}}}},
	}
}

// fuzzFSM returns an FSM with fuzzSetup applied and the next log index.
func fuzzFSM(t *testing.T) (*FSM, uint64) {
	f := New()
	var i uint64
	for _, c := range fuzzSetup() {
		data, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		i++
		if r := f.Apply(&raft.Log{Index: i, Data: data}).(*Result); r.Err != nil {
			t.Fatalf("setup %T: %v", c, r.Err)
		}
	}
	return f, i + 1
}

// FuzzCommandDecodeApply feeds arbitrary log entries to the state machine. An entry that does not decode is an
// error (Apply stops the node on it, by design); one that decodes must apply without a panic, give the same
// result and state on two replicas, and change nothing but the index when it is rejected.
func FuzzCommandDecodeApply(f *testing.F) {
	for _, c := range append(fuzzSetup(),
		&DeployUpdate{ID: "dep1", State: DeployPending, From: []string{DeployWaiting}},
		&NodeStatusSet{ID: "dep1", Node: "n1"},
		&ReleaseHolders{App: "web", Version: "v1", Node: "n2"},
		&EnvPin{Name: "prod", Pinned: true},
		&BuildCancel{ID: "web-1"},
		&MemberLeave{Name: "n2"}, &MemberRejoin{Name: "n2"},
		&AppDelete{Name: "web"}, &EnvDelete{Name: "prod"}, &TokenDelete{ID: "t1"}, &JoinTokenDelete{ID: "j"},
		&ReleaseCreate{Release: Release{App: "web", Version: "v9", Digest: "d", Size: 1, PieceSize: 1}},
	) {
		data, err := Encode(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := Decode(data); err != nil {
			return
		}
		a, next := fuzzFSM(t)
		b, _ := fuzzFSM(t)
		before, _ := a.MarshalState()
		ra := a.Apply(&raft.Log{Index: next, Data: data}).(*Result)
		rb := b.Apply(&raft.Log{Index: next, Data: data}).(*Result)
		sa, _ := a.MarshalState()
		sb, _ := b.MarshalState()
		if !bytes.Equal(sa, sb) || !bytes.Equal(ra.Value, rb.Value) || (ra.Err == nil) != (rb.Err == nil) {
			t.Fatalf("two replicas differ after the same entry %q", data)
		}
		if ra.Err != nil && !bytes.Equal(stripIndex(before), stripIndex(sa)) {
			t.Fatalf("entry %q was rejected (%v) but changed the state", data, ra.Err)
		}
	})
}
