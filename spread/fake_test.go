package spread

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/fakenode"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// The tests in this file run the service's decisions against a fake member (internal/fakenode): a real FSM
// written synchronously, gossip's view set by the test, and a real artifact store in a temporary directory. No
// goroutine of the service runs: each test calls the decision it checks.

// fakeService is a spread service on a fake member, started by nothing.
func fakeService(t *testing.T, n *fakenode.Node, opts Options) *Service {
	t.Helper()
	s, err := newService(n, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// putRelease imports an archive of version into s's store and records the release, held by holders.
func putRelease(t *testing.T, n *fakenode.Node, s *Service, app, version string, holders ...string) string {
	t.Helper()
	meta, err := s.Store().Import(bytes.NewReader([]byte("archive of "+app+" "+version)), 1024)
	if err != nil {
		t.Fatal(err)
	}
	n.MustApply(t, &raftfsm.ReleaseCreate{Release: raftfsm.Release{App: app, Version: version, Digest: meta.Digest,
		Size: meta.Size, PieceSize: meta.PieceSize, Pieces: meta.Pieces, Holders: holders}})
	return meta.Digest
}

func holdersOf(n *fakenode.Node, app, version string) []string {
	var out []string
	n.FSM().Read(func(st *raftfsm.State) {
		if r := st.Releases[raftfsm.ReleaseKey(app, version)]; r != nil {
			out = slices.Clone(r.Holders)
		}
	})
	return out
}

// TestCollectOnceKeepsWhatIsUsedAndDropsTheRecordFirst: with Keep 1, one collection on a node holding six
// releases keeps the newest, the desired (= stable) release, the rollback target and the target of an unfinished
// deployment, and removes the other two: each one's holder record is dropped (IfUnused) while its archive is
// still whole, and only then is the archive deleted.
func TestCollectOnceKeepsWhatIsUsedAndDropsTheRecordFirst(t *testing.T) {
	n := fakenode.New(t, "a")
	s := fakeService(t, n, Options{Keep: 1, GCInterval: time.Hour})
	n.MustApply(t, &raftfsm.AppPut{App: raftfsm.App{Name: "web"}, Create: true},
		&raftfsm.EnvPut{Env: raftfsm.Env{Name: "prod", App: "web"}, Create: true},
		&raftfsm.EnvPut{Env: raftfsm.Env{Name: "qa", App: "web"}, Create: true})
	digests := map[string]string{}
	for i := 1; i <= 6; i++ {
		v := fmt.Sprintf("v%d", i)
		digests[v] = putRelease(t, n, s, "web", v, "a")
	}
	// prod ran v1 then v2: v2 is desired and stable, v1 the rollback target. qa has a pending deployment of v4.
	for _, v := range []string{"v1", "v2"} {
		n.MustApply(t, &raftfsm.DeployCreate{Deployment: raftfsm.Deployment{ID: "d-" + v, Env: "prod", Release: v}},
			&raftfsm.DeployUpdate{ID: "d-" + v, State: raftfsm.DeploySucceeded, SetDesired: v})
	}
	n.MustApply(t, &raftfsm.DeployCreate{Deployment: raftfsm.Deployment{ID: "d-qa", Env: "qa", Release: "v4"}})

	var dropped []string
	n.BeforeApply(func(c raftfsm.Command) error {
		d, ok := c.(*raftfsm.ReleaseDrop)
		if !ok {
			return nil
		}
		if !d.IfUnused || d.Node != "a" {
			t.Errorf("the cleanup wrote %+v, want an IfUnused drop of node a", d)
		}
		if !s.Store().Complete(digests[d.Version]) {
			t.Errorf("the archive of %s was deleted before its holder record was dropped", d.Version)
		}
		dropped = append(dropped, d.Version)
		return nil
	})
	s.collectOnce()

	sort.Strings(dropped)
	if want := []string{"v3", "v5"}; !slices.Equal(dropped, want) {
		t.Errorf("dropped the records of %v, want %v", dropped, want)
	}
	for v, d := range digests {
		gone := v == "v3" || v == "v5"
		if s.Store().Complete(d) == gone {
			t.Errorf("%s: archive whole = %v after collection, want %v", v, !gone, !gone)
		}
		if held := slices.Contains(holdersOf(n, "web", v), "a"); held == gone {
			t.Errorf("%s: recorded as held = %v after collection, want %v", v, held, !gone)
		}
	}
}

// TestCollectOnceKeepsTheArchiveWhenADeployCrossesIt: a deployment of a release created between the keeper's
// look and the drop of the record (here, just before the drop enters the log) makes the FSM refuse the drop, and
// the archive and its record stay: the cleanup never deletes what a deployment created first will fetch.
func TestCollectOnceKeepsTheArchiveWhenADeployCrossesIt(t *testing.T) {
	n := fakenode.New(t, "a")
	s := fakeService(t, n, Options{Keep: 1, GCInterval: time.Hour})
	n.MustApply(t, &raftfsm.AppPut{App: raftfsm.App{Name: "web"}, Create: true},
		&raftfsm.EnvPut{Env: raftfsm.Env{Name: "prod", App: "web"}, Create: true})
	old := putRelease(t, n, s, "web", "v1", "a")
	putRelease(t, n, s, "web", "v2", "a")

	crossed := false
	n.BeforeApply(func(c raftfsm.Command) error {
		if d, ok := c.(*raftfsm.ReleaseDrop); ok && d.Version == "v1" && !crossed {
			crossed = true
			n.MustApply(t, &raftfsm.DeployCreate{Deployment: raftfsm.Deployment{ID: "d1", Env: "prod", Release: "v1"}})
		}
		return nil
	})
	s.collectOnce()

	if !crossed {
		t.Fatal("the cleanup did not try to drop v1, which nothing used when it looked")
	}
	if !s.Store().Complete(old) {
		t.Error("the archive of v1 was deleted although a deployment of it was created before the drop")
	}
	if !slices.Contains(holdersOf(n, "web", "v1"), "a") {
		t.Error("the holder record of v1 was dropped although the release is in use")
	}
	var refused bool
	for _, w := range n.Writes() {
		if _, ok := w.Cmd.(*raftfsm.ReleaseDrop); ok && raftfsm.KindOf(w.Err) == raftfsm.KindConflict {
			refused = true
		}
	}
	if !refused {
		t.Errorf("no drop was refused as a conflict: writes %+v", n.Writes())
	}

	// A drop that does not land (no leader) keeps the archive too, although nothing uses the release any more.
	n.BeforeApply(nil)
	n.MustApply(t, &raftfsm.DeployUpdate{ID: "d1", State: raftfsm.DeployCancelled})
	noLeader := errors.New("no leader")
	n.BeforeApply(func(c raftfsm.Command) error {
		if _, ok := c.(*raftfsm.ReleaseDrop); ok {
			return noLeader
		}
		return nil
	})
	s.collectOnce()
	if !s.Store().Complete(old) {
		t.Error("the archive of v1 was deleted although the drop of its record failed")
	}
	n.BeforeApply(nil)
	s.collectOnce()
	if s.Store().Complete(old) || slices.Contains(holdersOf(n, "web", "v1"), "a") {
		t.Error("v1, unused and its drop accepted, was not collected")
	}
}

// TestUnderReplicatedChoosesTheSameCopiersOnEveryNode: for a release one server holds and MinHolders 3, exactly
// two of the four other live servers decide to copy it, the same two whichever node computes it (the lowest
// ranks for its digest), with no coordination. A release whose only holder is down, and one the cleanup lets
// go, are copied by no one.
func TestUnderReplicatedChoosesTheSameCopiersOnEveryNode(t *testing.T) {
	a := fakenode.New(t, "a")
	names := []string{"a", "b", "c", "d", "e"}
	var members []node.Member
	for _, name := range names {
		members = append(members, node.Member{Name: name, Status: node.StatusAlive, Addr: name + ":7422"})
	}
	members = append(members, node.Member{Name: "down", Status: node.StatusDead, Addr: "down:7422"})
	a.SetMembers(members...)
	svc := map[string]*Service{"a": fakeService(t, a, Options{Keep: 1, MinHolders: 3, GCInterval: time.Hour})}
	for _, name := range names[1:] {
		svc[name] = fakeService(t, a.Peer(t, name), Options{Keep: 1, MinHolders: 3, GCInterval: time.Hour})
	}
	a.MustApply(t, &raftfsm.AppPut{App: raftfsm.App{Name: "web"}, Create: true},
		&raftfsm.AppPut{App: raftfsm.App{Name: "api"}, Create: true})
	putRelease(t, a, svc["a"], "api", "v1", "a") // older than api's v2 with Keep 1 and unused: collected, not copied
	digest := putRelease(t, a, svc["a"], "api", "v2", "a")
	putRelease(t, a, svc["a"], "web", "orphan", "down") // held by a dead server only

	candidates := []string{"b", "c", "d", "e"}
	sort.Slice(candidates, func(i, j int) bool { return rank(digest, candidates[i]) < rank(digest, candidates[j]) })
	want := candidates[:2]
	var got []string
	for _, name := range names {
		for _, r := range svc[name].underReplicated() {
			if r.App != "api" || r.Version != "v2" {
				t.Errorf("%s would copy %s %s", name, r.App, r.Version)
				continue
			}
			got = append(got, name)
		}
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("copiers of api v2: %v, want %v (the two lowest ranks among the non-holders)", got, want)
	}

	// Once the copies are recorded, nobody copies any more.
	for _, name := range want {
		a.MustApply(t, &raftfsm.ReleaseHolders{App: "api", Version: "v2", Node: name})
	}
	for _, name := range names {
		if rs := svc[name].underReplicated(); len(rs) > 0 {
			t.Errorf("%s still would copy %d releases after MinHolders was reached", name, len(rs))
		}
	}
}

// TestSyncHoldersMakesRecordsEqualTheStore: a record of this node without the archive is dropped, an archive
// without a record is recorded, and the records of a server that left for good are dropped by the leader only.
func TestSyncHoldersMakesRecordsEqualTheStore(t *testing.T) {
	n := fakenode.New(t, "a")
	s := fakeService(t, n, Options{GCInterval: time.Hour})
	n.MustApply(t, &raftfsm.AppPut{App: raftfsm.App{Name: "web"}, Create: true})
	putRelease(t, n, s, "web", "unrecorded", "gone")
	lost := putRelease(t, n, s, "web", "lost", "a", "gone")
	if err := s.Store().Remove(lost); err != nil {
		t.Fatal(err)
	}
	n.MustApply(t, &raftfsm.MemberLeave{Name: "gone", At: time.Now()})

	s.syncHolders()
	if got := holdersOf(n, "web", "unrecorded"); !slices.Equal(got, []string{"a", "gone"}) {
		t.Errorf("holders of a release whole here but not recorded: %v, want [a gone]", got)
	}
	if got := holdersOf(n, "web", "lost"); !slices.Equal(got, []string{"gone"}) {
		t.Errorf("holders of a release recorded here but not whole here: %v, want [gone]", got)
	}

	n.Lead(t, 2)
	s.syncHolders()
	for _, v := range []string{"unrecorded", "lost"} {
		if slices.Contains(holdersOf(n, "web", v), "gone") {
			t.Errorf("%s: the leader kept the record of a server that left the mesh", v)
		}
	}
	if got := holdersOf(n, "web", "unrecorded"); !slices.Equal(got, []string{"a"}) {
		t.Errorf("holders of %s after the leader's sync: %v, want [a]", "unrecorded", got)
	}
}

// TestFetchableNeedsALiveHolder: a release is fetchable when its archive is whole here or a holder is alive or
// suspect; a record of this node without the archive, or holders that are dead or gone, make it unfetchable,
// with an error wrapping raftfsm.ErrNoLiveHolder that names the holders.
func TestFetchableNeedsALiveHolder(t *testing.T) {
	n := fakenode.New(t, "a")
	s := fakeService(t, n, Options{GCInterval: time.Hour})
	rel := &raftfsm.Release{App: "web", Version: "v1", Digest: "d0", Holders: []string{"a", "b", "c"}}
	for _, tc := range []struct {
		b, c string // the member status of b and c ("": not in the member list)
		ok   bool
	}{
		{b: node.StatusAlive, c: node.StatusDead, ok: true},
		{b: node.StatusSuspect, c: node.StatusDead, ok: true},
		{b: node.StatusDead, c: node.StatusLeft, ok: false},
		{b: "", c: node.StatusDead, ok: false}, // a's own record does not count without its archive
	} {
		ms := []node.Member{{Name: "a", Status: node.StatusAlive}}
		for name, st := range map[string]string{"b": tc.b, "c": tc.c} {
			if st != "" {
				ms = append(ms, node.Member{Name: name, Status: st})
			}
		}
		n.SetMembers(ms...)
		err := s.Fetchable(rel)
		if (err == nil) != tc.ok {
			t.Errorf("b %q, c %q: Fetchable = %v, want fetchable %v", tc.b, tc.c, err, tc.ok)
		}
		if err != nil && !errors.Is(err, raftfsm.ErrNoLiveHolder) {
			t.Errorf("b %q, c %q: %v does not wrap ErrNoLiveHolder", tc.b, tc.c, err)
		}
	}
}
