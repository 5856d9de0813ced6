package deployer

import (
	"testing"

	"github.com/shoal-ci/shoal/raftfsm"
)

// Auto deploy takes the newest release of the app's branch that is not from a pull request, even when a pull
// request's release (from a fork's branch of the same name) is newer.
func TestLatestReleaseSkipsPullRequests(t *testing.T) {
	s := &raftfsm.State{Apps: map[string]*raftfsm.App{"web": {Name: "web", Branch: "main"}}, Releases: map[string]*raftfsm.Release{}}
	add := func(version string, pr int, index uint64) {
		s.Releases[raftfsm.ReleaseKey("web", version)] = &raftfsm.Release{App: "web", Version: version, Branch: "main",
			PullRequest: pr, Meta: raftfsm.Meta{CreateIndex: index}}
		s.Reindex() // records put in by hand: the per-app index is rebuilt as a restore would
	}
	add("v1", 0, 1)
	add("pr7-2", 7, 2)
	if r := latestRelease(s, "web"); r == nil || r.Version != "v1" {
		t.Fatalf("latest release %+v, want v1", r)
	}
	add("v2", 0, 3)
	add("pr8-4", 8, 4)
	if r := latestRelease(s, "web"); r == nil || r.Version != "v2" {
		t.Fatalf("latest release %+v, want v2", r)
	}
}
