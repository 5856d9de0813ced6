package builder

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/fakenode"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// The tests in this file run the leader's and the build server's decisions against a fake member
// (internal/fakenode): a real FSM written synchronously, gossip's view set by the test. No build runs: the
// tests call schedule, expireLeases, scheduleRemote and renew themselves and read the state they wrote.

// fakeService is a builder on a fake member, started by nothing.
func fakeService(t *testing.T, n *fakenode.Node, opts Options) *Service {
	t.Helper()
	s, err := newService(n, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// buildMesh is a leader with no build tag and two build servers: b1 (linux, one slot) and b2 (linux and cuda,
// two slots), plus a dead build server that offers everything. Apps: web needs nothing, gpu needs cuda.
func buildMesh(t *testing.T) *fakenode.Node {
	n := fakenode.New(t, "lead")
	n.SetMembers(
		node.Member{Name: "lead", Status: node.StatusAlive},
		node.Member{Name: "b1", Status: node.StatusAlive, Tags: map[string]string{TagBuild: "linux", TagBuildSlots: "1"}},
		node.Member{Name: "b2", Status: node.StatusAlive, Tags: map[string]string{TagBuild: "linux,cuda", TagBuildSlots: "2"}},
		node.Member{Name: "b0", Status: node.StatusDead, Tags: map[string]string{TagBuild: "linux,cuda", TagBuildSlots: "9"}},
	)
	n.MustApply(t, &raftfsm.AppPut{App: raftfsm.App{Name: "web"}, Create: true},
		&raftfsm.AppPut{App: raftfsm.App{Name: "gpu", BuildCapabilities: []string{"cuda"}}, Create: true})
	return n
}

// queue queues a push build and returns its id.
func queue(t *testing.T, n *fakenode.Node, app, branch, commit string) string {
	t.Helper()
	res, err := n.Apply(context.Background(), &raftfsm.BuildQueue{App: app, Commit: commit, Ref: branch, Branch: branch,
		Trigger: "push", At: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	var b raftfsm.Build
	if err := json.Unmarshal(res.Value, &b); err != nil {
		t.Fatal(err)
	}
	return b.ID
}

func record(t *testing.T, s *Service, id string) raftfsm.Build {
	t.Helper()
	b, ok := s.build(id)
	if !ok {
		t.Fatalf("build %s does not exist", id)
	}
	return b
}

// TestScheduleAssignsBuildsUnderItsTerm: the leader's schedule writes the plan's assignments: each build to
// the least busy live server with its capabilities and a free slot, one per app and branch, the rest left
// queued; every assignment carries the leader's term. A runner of an older term assigns nothing: the FSM
// refuses its writes.
func TestScheduleAssignsBuildsUnderItsTerm(t *testing.T) {
	n := buildMesh(t)
	s := fakeService(t, n, Options{LeaseTTL: time.Hour})
	webMain := queue(t, n, "web", "main", "c1")
	webDev := queue(t, n, "web", "dev", "c2")
	webMain2 := queue(t, n, "web", "main", "c3") // waits for webMain
	gpuMain := queue(t, n, "gpu", "main", "c4")
	gpuDev := queue(t, n, "gpu", "dev", "c5") // b2's slots are taken by then
	n.Lead(t, 2)
	n.Lead(t, 3)

	stale := s.leaderRunner(t.Context(), 2)
	stale.schedule()
	for _, id := range []string{webMain, webDev, webMain2, gpuMain, gpuDev} {
		if b := record(t, s, id); b.State != raftfsm.BuildQueued {
			t.Fatalf("a runner of term 2 moved %s to %s on %q in term 3", id, b.State, b.Node)
		}
	}

	r := s.leaderRunner(t.Context(), 3)
	r.schedule()
	want := map[string]string{webMain: "b1", webDev: "b2", gpuMain: "b2", webMain2: "", gpuDev: ""}
	for id, server := range want {
		b := record(t, s, id)
		if server == "" {
			if b.State != raftfsm.BuildQueued {
				t.Errorf("%s: %s on %q, want it still queued", id, b.State, b.Node)
			}
			continue
		}
		if b.State != raftfsm.BuildRunning || !b.Remote || b.Node != server || b.Term != 3 || b.Attempt != 1 {
			t.Errorf("%s: %s remote=%v on %q term %d attempt %d, want running remote on %s term 3 attempt 1",
				id, b.State, b.Remote, b.Node, b.Term, b.Attempt, server)
		}
	}
	if len(r.jobs) != 0 {
		t.Errorf("the leader started %d builds itself while build servers are up", len(r.jobs))
	}
	// Nothing changed: another round writes nothing.
	before := len(n.Writes())
	r.schedule()
	if w := n.Writes()[before:]; len(w) != 0 {
		t.Errorf("a second round with nothing changed wrote %d commands, first %T", len(w), w[0].Cmd)
	}
}

// TestExpireLeasesRequeuesOnlyASilentServer: the leader takes a build back only when its server has not
// renewed for a lease's length by the leader's own clock; a renewal restarts that clock, and a renewal that lands
// between the leader's look and its requeue wins (the FSM refuses the requeue). A build taken back is assigned
// again, as a new attempt.
func TestExpireLeasesRequeuesOnlyASilentServer(t *testing.T) {
	n := buildMesh(t)
	s := fakeService(t, n, Options{LeaseTTL: time.Hour})
	id := queue(t, n, "web", "main", "c1")
	n.Lead(t, 2)
	r := s.leaderRunner(t.Context(), 2)
	r.schedule() // assigns, and sees the lease for the first time
	if b := record(t, s, id); b.Node != "b1" || b.Attempt != 1 {
		t.Fatalf("build on %q attempt %d, want b1 attempt 1", b.Node, b.Attempt)
	}
	expire := func() { // the lease as last seen is older than LeaseTTL
		seen := r.leases[id]
		seen.at = seen.at.Add(-2 * s.opts.LeaseTTL)
		r.leases[id] = seen
	}
	renew := func() { n.MustApply(t, &raftfsm.BuildLease{ID: id, Node: "b1", Attempt: 1}) }

	r.schedule()
	if b := record(t, s, id); b.State != raftfsm.BuildRunning || b.Node != "b1" {
		t.Fatalf("a lease seen a moment ago was taken back: %s on %q", b.State, b.Node)
	}

	// A renewal since the last look: the clock starts again, even though the old look is long past.
	expire()
	renew()
	r.schedule()
	if b := record(t, s, id); b.State != raftfsm.BuildRunning || b.Node != "b1" {
		t.Fatalf("a renewed lease was taken back: %s on %q", b.State, b.Node)
	}

	// The server renews at the moment the leader writes its requeue: the renewal comes first and wins.
	expire()
	n.BeforeApply(func(c raftfsm.Command) error {
		if _, ok := c.(*raftfsm.BuildRequeue); ok {
			n.BeforeApply(nil)
			renew()
		}
		return nil
	})
	r.schedule()
	n.BeforeApply(nil)
	if b := record(t, s, id); b.State != raftfsm.BuildRunning || b.Node != "b1" || b.Renewals != 2 {
		t.Fatalf("a requeue crossed by a renewal applied: %s on %q, %d renewals", b.State, b.Node, b.Renewals)
	}
	var refused bool
	for _, w := range n.Writes() {
		if _, ok := w.Cmd.(*raftfsm.BuildRequeue); ok && raftfsm.KindOf(w.Err) == raftfsm.KindConflict {
			refused = true
		}
	}
	if !refused {
		t.Fatal("the leader did not try to requeue the build whose lease it saw expire")
	}

	// Silence for a lease's length: taken back, and assigned again in the next round (the requeue is a change
	// of the state, which starts one) as attempt 2.
	r.schedule() // sees the new renewal count
	expire()
	r.schedule()
	b := record(t, s, id)
	if b.State != raftfsm.BuildQueued || !strings.Contains(b.Requeued, "b1 did not renew its lease") {
		t.Fatalf("after a silent lease: %s on %q, requeued %q; want queued again for the lease", b.State, b.Node, b.Requeued)
	}
	if _, ok := r.leases[id]; ok {
		t.Error("the leader still tracks the lease of a build it took back")
	}
	r.schedule()
	if b := record(t, s, id); b.State != raftfsm.BuildRunning || b.Node != "b1" || b.Attempt != 2 {
		t.Fatalf("after the requeue: %s on %q attempt %d, want running on b1 attempt 2", b.State, b.Node, b.Attempt)
	}
}

// TestScheduleRemoteStopsWhatThisServerNoLongerHolds: a build server keeps the job of a build assigned to it,
// cancels one whose record asks for a cancel (cause errCancelRequested), and one it no longer holds, because the
// build was taken back or is now another attempt (cause errLeaseLost).
func TestScheduleRemoteStopsWhatThisServerNoLongerHolds(t *testing.T) {
	n := buildMesh(t)
	b1 := n.Peer(t, "b1")
	s := fakeService(t, b1, Options{LeaseTTL: time.Hour})
	keep := queue(t, n, "web", "a", "c1")
	cancelled := queue(t, n, "web", "b", "c2")
	takenBack := queue(t, n, "web", "c", "c3")
	newAttempt := queue(t, n, "web", "d", "c4")
	n.Lead(t, 2)
	for _, id := range []string{keep, cancelled, takenBack, newAttempt} {
		n.MustApply(t, &raftfsm.BuildAssign{ID: id, Term: 2, Node: "b1"})
	}
	n.MustApply(t, &raftfsm.BuildCancel{ID: cancelled},
		&raftfsm.BuildRequeue{ID: takenBack, Term: 2, Attempt: 1},
		&raftfsm.BuildRequeue{ID: newAttempt, Term: 2, Attempt: 1},
		&raftfsm.BuildAssign{ID: newAttempt, Term: 2, Node: "b1"})

	// The runner's context has ended, so that it starts no build of its own: the test gives it its jobs.
	ctx, stop := context.WithCancel(t.Context())
	stop()
	r := s.serverRunner(ctx)
	jobs := map[string]*job{}
	for _, id := range []string{keep, cancelled, takenBack, newAttempt} {
		jctx, cancel := context.WithCancelCause(t.Context())
		jobs[id] = &job{id: id, key: id, ctx: jctx, cancel: cancel, attempt: 1, started: true}
		r.jobs[id] = jobs[id]
	}
	r.scheduleRemote()

	for id, want := range map[string]error{keep: nil, cancelled: errCancelRequested, takenBack: errLeaseLost, newAttempt: errLeaseLost} {
		if got := context.Cause(jobs[id].ctx); !errors.Is(got, want) {
			t.Errorf("job of %s: cause %v, want %v", id, got, want)
		}
	}
}

// TestRenewKeepsTheLeaseUntilItIsRefused: a build server's renewals move the record's renewal count; once a new
// leader term takes the build back, the next renewal is refused and the job stops with errLeaseLost.
func TestRenewKeepsTheLeaseUntilItIsRefused(t *testing.T) {
	n := buildMesh(t)
	b1 := n.Peer(t, "b1")
	s := fakeService(t, b1, Options{LeaseTTL: 30 * time.Millisecond})
	id := queue(t, n, "web", "main", "c1")
	n.Lead(t, 2)
	n.MustApply(t, &raftfsm.BuildAssign{ID: id, Term: 2, Node: "b1"})

	r := s.serverRunner(t.Context())
	jctx, cancel := context.WithCancelCause(t.Context())
	j := &job{id: id, key: id, ctx: jctx, cancel: cancel, attempt: 1, started: true}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.renew(j)
	}()
	testutil.Until(t, 5*time.Second, "two renewals", func() bool { return record(t, s, id).Renewals >= 2 })
	if jctx.Err() != nil {
		t.Fatalf("the job stopped while its lease was good: %v", context.Cause(jctx))
	}

	n.Lead(t, 3) // the new term requeues the build
	testutil.Until(t, 5*time.Second, "the job stopped", func() bool { return jctx.Err() != nil })
	if got := context.Cause(jctx); !errors.Is(got, errLeaseLost) {
		t.Errorf("job stopped with %v, want errLeaseLost", got)
	}
	<-done
}

// TestScheduleStopsLocalBuildsTheStateNoLongerWants: on a mesh without build servers the leader runs builds
// itself; schedule cancels the job of a build whose record asks for a cancel (errCancelRequested) and of a
// started one whose record no longer shows it running under this term (errBuildGone), and keeps a running one
// and one not started yet. With its one slot taken, it starts nothing more.
func TestScheduleStopsLocalBuildsTheStateNoLongerWants(t *testing.T) {
	n := fakenode.New(t, "lead")
	n.MustApply(t, &raftfsm.AppPut{App: raftfsm.App{Name: "web"}, Create: true})
	s := fakeService(t, n, Options{LeaseTTL: time.Hour, MaxConcurrent: 1})
	keep := queue(t, n, "web", "a", "c1")
	cancelled := queue(t, n, "web", "b", "c2")
	moved := queue(t, n, "web", "c", "c3")
	notYet := queue(t, n, "web", "d", "c4")
	queue(t, n, "web", "e", "c5") // no job: no slot for it
	n.Lead(t, 2)
	n.MustApply(t, &raftfsm.BuildStart{ID: keep, Term: 2, Node: "lead"},
		&raftfsm.BuildStart{ID: cancelled, Term: 2, Node: "lead"},
		&raftfsm.BuildCancel{ID: cancelled})

	r := s.leaderRunner(t.Context(), 2)
	jobs := map[string]*job{}
	for id, started := range map[string]bool{keep: true, cancelled: true, moved: true, notYet: false, "web-99": true} {
		jctx, cancel := context.WithCancelCause(t.Context())
		jobs[id] = &job{id: id, key: id, ctx: jctx, cancel: cancel, started: started}
		r.jobs[id] = jobs[id]
	}
	r.schedule()

	for id, want := range map[string]error{keep: nil, notYet: nil, cancelled: errCancelRequested, moved: errBuildGone, "web-99": errBuildGone} {
		if got := context.Cause(jobs[id].ctx); !errors.Is(got, want) {
			t.Errorf("job of %s: cause %v, want %v", id, got, want)
		}
	}
	if len(r.jobs) != len(jobs) {
		t.Errorf("the runner has %d jobs after the round, want the %d it had: no slot was free", len(r.jobs), len(jobs))
	}
}

// TestPollAppQueuesACommitNoBuildHasSeen: a poll queues the branch's head with trigger poll when no build of
// the branch names it, and writes nothing for a commit a build has seen, whatever became of that build (a
// cancelled commit is not rebuilt by polling, though the FSM itself would take it again). The repository is a
// local one: no network.
func TestPollAppQueuesACommitNoBuildHasSeen(t *testing.T) {
	repo := newGitRepo(t, filepath.Join(t.TempDir(), "web.git"))
	first := repo.commit("first", map[string]string{"shoal.yml": "build:\n  build: [true]\n"})
	n := fakenode.New(t, "lead")
	n.MustApply(t, &raftfsm.AppPut{App: raftfsm.App{Name: "web", Repo: repo.dir, Branch: "main"}, Create: true})
	s := fakeService(t, n, Options{})
	a := polled{name: "web", repo: repo.dir, branch: "main", every: time.Minute}
	polls := func() (queued []raftfsm.BuildQueue) {
		for _, w := range n.Writes() {
			if q, ok := w.Cmd.(*raftfsm.BuildQueue); ok && w.Err == nil {
				queued = append(queued, *q)
			}
		}
		return queued
	}

	s.pollApp(t.Context(), a)
	q := polls()
	if len(q) != 1 || q[0].Commit != first || q[0].Trigger != "poll" || q[0].Branch != "main" {
		t.Fatalf("first poll queued %+v, want one poll build of %s on main", q, first)
	}
	var id string
	n.FSM().Read(func(st *raftfsm.State) { id = st.AppBuilds("web")[0].ID })
	n.MustApply(t, &raftfsm.BuildCancel{ID: id, At: time.Now().UTC()})
	s.pollApp(t.Context(), a)
	if q := polls(); len(q) != 1 {
		t.Fatalf("a poll of a head whose build was cancelled queued it again: %+v", q)
	}

	second := repo.commit("second", nil)
	s.pollApp(t.Context(), a)
	if q := polls(); len(q) != 2 || q[1].Commit != second {
		t.Fatalf("after a new commit the polls queued %+v, want a build of %s", q, second)
	}
}
