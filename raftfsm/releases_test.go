package raftfsm

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// holders reads a release's holder list.
func holders(a *applier, app, version string) []string {
	var out []string
	a.f.Read(func(s *State) {
		if r := s.Releases[ReleaseKey(app, version)]; r != nil {
			out = slices.Clone(r.Holders)
		}
	})
	return out
}

func TestReleaseDropFollowsUse(t *testing.T) {
	a := newApplier(t)
	a.ok(&AppPut{App: App{Name: "web"}, Create: true})
	a.ok(&EnvPut{Env: Env{Name: "prod", App: "web"}, Create: true})
	for range 5 {
		a.ok(&ReleaseCreate{Release: Release{App: "web", Digest: "d", Size: 1, PieceSize: 1, Holders: []string{"n1", "n2"}}})
	}
	use := func(v string) (why string) {
		a.f.Read(func(s *State) { why = s.ReleaseUse("web", v) })
		return why
	}
	// v1 deployed and succeeded, then v2: v2 is desired and stable, v1 the rollback target.
	for i, v := range []string{"v1", "v2"} {
		id := "d" + v
		a.ok(&DeployCreate{Deployment: Deployment{ID: id, Env: "prod", Release: v}})
		a.ok(&DeployUpdate{ID: id, State: DeploySucceeded, SetDesired: v, Batch: i})
	}
	// v3 is the target of a deployment waiting for approval; v4 of nothing.
	a.ok(&DeployCreate{Deployment: Deployment{ID: "d3", Env: "prod", Release: "v3", State: DeployWaiting}})
	for v, want := range map[string]string{"v1": "rolls back to", "v2": "desired release of environment prod", "v3": "deployment d3", "v4": "", "v5": ""} {
		if got := use(v); want == "" && got != "" || !strings.Contains(got, want) {
			t.Errorf("ReleaseUse(%s) = %q, want %q", v, got, want)
		}
	}
	// The one-pass form agrees with ReleaseUse on every release.
	a.f.Read(func(s *State) {
		inUse := s.ReleasesInUse()
		for _, r := range s.Releases {
			if got, want := inUse[ReleaseKey(r.App, r.Version)], s.ReleaseUse(r.App, r.Version) != ""; got != want {
				t.Errorf("%s: ReleasesInUse says %v, ReleaseUse %v", r.Version, got, want)
			}
		}
	})
	for _, v := range []string{"v1", "v2", "v3"} {
		a.rejected(&ReleaseDrop{App: "web", Version: v, Node: "n1", IfUnused: true}, KindConflict)
	}
	a.ok(&ReleaseDrop{App: "web", Version: "v4", Node: "n1", IfUnused: true})
	if got := holders(a, "web", "v4"); !slices.Equal(got, []string{"n2"}) {
		t.Fatalf("v4 holders after n1 dropped it: %v", got)
	}
	// Unconditional: a store that lost the archive drops the record whatever uses it.
	a.ok(&ReleaseDrop{App: "web", Version: "v2", Node: "n2"})
	if got := holders(a, "web", "v2"); !slices.Equal(got, []string{"n1"}) {
		t.Fatalf("v2 holders: %v", got)
	}
	// Cancelling d3 frees v3; pinning keeps the desired release in use.
	a.ok(&DeployUpdate{ID: "d3", State: DeployCancelled, Batch: -1})
	a.ok(&ReleaseDrop{App: "web", Version: "v3", Node: "n1", IfUnused: true})
	a.ok(&EnvPin{Name: "prod", Pinned: true, Reason: "rolled back"})
	if got := use("v2"); !strings.Contains(got, "pinned") {
		t.Fatalf("ReleaseUse(v2) on a pinned environment = %q", got)
	}
	// A server that left: its name goes from every release.
	a.rejected(&ReleaseDrop{Node: "n2", IfUnused: true}, KindBadRequest)
	a.rejected(&ReleaseDrop{App: "web", Version: "v9", Node: "n2"}, KindNotFound)
	a.rejected(&ReleaseDrop{App: "web", Version: "v1"}, KindBadRequest)
	a.ok(&ReleaseDrop{Node: "n2"})
	a.f.Read(func(s *State) {
		for _, r := range s.Releases {
			if slices.Contains(r.Holders, "n2") {
				t.Errorf("%s still lists n2: %v", r.Version, r.Holders)
			}
		}
	})
}

// TestReleasesInUseAgrees: after random command sequences, the one-pass ReleasesInUse names exactly the releases
// ReleaseUse names.
func TestReleasesInUseAgrees(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		a := newApplier(t)
		runRandom(a, rand.New(rand.NewPCG(seed, 7)), 400)
		a.f.Read(func(s *State) {
			inUse := s.ReleasesInUse()
			for _, r := range s.Releases {
				if got, want := inUse[ReleaseKey(r.App, r.Version)], s.ReleaseUse(r.App, r.Version) != ""; got != want {
					t.Errorf("seed %d, %s %s: ReleasesInUse %v, ReleaseUse %v", seed, r.App, r.Version, got, want)
				}
			}
		})
	}
}
