package spread

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/raftfsm"
)

// TestCollectKeepsWhatIsUsedAndRecordsFollowStores: on a 3-node mesh where every node holds every release,
// keep-1 collection removes only releases nothing uses (desired, stable, rollback target and the target of a
// pending deployment stay on every node), and afterwards each release's holder record is exactly the set of
// stores holding it. A release collected everywhere cannot be fetched, and says so in words.
func TestCollectKeepsWhatIsUsedAndRecordsFollowStores(t *testing.T) {
	c := meshtest.New(t, 3, nil)
	svc := map[string]*Service{}
	for _, n := range c.Nodes {
		s, err := Attach(n, c.API(n), Options{Keep: 1, MinHolders: 3, GCInterval: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		svc[n.Name()] = s
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	leader := c.Leader()
	apply := func(cmd raftfsm.Command) {
		t.Helper()
		if _, err := leader.Apply(ctx, cmd); err != nil {
			t.Fatalf("%T: %v", cmd, err)
		}
	}
	apply(&raftfsm.AppPut{App: raftfsm.App{Name: "web"}, Create: true})
	apply(&raftfsm.EnvPut{Env: raftfsm.Env{Name: "prod", App: "web"}, Create: true})
	apply(&raftfsm.EnvPut{Env: raftfsm.Env{Name: "qa", App: "web"}, Create: true})
	digests := map[string]string{}
	for i := 1; i <= 6; i++ {
		v := fmt.Sprintf("v%d", i)
		meta, err := svc[leader.Name()].Store().Import(bytes.NewReader([]byte("archive of "+v)), 1024)
		if err != nil {
			t.Fatal(err)
		}
		digests[v] = meta.Digest
		apply(&raftfsm.ReleaseCreate{Release: raftfsm.Release{App: "web", Version: v, Digest: meta.Digest, Size: meta.Size,
			PieceSize: meta.PieceSize, Pieces: meta.Pieces, Holders: []string{leader.Name()}}})
		// Every node copies it (MinHolders 3) before the next: the collector must not undo a copy in use.
		c.Eventually(30*time.Second, v+" on every node", func() bool { return len(release(leader, "web", v).Holders) == 3 })
		if v == "v1" || v == "v2" {
			// prod ran v1 then v2: v2 is desired and stable, v1 the rollback target.
			apply(&raftfsm.DeployCreate{Deployment: raftfsm.Deployment{ID: "d-" + v, Env: "prod", Release: v}})
			apply(&raftfsm.DeployUpdate{ID: "d-" + v, State: raftfsm.DeploySucceeded, SetDesired: v})
		}
	}
	// v4: the target of a deployment waiting for approval in qa. v6 is the newest (Keep 1). v3 and v5: nothing.
	apply(&raftfsm.DeployCreate{Deployment: raftfsm.Deployment{ID: "d-v4", Env: "qa", Release: "v4", State: raftfsm.DeployWaiting}})

	stores := func(v string) (on []string) {
		for name, s := range svc {
			if s.Store().Complete(digests[v]) {
				on = append(on, name)
			}
		}
		slices.Sort(on)
		return on
	}
	c.Eventually(30*time.Second, "v3 and v5 collected everywhere, their records empty", func() bool {
		for _, v := range []string{"v3", "v5"} {
			if len(stores(v)) > 0 || len(release(leader, "web", v).Holders) > 0 {
				return false
			}
		}
		return true
	})
	for _, v := range []string{"v1", "v2", "v4", "v6"} {
		if got := stores(v); len(got) != 3 {
			t.Errorf("%s (in use or newest) is on %v only", v, got)
		}
	}
	// Each node is compared once it has applied what the leader had: followers learn of a commit a moment later.
	at := leader.FSM().Index()
	for _, n := range c.Nodes {
		n.WaitApplied(ctx, at)
	}
	for _, n := range c.Nodes {
		for _, v := range []string{"v1", "v2", "v3", "v4", "v5", "v6"} {
			if got, want := release(n, "web", v).Holders, stores(v); !slices.Equal(got, want) {
				t.Errorf("%s: %s held by %v, stores hold it on %v", n.Name(), v, got, want)
			}
		}
	}

	// Cancelling the qa deployment frees v4: it goes next.
	apply(&raftfsm.DeployUpdate{ID: "d-v4", State: raftfsm.DeployCancelled, Batch: -1})
	c.Eventually(30*time.Second, "v4 collected once nothing uses it", func() bool {
		return len(stores("v4")) == 0 && len(release(leader, "web", "v4").Holders) == 0
	})

	// A collected release cannot be fetched: the error names the app and release and wraps ErrNoLiveHolder.
	err := svc[leader.Name()].Fetch(ctx, release(leader, "web", "v3"), nil)
	if !errors.Is(err, raftfsm.ErrNoLiveHolder) || !bytes.Contains([]byte(err.Error()), []byte("release v3 of app web")) {
		t.Fatalf("fetch of a collected release: %v", err)
	}

	// A holder record the store does not back (a lost archive) is dropped by itself.
	other := c.Nodes[0]
	if other == leader {
		other = c.Nodes[1]
	}
	if err := svc[other.Name()].Store().Remove(digests["v6"]); err != nil {
		t.Fatal(err)
	}
	c.Eventually(30*time.Second, "the record of a lost archive dropped, then copied back", func() bool {
		return slices.Equal(release(leader, "web", "v6").Holders, stores("v6"))
	})
}

// TestDepartedHolderDropped: a server that leaves the mesh for good goes from every holder list.
func TestDepartedHolderDropped(t *testing.T) {
	c := meshtest.New(t, 1, nil)
	n := c.Nodes[0]
	s, err := Attach(n, c.API(n), Options{GCInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	meta, err := s.Store().Import(bytes.NewReader([]byte("archive")), 1024)
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []raftfsm.Command{
		&raftfsm.AppPut{App: raftfsm.App{Name: "web"}, Create: true},
		&raftfsm.ReleaseCreate{Release: raftfsm.Release{App: "web", Digest: meta.Digest, Size: meta.Size, PieceSize: meta.PieceSize,
			Pieces: meta.Pieces, Holders: []string{n.Name(), "gone"}}},
		&raftfsm.MemberLeave{Name: "gone", At: time.Now()},
	} {
		if _, err := n.Apply(ctx, cmd); err != nil {
			t.Fatal(err)
		}
	}
	c.Eventually(20*time.Second, "the departed server dropped from the holders", func() bool {
		return slices.Equal(release(n, "web", "v1").Holders, []string{n.Name()})
	})
}
