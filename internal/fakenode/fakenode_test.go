package fakenode

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/shoal-ci/shoal/raftfsm"
)

// TestApplyIsTheFSMs: an accepted write is in the state when Apply returns, at the next index, with the record
// as its value; a refused one comes back as the FSM's error and changes nothing; a peer shares the state.
func TestApplyIsTheFSMs(t *testing.T) {
	n := New(t, "a")
	res, err := n.Apply(context.Background(), &raftfsm.AppPut{App: raftfsm.App{Name: "web"}, Create: true})
	if err != nil || res.Index != 1 || len(res.Value) == 0 {
		t.Fatalf("AppPut: %+v, %v", res, err)
	}
	_, err = n.Peer(t, "b").Apply(context.Background(), &raftfsm.AppPut{App: raftfsm.App{Name: "web"}, Create: true})
	if raftfsm.KindOf(err) != raftfsm.KindConflict {
		t.Fatalf("creating web twice: %v, want a conflict", err)
	}
	var apps int
	n.FSM().Read(func(s *raftfsm.State) { apps = len(s.Apps) })
	if apps != 1 || n.FSM().Index() != 2 {
		t.Fatalf("%d apps at index %d, want 1 at 2", apps, n.FSM().Index())
	}
	if w := n.Writes(); len(w) != 2 || w[0].Err != nil || w[1].Err == nil {
		t.Fatalf("writes %+v", w)
	}
}

// TestLeadRunsTheHooksUnderTheTerm: Lead commits the epoch before the hooks start with its term, and Unlead
// ends their context and waits for them.
func TestLeadRunsTheHooksUnderTheTerm(t *testing.T) {
	n := New(t, "a")
	var ran, ended atomic.Int64
	n.OnLeader(func(ctx context.Context, term uint64) {
		var recorded uint64
		n.FSM().Read(func(s *raftfsm.State) { recorded = s.Term })
		if recorded == term {
			ran.Add(1)
		}
		<-ctx.Done()
		ended.Add(1)
	})
	n.Lead(t, 4)
	if !n.IsLeader() {
		t.Fatal("not leader after Lead")
	}
	n.Unlead()
	if n.IsLeader() || ran.Load() != 1 || ended.Load() != 1 {
		t.Fatalf("after Unlead: leader %v, hook ran with its term %d times, ended %d times", n.IsLeader(), ran.Load(), ended.Load())
	}
}
