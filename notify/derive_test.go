package notify

import (
	"slices"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

// The events a record implies depend only on its state now: a leader that saw none of the steps still derives
// all of them, in order; records not changed since the cursor are skipped.
func TestDerive(t *testing.T) {
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	s := raftfsm.NewState()
	s.Builds["web-1"] = &raftfsm.Build{ID: "web-1", App: "web", State: raftfsm.BuildFailed, Attempt: 2, Meta: raftfsm.Meta{ModifyIndex: 10}}
	s.Builds["web-2"] = &raftfsm.Build{ID: "web-2", App: "web", State: raftfsm.BuildQueued, Meta: raftfsm.Meta{ModifyIndex: 11}}
	s.Builds["web-3"] = &raftfsm.Build{ID: "web-3", App: "web", State: raftfsm.BuildSucceeded, Attempt: 1, Meta: raftfsm.Meta{ModifyIndex: 4}}
	s.Deploys["d1"] = &raftfsm.Deployment{ID: "d1", App: "web", Env: "prod", State: raftfsm.DeployRolledBack, ApprovedBy: "alice", Meta: raftfsm.Meta{CreateIndex: 12, ModifyIndex: 12}}
	s.Deploys["d2"] = &raftfsm.Deployment{ID: "d2", App: "web", Env: "prod", State: raftfsm.DeployCancelled, Meta: raftfsm.Meta{CreateIndex: 13, ModifyIndex: 13}}
	s.Deploys["d3"] = &raftfsm.Deployment{ID: "d3", App: "web", Env: "prod", State: raftfsm.DeployWaiting, Meta: raftfsm.Meta{CreateIndex: 14, ModifyIndex: 14}}
	s.Index = 14
	s.Reindex() // the test edits the maps by hand
	var got []string
	for _, ev := range derive(s, 5, "http://d/ui/", now) {
		got = append(got, ev.Key+" "+ev.Name)
		if ev.At != now || ev.URL == "" {
			t.Fatalf("%s: at %v, url %q", ev.Key, ev.At, ev.URL)
		}
	}
	want := []string{
		"build:web-1:started:2 build.started", "build:web-1:failed build.failed",
		"deploy:d1:approval approval.waiting", "deploy:d1:started deployment.started", "deploy:d1:rolled_back deployment.rolled_back",
		"deploy:d3:approval approval.waiting",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("derived\n%v\nwant\n%v", got, want)
	}
}
