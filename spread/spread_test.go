package spread

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/artifact"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// publish records a release whose archive only the leader holds, as the builder does: it imports the archive
// into the leader's store and commits the build with the release through Raft under the current term.
func publish(t *testing.T, c *node.TestCluster, svc map[*node.Node]*Service, app string, data []byte) *raftfsm.Release {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	leader := c.Leader()
	meta, err := svc[leader].Store().Import(bytes.NewReader(data), 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leader.Apply(ctx, &raftfsm.AppPut{App: raftfsm.App{Name: app}, Create: true}); err != nil {
		t.Fatal(err)
	}
	res, err := leader.Apply(ctx, &raftfsm.BuildQueue{App: app, Commit: "c1", Branch: "main", Trigger: "manual", At: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	_ = res
	var term uint64
	leader.FSM().Read(func(s *raftfsm.State) { term = s.Term })
	id := app + "-1"
	if _, err := leader.Apply(ctx, &raftfsm.BuildStart{ID: id, Term: term, Node: leader.Name(), At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	rel := &raftfsm.Release{Digest: meta.Digest, Size: meta.Size, PieceSize: meta.PieceSize, Pieces: meta.Pieces, Holders: []string{leader.Name()}}
	if _, err := leader.Apply(ctx, &raftfsm.BuildFinish{ID: id, Term: term, State: raftfsm.BuildSucceeded, Release: rel, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	var out *raftfsm.Release
	leader.FSM().Read(func(s *raftfsm.State) { c := *s.Releases[raftfsm.ReleaseKey(app, "v1")]; out = &c })
	return out
}

func release(n *node.Node, app, version string) *raftfsm.Release {
	var out *raftfsm.Release
	n.FSM().Read(func(s *raftfsm.State) {
		if r := s.Releases[raftfsm.ReleaseKey(app, version)]; r != nil {
			c := *r
			out = &c
		}
	})
	return out
}

// TestReplicateThenLoseBuilder: a new release is copied to a second node by itself; once two nodes hold it the
// builder dies, and the remaining node still gets the release, byte for byte, from the copy.
func TestReplicateThenLoseBuilder(t *testing.T) {
	c := node.NewTestCluster(t, 3, nil)
	svc := map[*node.Node]*Service{}
	for _, n := range c.Nodes {
		s, err := Attach(n, Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		svc[n] = s
	}
	data := make([]byte, 3<<20+12345)
	rand.Read(data)
	rel := publish(t, c, svc, "web", data)
	builder := c.Leader()

	var holders []string
	c.Eventually(30*time.Second, "a second holder", func() bool {
		r := release(builder, "web", "v1")
		holders = r.Holders
		return svc[builder].Available(r)
	})
	if len(holders) != 2 || !slices.Contains(holders, builder.Name()) {
		t.Fatalf("holders %v: want the builder and exactly one copy", holders)
	}
	// The third node, not chosen as a copy, must not hold it yet.
	var third *node.Node
	for _, n := range c.Nodes {
		if !slices.Contains(holders, n.Name()) {
			third = n
		}
	}
	if svc[third].Store().Complete(rel.Digest) {
		t.Fatalf("%s copied a release that already had enough holders", third.Name())
	}
	// Lose the builder.
	for i, n := range c.Nodes {
		if n == builder {
			svc[n].Close()
			c.Kill(i)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var progressed atomic.Int64
	if err := svc[third].Fetch(ctx, rel, func(done, total int64) { progressed.Store(done) }); err != nil {
		t.Fatalf("fetch after the builder died: %v", err)
	}
	if got := progressed.Load(); got != rel.Size {
		t.Errorf("progress ended at %d of %d", got, rel.Size)
	}
	rc, err := svc[third].Open(rel.Digest)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, data) {
		t.Fatal("fetched archive differs from the original")
	}
	c.Eventually(20*time.Second, "the fetcher recorded as a holder", func() bool {
		return slices.Contains(release(third, "web", "v1").Holders, third.Name())
	})
}

func TestKeeper(t *testing.T) {
	c := node.NewTestCluster(t, 1, nil)
	n := c.Nodes[0]
	s, err := Attach(n, Options{Keep: 1, GCInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rel := publish(t, c, map[*node.Node]*Service{n: s}, "web", []byte("v1 archive"))
	orphan, err := s.Store().Import(bytes.NewReader([]byte("not yet a release")), 1024)
	if err != nil {
		t.Fatal(err)
	}
	keep := s.keeper()
	if !keep(rel.Digest) || !keep(orphan.Digest) {
		t.Fatal("the newest release and an archive no release names must be kept")
	}
	_ = artifact.Meta{}
}
