package raftfsm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// applier feeds commands to an FSM as Raft would, one log index after another.
type applier struct {
	t     *testing.T
	f     *FSM
	index uint64
	log   []*raft.Log
}

func newApplier(t *testing.T) *applier { return &applier{t: t, f: New()} }

func (a *applier) apply(c Command) *Result {
	a.t.Helper()
	data, err := Encode(c)
	if err != nil {
		a.t.Fatal(err)
	}
	a.index++
	l := &raft.Log{Index: a.index, Term: 1, Type: raft.LogCommand, Data: data}
	a.log = append(a.log, l)
	_, isPrune := c.(*Prune)
	var needBefore string
	if isPrune {
		needBefore = envNeeds(a.f.state)
	}
	res := a.f.Apply(l).(*Result)
	// Whatever a prune names, an accepted one leaves everything an environment needs as it was.
	if isPrune && res.Err == nil {
		if after := envNeeds(a.f.state); after != needBefore {
			a.t.Fatalf("index %d: a prune changed what environments need:\nbefore %s\nafter  %s", a.index, needBefore, after)
		}
	}
	// The derived index must equal one rebuilt from the maps after every entry, applied or refused.
	if err := a.f.state.checkIndex(); err != nil {
		a.t.Fatalf("index %d (%T): %v", a.index, c, err)
	}
	return res
}

func (a *applier) ok(c Command) *Result {
	a.t.Helper()
	r := a.apply(c)
	if r.Err != nil {
		a.t.Fatalf("%T rejected: %v", c, r.Err)
	}
	return r
}

func (a *applier) rejected(c Command, kind string) {
	a.t.Helper()
	before, _ := a.f.MarshalState()
	r := a.apply(c)
	if r.Err == nil || r.Err.Code != kind {
		a.t.Fatalf("%T: want %s rejection, got %+v", c, kind, r.Err)
	}
	after, _ := a.f.MarshalState()
	// Only the applied index may move: a rejected command changes nothing else.
	if !bytes.Equal(stripIndex(before), stripIndex(after)) {
		a.t.Fatalf("%T was rejected but changed the state", c)
	}
}

func stripIndex(b []byte) []byte {
	i := bytes.Index(b, []byte(`,"term"`))
	return b[i:]
}

// as decodes a result's value.
func as[T any](t *testing.T, r *Result) *T {
	t.Helper()
	v := new(T)
	if err := json.Unmarshal(r.Value, v); err != nil {
		t.Fatalf("decode %T: %v", v, err)
	}
	return v
}

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func TestValidationResults(t *testing.T) {
	a := newApplier(t)
	a.rejected(&AppPut{App: App{Name: "-bad"}, Create: true}, KindBadRequest)
	a.rejected(&AppPut{App: App{Name: "web", Repo: "--upload-pack=evil"}, Create: true}, KindBadRequest)
	a.rejected(&AppPut{App: App{Name: "web", Branch: "a b"}, Create: true}, KindBadRequest)
	a.rejected(&AppPut{App: App{Name: "web"}}, KindNotFound)
	app := as[App](t, a.ok(&AppPut{App: App{Name: "web", Repo: "/srv/web.git"}, Create: true}))
	if app.Branch != "main" || app.NextBuild != 1 || app.CreateIndex != a.index {
		t.Fatalf("defaults not applied: %+v", app)
	}
	a.rejected(&AppPut{App: App{Name: "web"}, Create: true}, KindConflict)
	a.rejected(&AppPut{App: App{Name: "web", Branch: "dev"}, CAS: app.ModifyIndex + 100}, KindConflict)
	a.ok(&AppPut{App: App{Name: "web", Branch: "dev"}, CAS: app.ModifyIndex})

	a.rejected(&EnvPut{Env: Env{Name: "prod", App: "nope"}, Create: true}, KindNotFound)
	a.rejected(&EnvPut{Env: Env{Name: "prod", App: "web", Strategy: Strategy{Kind: "sideways"}}, Create: true}, KindBadRequest)
	a.rejected(&EnvPut{Env: Env{Name: "prod", App: "web", Strategy: Strategy{BatchSize: 2, BatchPercent: 50}}, Create: true}, KindBadRequest)
	a.rejected(&EnvPut{Env: Env{Name: "prod", App: "web", Vars: map[string]Var{"1X": {}}}, Create: true}, KindBadRequest)
	env := as[Env](t, a.ok(&EnvPut{Env: Env{Name: "prod", App: "web", Servers: []string{"b", "a", "b"}, Strategy: Strategy{Kind: "rolling"}}, Create: true}))
	if fmt.Sprint(env.Servers) != "[a b]" || env.Strategy.BatchSize != 1 {
		t.Fatalf("env not normalised: %+v", env)
	}
	a.rejected(&AppDelete{Name: "web"}, KindConflict)
	a.rejected(&TokenCreate{Token: Token{ID: "x", SecretHash: "h", Role: "root"}}, KindBadRequest)
	a.ok(&TokenCreate{Token: Token{ID: "x", SecretHash: "h", Role: RoleReader}})
	a.rejected(&TokenCreate{Token: Token{ID: "x", SecretHash: "h", Role: RoleReader}}, KindConflict)
	a.rejected(&JoinTokenCreate{Token: JoinToken{ID: "j", Secret: "0123456789abcdef", CreatedAt: t0, ExpiresAt: t0}}, KindBadRequest)
	a.ok(&EnvDelete{Name: "prod"})
	a.ok(&AppDelete{Name: "web"})
	a.rejected(&AppDelete{Name: "web"}, KindNotFound)
}

func TestBuildFencingByLeaderTerm(t *testing.T) {
	a := newApplier(t)
	a.ok(&AppPut{App: App{Name: "web", Repo: "/r"}, Create: true})
	a.ok(&LeaderEpoch{Term: 2, Node: "n1"})
	b := as[Build](t, a.ok(&BuildQueue{App: "web", Commit: "c1", Branch: "main", Trigger: "push", Delivery: "d1", At: t0}))
	// The same webhook delivery again is refused; the same commit by poll is the same build.
	a.rejected(&BuildQueue{App: "web", Commit: "c1", Branch: "main", Trigger: "push", Delivery: "d1", At: t0}, KindConflict)
	if again := as[Build](t, a.ok(&BuildQueue{App: "web", Commit: "c1", Branch: "main", Trigger: "poll", At: t0})); again.ID != b.ID {
		t.Fatalf("a commit already queued became a second build %s", again.ID)
	}
	a.rejected(&BuildStart{ID: b.ID, Term: 1, Node: "old"}, KindConflict)
	a.ok(&BuildStart{ID: b.ID, Term: 2, Node: "n1", At: t0})
	// A new leader takes over: the running build goes back to the queue and the old term cannot publish.
	req := *as[[]string](t, a.ok(&LeaderEpoch{Term: 3, Node: "n2"}))
	if len(req) != 1 || req[0] != b.ID {
		t.Fatalf("requeued %v, want [%s]", req, b.ID)
	}
	rel := &Release{Digest: "abc", Size: 10, PieceSize: 4}
	a.rejected(&BuildFinish{ID: b.ID, Term: 2, State: BuildSucceeded, Release: rel, At: t0}, KindConflict)
	a.ok(&BuildStart{ID: b.ID, Term: 3, Node: "n2", At: t0})
	r := as[Release](t, a.ok(&BuildFinish{ID: b.ID, Term: 3, State: BuildSucceeded, Release: rel, At: t0}))
	if r.Version != "v1" || r.Commit != "c1" {
		t.Fatalf("release %+v", r)
	}
	a.rejected(&BuildFinish{ID: b.ID, Term: 3, State: BuildSucceeded, Release: rel, At: t0}, KindConflict)
	// A commit already released does not build again on push.
	if again := as[Build](t, a.ok(&BuildQueue{App: "web", Commit: "c1", Branch: "main", Trigger: "push", Delivery: "d2", At: t0})); again.ID != b.ID {
		t.Fatalf("released commit queued again as %s", again.ID)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	a := newApplier(t)
	runRandom(a, rand.New(rand.NewPCG(1, 2)), 300)
	want, _ := a.f.MarshalState()
	snap, err := a.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := New()
	if err := g.Restore(io.NopCloser(&sink.buf)); err != nil {
		t.Fatal(err)
	}
	got, _ := g.MarshalState()
	if !bytes.Equal(want, got) {
		t.Fatalf("restored state differs:\nwant %s\n got %s", want, got)
	}
	// The restored FSM keeps applying.
	b := &applier{t: t, f: g, index: a.index}
	b.ok(&AppPut{App: App{Name: "after-restore"}, Create: true})
}

// TestReplayDeterminism is the property test: random command sequences, valid and invalid, applied to one FSM,
// then replayed into a fresh one (and restored from a snapshot taken midway, then replayed from there) give
// identical states.
func TestReplayDeterminism(t *testing.T) {
	for seed := uint64(0); seed < 40; seed++ {
		a := newApplier(t)
		r := rand.New(rand.NewPCG(seed, seed*7+1))
		n := 50 + r.IntN(250)
		mid := r.IntN(n)
		runRandom(a, r, mid)
		atSnap, _ := a.f.MarshalState()
		snap, _ := a.f.Snapshot()
		late, _ := a.f.Snapshot()
		// Snapshots are encoded while the FSM goes on applying (as Raft does): one during the later entries (the
		// race detector sees a record changed in place under the encoder), one after them. Both must hold the
		// state of their index.
		concurrent := &memSink{}
		persisted := make(chan error, 1)
		go func() { persisted <- snap.Persist(concurrent) }()
		runRandom(a, r, n-mid)
		if err := <-persisted; err != nil {
			t.Fatal(err)
		}
		sink := &memSink{}
		if err := late.Persist(sink); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(concurrent.buf.Bytes(), sink.buf.Bytes()) {
			t.Fatalf("seed %d: two snapshots of one index differ", seed)
		}
		want, _ := a.f.MarshalState()
		atRestore := New()
		if err := atRestore.Restore(io.NopCloser(bytes.NewReader(sink.buf.Bytes()))); err != nil {
			t.Fatal(err)
		}
		if got, _ := atRestore.MarshalState(); !bytes.Equal(got, atSnap) {
			t.Fatalf("seed %d: the snapshot does not hold the state of its index", seed)
		}

		replay := New()
		for _, l := range a.log {
			replay.Apply(l)
		}
		got, _ := replay.MarshalState()
		if !bytes.Equal(want, got) {
			t.Fatalf("seed %d: replay differs", seed)
		}
		// Raft hands a batch of committed entries to ApplyBatch: batches of any size give the same state.
		batched := New()
		for i := 0; i < len(a.log); {
			k := min(len(a.log)-i, 1+r.IntN(40))
			batched.ApplyBatch(a.log[i : i+k])
			i += k
		}
		if got, _ := batched.MarshalState(); !bytes.Equal(want, got) {
			t.Fatalf("seed %d: batched replay differs", seed)
		}
		if err := batched.state.checkIndex(); err != nil {
			t.Fatalf("seed %d: batched replay's index: %v", seed, err)
		}

		restored := New()
		if err := restored.Restore(io.NopCloser(&sink.buf)); err != nil {
			t.Fatal(err)
		}
		for _, l := range a.log[mid:] {
			restored.Apply(l)
		}
		got, _ = restored.MarshalState()
		if !bytes.Equal(want, got) {
			t.Fatalf("seed %d: snapshot+replay differs", seed)
		}
	}
}

// runRandom applies n random commands drawn from small name pools, so that they collide, conflict and
// reference each other often.
func runRandom(a *applier, r *rand.Rand, n int) {
	apps := []string{"web", "api", "worker"}
	envs := []string{"dev", "staging", "prod"}
	nodes := []string{"n1", "n2", "n3"}
	pick := func(s []string) string { return s[r.IntN(len(s))] }
	for i := 0; i < n; i++ {
		at := t0.Add(time.Duration(i) * time.Second)
		var c Command
		switch r.IntN(23) {
		case 0:
			c = &AppPut{App: App{Name: pick(apps), Repo: "/srv/" + pick(apps), AutoBuild: r.IntN(2) == 0}, Create: r.IntN(2) == 0}
		case 1:
			c = &AppDelete{Name: pick(apps)}
		case 2:
			c = &EnvPut{Env: Env{Name: pick(envs), App: pick(apps), Servers: []string{pick(nodes), pick(nodes)},
				Tags: map[string]string{"role": pick(envs)}, Strategy: Strategy{Kind: []string{"all", "rolling", "bad"}[r.IntN(3)]}}, Create: r.IntN(2) == 0}
		case 3:
			c = &EnvDelete{Name: pick(envs)}
		case 4:
			c = &LeaderEpoch{Term: uint64(r.IntN(6)), Node: pick(nodes)}
		case 5, 6:
			c = &BuildQueue{App: pick(apps), Commit: fmt.Sprintf("c%d", r.IntN(5)), Branch: "main", Trigger: []string{"push", "poll", "manual"}[r.IntN(3)],
				Delivery: fmt.Sprintf("d%d", r.IntN(8)), At: at}
		case 7:
			c = &BuildStart{ID: fmt.Sprintf("%s-%d", pick(apps), 1+r.IntN(4)), Term: uint64(r.IntN(6)), Node: pick(nodes), At: at}
		case 8:
			c = &BuildFinish{ID: fmt.Sprintf("%s-%d", pick(apps), 1+r.IntN(4)), Term: uint64(r.IntN(6)),
				State: []string{BuildSucceeded, BuildFailed}[r.IntN(2)], Release: &Release{Digest: "d", Size: 1, PieceSize: 1}, At: at}
		case 9:
			c = &BuildCancel{ID: fmt.Sprintf("%s-%d", pick(apps), 1+r.IntN(4)), At: at}
		case 10:
			c = &DeployCreate{Deployment: Deployment{ID: fmt.Sprintf("d-%d", r.IntN(6)), Env: pick(envs), Release: fmt.Sprintf("v%d", 1+r.IntN(2)), CreatedAt: at}}
		case 11:
			c = &DeployUpdate{ID: fmt.Sprintf("d-%d", r.IntN(6)), State: []string{DeployRunning, DeploySucceeded, DeployFailed}[r.IntN(3)], SetDesired: fmt.Sprintf("v%d", r.IntN(2)), At: at}
		case 12:
			c = &NodeStatusSet{ID: fmt.Sprintf("d-%d", r.IntN(6)), Node: pick(nodes), Status: NodeStatus{State: NodeHealthy, UpdatedAt: at}}
		case 17:
			c = &PipelinePut{Pipeline: Pipeline{App: pick(apps), Stages: []PipelineStage{{Env: pick(envs)}, {Env: pick(envs), Approval: true}}[:r.IntN(3)]}}
		case 16:
			c = &ReleaseCreate{Release: Release{App: pick(apps), Version: []string{"", "v1", "V2", "bad version"}[r.IntN(4)], Digest: "d", Size: 1, PieceSize: 1}}
		case 14:
			c = &MemberLeave{Name: pick(nodes), At: at}
		case 15:
			c = &MemberRejoin{Name: pick(nodes)}
		case 18:
			c = &ReleaseDrop{App: []string{"", pick(apps)}[r.IntN(2)], Version: []string{"", "v1", "v2"}[r.IntN(3)], Node: pick(nodes), IfUnused: r.IntN(2) == 0}
		case 19:
			c = &Prune{Builds: []string{fmt.Sprintf("%s-%d", pick(apps), 1+r.IntN(4))}, Releases: []string{ReleaseKey(pick(apps), fmt.Sprintf("v%d", 1+r.IntN(2)))},
				Deploys: []string{fmt.Sprintf("d-%d", r.IntN(6))}, Departed: []string{pick(nodes)}}
		case 20:
			c = &RetentionSet{Retention: Retention{Builds: r.IntN(3), Releases: r.IntN(3), Deployments: r.IntN(3) - 1}}
		case 21:
			// What a leader would prune now (with whatever retention the sequence set).
			if p := a.f.state.PrunePlan(at.Add(time.Duration(r.IntN(2)) * 90 * 24 * time.Hour)); p != nil {
				c = p
			} else {
				c = &Prune{}
			}
		case 22:
			c = &RuntimeSet{Runtime: Runtime{App: pick(apps), Env: pick(envs), Node: pick(nodes)}, Delete: r.IntN(3) == 0}
		case 13:
			c = &TokenCreate{Token: Token{ID: fmt.Sprintf("t%d", r.IntN(4)), Role: []string{RoleAdmin, RoleReader, "x"}[r.IntN(3)], SecretHash: "h", CreatedAt: at}}
		}
		a.apply(c)
	}
}

func TestEnvelope(t *testing.T) {
	if _, err := Decode([]byte{9, 1, '{', '}'}); err == nil {
		t.Fatal("a newer envelope version must not decode")
	}
	if _, err := Decode([]byte{EnvelopeVersion, 0x7f, '{', '}'}); err == nil {
		t.Fatal("an unknown mandatory type must not decode")
	}
	if c, err := Decode([]byte{EnvelopeVersion, 0xff, '{', '}'}); err != nil || c != nil {
		t.Fatalf("an unknown ignorable type is skipped, got %v %v", c, err)
	}
	f := New()
	defer func() {
		if recover() == nil {
			t.Fatal("Apply of an undecodable entry must stop the node")
		}
	}()
	f.Apply(&raft.Log{Index: 1, Data: []byte{EnvelopeVersion, 0x7f}})
}

func TestWaitBlocksUntilChange(t *testing.T) {
	a := newApplier(t)
	a.ok(&AppPut{App: App{Name: "web"}, Create: true})
	done := make(chan uint64)
	from := a.index
	go func() { done <- a.f.Wait(context.Background(), from) }()
	select {
	case <-done:
		t.Fatal("Wait returned before any change")
	case <-time.After(20 * time.Millisecond):
	}
	a.ok(&AppPut{App: App{Name: "api"}, Create: true})
	if got := <-done; got != a.index {
		t.Fatalf("Wait returned %d, want %d", got, a.index)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got := a.f.Wait(ctx, a.index); got != a.index {
		t.Fatalf("cancelled Wait returned %d", got)
	}
}

type memSink struct{ buf bytes.Buffer }

func (s *memSink) Write(p []byte) (int, error) { return s.buf.Write(p) }
func (s *memSink) Close() error                { return nil }
func (s *memSink) ID() string                  { return "mem" }
func (s *memSink) Cancel() error               { return nil }

func TestPipelinesAndDeploymentGuards(t *testing.T) {
	a := newApplier(t)
	a.ok(&AppPut{App: App{Name: "web"}, Create: true})
	a.ok(&AppPut{App: App{Name: "api"}, Create: true})
	for _, e := range []string{"dev", "staging", "prod"} {
		a.ok(&EnvPut{Env: Env{Name: e, App: "web"}, Create: true})
	}
	a.ok(&EnvPut{Env: Env{Name: "api-prod", App: "api"}, Create: true})
	a.rejected(&PipelinePut{Pipeline: Pipeline{App: "web", Stages: []PipelineStage{{Env: "dev"}, {Env: "api-prod"}}}}, KindBadRequest)
	a.rejected(&PipelinePut{Pipeline: Pipeline{App: "web", Stages: []PipelineStage{{Env: "dev"}, {Env: "dev"}}}}, KindBadRequest)
	a.rejected(&PipelinePut{Pipeline: Pipeline{App: "web", Stages: []PipelineStage{{Env: "qa"}}}}, KindNotFound)
	p := as[Pipeline](t, a.ok(&PipelinePut{Pipeline: Pipeline{App: "web", Stages: []PipelineStage{{Env: "dev"}, {Env: "staging"}, {Env: "prod", Approval: true}}}}))
	a.rejected(&PipelinePut{Pipeline: Pipeline{App: "web"}, CAS: p.ModifyIndex + 1}, KindConflict)
	a.rejected(&EnvDelete{Name: "staging"}, KindConflict)

	// Approve and cancel are guarded by the state they expect.
	a.ok(&LeaderEpoch{Term: 1, Node: "n1"})
	a.ok(&ReleaseCreate{Release: Release{App: "web", Digest: "d", Size: 1, PieceSize: 1}})
	a.ok(&DeployCreate{Deployment: Deployment{ID: "d1", Env: "prod", Release: "v1", State: DeployWaiting}})
	a.rejected(&DeployUpdate{ID: "d1", State: DeployRunning, From: []string{DeployPending}}, KindConflict)
	d := as[Deployment](t, a.ok(&DeployUpdate{ID: "d1", State: DeployPending, From: []string{DeployWaiting}, By: "alice"}))
	if d.ApprovedBy != "alice" {
		t.Fatalf("approval not recorded: %+v", d)
	}
	a.rejected(&DeployUpdate{ID: "d1", State: DeployPending, From: []string{DeployWaiting}, By: "bob"}, KindConflict)

	a.ok(&PipelinePut{Pipeline: Pipeline{App: "web"}, CAS: p.ModifyIndex})
	a.ok(&EnvDelete{Name: "staging"})
}

// envNeeds describes what every environment needs from the state, for the prune property: per environment its
// desired and stable releases and rollback target (and whether their records exist), its unfinished, latest and
// latest succeeded deployments; per app its newest release.
func envNeeds(s *State) string {
	var b strings.Builder
	for _, name := range sortedNames(s.Envs) {
		e := s.Envs[name]
		prev := s.PreviousRelease(e)
		fmt.Fprintf(&b, "%s: desired %s %v stable %s %v previous %s %v;", name, e.Desired, s.Releases[ReleaseKey(e.App, e.Desired)] != nil,
			e.Stable, s.Releases[ReleaseKey(e.App, e.Stable)] != nil, prev, s.Releases[ReleaseKey(e.App, prev)] != nil)
	}
	for _, env := range sortedNames(s.idx().envDeploys) {
		ds := s.EnvDeploys(env)
		fmt.Fprintf(&b, " %s latest %s", env, ds[len(ds)-1].ID)
		for _, d := range ds {
			if !d.Finished() {
				fmt.Fprintf(&b, " open %s (%s)", d.ID, d.Release)
			}
		}
		for i := len(ds) - 1; i >= 0; i-- {
			if ds[i].State == DeploySucceeded {
				fmt.Fprintf(&b, " ok %s", ds[i].ID)
				break
			}
		}
	}
	for _, app := range sortedNames(s.Apps) {
		if rs := s.AppReleases(app); len(rs) > 0 {
			fmt.Fprintf(&b, " %s newest %s", app, rs[len(rs)-1].Version)
		}
	}
	return b.String()
}
