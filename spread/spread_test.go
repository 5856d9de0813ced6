package spread

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/artifact"
	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// publish records a release whose archive only the leader holds, as the builder does: it imports the archive
// into the leader's store and commits the build with the release through Raft under the current term.
func publish(t *testing.T, c *meshtest.Cluster, svc map[*node.Node]*Service, app string, data []byte) *raftfsm.Release {
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
	c := meshtest.New(t, 3, nil)
	svc := map[*node.Node]*Service{}
	for _, n := range c.Nodes {
		s, err := Attach(n, c.API(n), Options{})
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
	c := meshtest.New(t, 1, nil)
	n := c.Nodes[0]
	s, err := Attach(n, c.API(n), Options{Keep: 1, GCInterval: time.Hour})
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

// TestUploadAndFetchAPI: an archive uploaded to one node becomes release v1 (held by that node), a custom
// version must be unique, and another node fetches it on request.
func TestUploadAndFetchAPI(t *testing.T) {
	c := meshtest.New(t, 2, nil)
	svc := map[string]*Service{}
	for _, n := range c.Nodes {
		s, err := Attach(n, c.API(n), Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		svc[n.Name()] = s
	}
	a, b := c.Nodes[0], c.Nodes[1]
	ctx := context.Background()
	ca := client.New(a.HTTPAddr(), c.AdminToken)
	if _, err := ca.Post(ctx, "/v1/apps", map[string]any{"name": "web"}, nil); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 700<<10)
	rand.Read(data)
	upload := func(n *node.Node, query string) (*raftfsm.Release, error) {
		req, _ := http.NewRequest("POST", "http://"+n.HTTPAddr()+"/v1/apps/web/releases"+query, bytes.NewReader(data))
		req.Header.Set("Authorization", "Bearer "+c.AdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 201 {
			return nil, fmt.Errorf("%d %s", resp.StatusCode, body)
		}
		var r raftfsm.Release
		return &r, json.Unmarshal(body, &r)
	}
	rel, err := upload(b, "")
	if err != nil {
		t.Fatal(err)
	}
	if rel.Version != "v1" || rel.Size != int64(len(data)) || len(rel.Pieces) != 3 || !slices.Equal(rel.Holders, []string{b.Name()}) {
		t.Fatalf("uploaded release %+v", rel)
	}
	if _, err := upload(b, "?version=V1"); err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("a version that differs only by case must conflict: %v", err)
	}
	var res FetchResult
	if _, err := ca.Post(ctx, "/v1/apps/web/releases/v1/fetch", struct{}{}, &res); err != nil {
		t.Fatal(err)
	}
	if res.Bytes != int64(len(data)) || res.Node != a.Name() {
		t.Fatalf("fetch result %+v", res)
	}
	rc, err := svc[a.Name()].Open(rel.Digest)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, data) {
		t.Fatal("fetched bytes differ")
	}
	if _, err := ca.Post(ctx, "/v1/apps/web/releases/v9/fetch", struct{}{}, nil); !client.IsStatus(err, 404) {
		t.Fatalf("fetch of a missing release: %v", err)
	}
}
