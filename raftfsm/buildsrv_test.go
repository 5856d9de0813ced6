package raftfsm

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// A build assigned to a build server is fenced twice: by the leader term (assign and requeue carry it) and by
// the lease (the node and attempt must be the record's for a renewal or a result to count).
func TestBuildServerLeaseFencing(t *testing.T) {
	a := newApplier(t)
	a.rejected(&AppPut{App: App{Name: "web", Repo: "/r", BuildCapabilities: []string{"linux", "bad cap"}}, Create: true}, KindBadRequest)
	app := as[App](t, a.ok(&AppPut{App: App{Name: "web", Repo: "/r", BuildCapabilities: []string{"linux", "docker", "linux"}}, Create: true}))
	if len(app.BuildCapabilities) != 2 || app.BuildCapabilities[0] != "docker" {
		t.Fatalf("capabilities not normalized: %v", app.BuildCapabilities)
	}
	a.ok(&LeaderEpoch{Term: 2, Node: "v1"})
	b := as[Build](t, a.ok(&BuildQueue{App: "web", Commit: "c1", Branch: "main", Trigger: "push", At: t0}))

	a.rejected(&BuildAssign{ID: b.ID, Term: 1, Node: "b1", At: t0}, KindConflict) // an old term
	a.rejected(&BuildAssign{ID: b.ID, Term: 2, At: t0}, KindBadRequest)           // no server
	a.rejected(&BuildLease{ID: b.ID, Node: "b1", Attempt: 1}, KindConflict)       // not assigned yet
	got := as[Build](t, a.ok(&BuildAssign{ID: b.ID, Term: 2, Node: "b1", At: t0}))
	if got.State != BuildRunning || got.Node != "b1" || !got.Remote || got.Attempt != 1 {
		t.Fatalf("assigned build %+v", got)
	}
	a.rejected(&BuildAssign{ID: b.ID, Term: 2, Node: "b2", At: t0}, KindConflict) // already running
	a.rejected(&BuildLease{ID: b.ID, Node: "b2", Attempt: 1}, KindConflict)       // another node
	if r := as[Build](t, a.ok(&BuildLease{ID: b.ID, Node: "b1", Attempt: 1})); r.Renewals != 1 {
		t.Fatalf("renewals %d after one renewal", r.Renewals)
	}
	// The leader saw no renewal since 0: the renewal committed meanwhile wins and the requeue is refused.
	a.rejected(&BuildRequeue{ID: b.ID, Term: 2, Attempt: 1, Renewals: 0, Reason: "lease expired", At: t0}, KindConflict)
	a.rejected(&BuildRequeue{ID: b.ID, Term: 1, Attempt: 1, Renewals: 1, Reason: "lease expired", At: t0}, KindConflict)
	req := as[Build](t, a.ok(&BuildRequeue{ID: b.ID, Term: 2, Attempt: 1, Renewals: 1, Reason: "lease of b1 expired", At: t0}))
	if req.State != BuildQueued || req.Node != "" || req.Remote || req.Requeued != "lease of b1 expired" {
		t.Fatalf("requeued build %+v", req)
	}

	rel := &Release{Digest: "abc", Size: 10, PieceSize: 4, Holders: []string{"b1"}}
	// b1 comes back with its result after losing the lease: refused, as a result, state unchanged.
	a.rejected(&BuildFinish{ID: b.ID, Term: 2, Node: "b1", Attempt: 1, State: BuildSucceeded, Release: rel, At: t0}, KindConflict)
	a.rejected(&BuildLease{ID: b.ID, Node: "b1", Attempt: 1}, KindConflict)

	a.ok(&BuildAssign{ID: b.ID, Term: 2, Node: "b2", At: t0})
	// The old holder's result is still refused though the build runs again (other node, other attempt), and a
	// result without a lease (as the leader's own runner sends) cannot finish a build server's build either.
	a.rejected(&BuildFinish{ID: b.ID, Term: 2, Node: "b1", Attempt: 1, State: BuildSucceeded, Release: rel, At: t0}, KindConflict)
	a.rejected(&BuildFinish{ID: b.ID, Term: 2, Node: "b2", Attempt: 1, State: BuildSucceeded, Release: rel, At: t0}, KindConflict)
	a.rejected(&BuildFinish{ID: b.ID, Term: 2, State: BuildSucceeded, Release: rel, At: t0}, KindConflict)
	rel.Holders = []string{"b2"}
	r := as[Release](t, a.ok(&BuildFinish{ID: b.ID, Term: 2, Node: "b2", Attempt: 2, State: BuildSucceeded, Release: rel, At: t0}))
	if r.Version != "v1" || len(r.Holders) != 1 || r.Holders[0] != "b2" {
		t.Fatalf("release %+v", r)
	}

	// A new leader term takes back a build server's running build too (the assignment was the old term's).
	b2 := as[Build](t, a.ok(&BuildQueue{App: "web", Commit: "c2", Branch: "main", Trigger: "push", At: t0}))
	a.ok(&BuildAssign{ID: b2.ID, Term: 2, Node: "b1", At: t0})
	a.ok(&LeaderEpoch{Term: 3, Node: "v2"})
	var back Build
	a.f.Read(func(s *State) { back = *s.Builds[b2.ID] })
	if back.State != BuildQueued || back.Remote || !strings.Contains(back.Requeued, "leader term 3 began") {
		t.Fatalf("after a new term: %+v", back)
	}
	a.rejected(&BuildLease{ID: b2.ID, Node: "b1", Attempt: 1}, KindConflict)
	a.rejected(&BuildFinish{ID: b2.ID, Term: 2, Node: "b1", Attempt: 1, State: BuildFailed, At: t0}, KindConflict)
	a.ok(&BuildAssign{ID: b2.ID, Term: 3, Node: "b1", At: t0})
	a.ok(&BuildFinish{ID: b2.ID, Term: 3, Node: "b1", Attempt: 2, State: BuildFailed, Error: "x", At: t0})
}

// A pull request build makes a release marked with the request, named apart from the app's versions; it
// deploys by hand only to an environment that allows pull requests, and never by auto deploy or promotion.
func TestPullRequestReleases(t *testing.T) {
	a := newApplier(t)
	a.ok(&AppPut{App: App{Name: "web", Repo: "/r"}, Create: true})
	a.ok(&LeaderEpoch{Term: 2, Node: "v1"})
	// Opt-in: an app that does not build pull requests refuses them; the trigger and the number go together.
	a.rejected(&BuildQueue{App: "web", Commit: "c1", Branch: "feature", Trigger: TriggerPullRequest, PullRequest: 7, At: t0}, KindConflict)
	a.ok(&AppPut{App: App{Name: "web", Repo: "/r", PullRequests: true}})
	a.rejected(&BuildQueue{App: "web", Commit: "c1", Branch: "feature", Trigger: TriggerPullRequest, At: t0}, KindBadRequest)
	a.rejected(&BuildQueue{App: "web", Commit: "c1", Branch: "feature", Trigger: "push", PullRequest: 7, At: t0}, KindBadRequest)

	push := as[Build](t, a.ok(&BuildQueue{App: "web", Commit: "c1", Branch: "feature", Trigger: "push", At: t0}))
	pr := as[Build](t, a.ok(&BuildQueue{App: "web", Commit: "c1", Branch: "feature", Trigger: TriggerPullRequest, PullRequest: 7, At: t0}))
	if pr.ID == push.ID || pr.PullRequest != 7 {
		t.Fatalf("the pull request's build of a pushed commit is its own build: %+v vs %+v", pr, push)
	}
	a.ok(&BuildStart{ID: pr.ID, Term: 2, Node: "v1", At: t0})
	rel := as[Release](t, a.ok(&BuildFinish{ID: pr.ID, Term: 2, State: BuildSucceeded, At: t0,
		Release: &Release{Version: "1.0.0", Digest: "d", Size: 1, PieceSize: 1}}))
	if rel.PullRequest != 7 || rel.Version != "pr7-2" {
		t.Fatalf("pull request release %+v", rel)
	}
	if app := as[App](t, a.ok(&AppPut{App: App{Name: "web", Repo: "/r", PullRequests: true}})); app.NextRelease != 1 {
		t.Fatalf("a pull request release took the app's version v%d", app.NextRelease-1)
	}

	a.ok(&EnvPut{Env: Env{Name: "prod", App: "web"}, Create: true})
	a.ok(&EnvPut{Env: Env{Name: "review", App: "web", AllowPullRequests: true}, Create: true})
	a.rejected(&DeployCreate{Deployment: Deployment{ID: "d1", Env: "prod", Release: rel.Version, By: "ada"}}, KindConflict)
	a.rejected(&DeployCreate{Deployment: Deployment{ID: "d2", Env: "review", Release: rel.Version, By: "auto-deploy"}}, KindConflict)
	a.rejected(&DeployCreate{Deployment: Deployment{ID: "d3", Env: "review", Release: rel.Version, By: "promotion from prod by ada"}}, KindConflict)
	a.ok(&DeployCreate{Deployment: Deployment{ID: "d4", Env: "review", Release: rel.Version, By: "ada"}})
}

// Random build server commands mixed with the other commands replay to the same state, from the log and from a
// snapshot plus the rest of the log.
func TestBuildServerReplayDeterminism(t *testing.T) {
	apps := []string{"web", "api", "worker"}
	nodes := []string{"n1", "n2", "n3"}
	for seed := uint64(0); seed < 30; seed++ {
		a := newApplier(t)
		r := rand.New(rand.NewPCG(seed, seed*5+3))
		pick := func(s []string) string { return s[r.IntN(len(s))] }
		id := func() string { return fmt.Sprintf("%s-%d", pick(apps), 1+r.IntN(4)) }
		step := func(i int) {
			at := t0.Add(time.Duration(i) * time.Second)
			switch r.IntN(7) {
			case 0:
				a.apply(&BuildAssign{ID: id(), Term: uint64(r.IntN(6)), Node: pick(nodes), At: at})
			case 1:
				a.apply(&BuildLease{ID: id(), Node: pick(nodes), Attempt: r.IntN(3)})
			case 2:
				a.apply(&BuildRequeue{ID: id(), Term: uint64(r.IntN(6)), Attempt: r.IntN(3), Renewals: uint64(r.IntN(2)), Reason: "expired", At: at})
			case 3:
				a.apply(&BuildFinish{ID: id(), Term: uint64(r.IntN(6)), Node: pick(nodes), Attempt: r.IntN(3),
					State: []string{BuildSucceeded, BuildFailed}[r.IntN(2)], Release: &Release{Digest: "d", Size: 1, PieceSize: 1}, At: at})
			case 4:
				a.apply(&AppPut{App: App{Name: pick(apps), Repo: "/r", PullRequests: r.IntN(2) == 0,
					BuildCapabilities: []string{"linux", "gpu"}[:r.IntN(3)]}, Create: r.IntN(2) == 0})
			case 5:
				a.apply(&BuildQueue{App: pick(apps), Commit: fmt.Sprintf("c%d", r.IntN(4)), Branch: "main", At: at,
					Trigger: []string{"push", TriggerPullRequest}[r.IntN(2)], PullRequest: r.IntN(3)})
			default:
				runRandom(a, r, 1)
			}
		}
		n := 100 + r.IntN(200)
		mid := r.IntN(n)
		for i := range mid {
			step(i)
		}
		snap, _ := a.f.Snapshot()
		sink := &memSink{}
		if err := snap.Persist(sink); err != nil {
			t.Fatal(err)
		}
		for i := mid; i < n; i++ {
			step(i)
		}
		want, _ := a.f.MarshalState()
		replay := New()
		for _, l := range a.log {
			replay.Apply(l)
		}
		if got, _ := replay.MarshalState(); !bytes.Equal(want, got) {
			t.Fatalf("seed %d: replay differs", seed)
		}
		restored := New()
		if err := restored.Restore(io.NopCloser(&sink.buf)); err != nil {
			t.Fatal(err)
		}
		for _, l := range a.log[mid:] {
			restored.Apply(l)
		}
		if got, _ := restored.MarshalState(); !bytes.Equal(want, got) {
			t.Fatalf("seed %d: snapshot+replay differs", seed)
		}
	}
}
