package node_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// The leader prunes by the retention set through the API, on every node alike, and keeps what an environment
// needs: here the desired release, although it is older than the newest two.
func TestRetentionPrunesOnEveryNode(t *testing.T) {
	c := meshtest.New(t, 3, nil)
	n := c.Leader()
	ctx := context.Background()
	must := func(cmd raftfsm.Command) {
		t.Helper()
		if _, err := n.Apply(ctx, cmd); err != nil {
			t.Fatalf("%T: %v", cmd, err)
		}
	}
	must(&raftfsm.AppPut{App: raftfsm.App{Name: "web"}, Create: true})
	must(&raftfsm.EnvPut{Env: raftfsm.Env{Name: "prod", App: "web"}, Create: true})
	for range 6 {
		must(&raftfsm.ReleaseCreate{Release: raftfsm.Release{App: "web", Digest: "d", Size: 1, PieceSize: 1}})
	}
	must(&raftfsm.DeployCreate{Deployment: raftfsm.Deployment{ID: "d1", Env: "prod", Release: "v2", CreatedAt: time.Now()}})
	must(&raftfsm.DeployUpdate{ID: "d1", State: raftfsm.DeploySucceeded, SetDesired: "v2", At: time.Now()})

	var bad map[string]any
	if code := call(t, n, c.AdminToken, "PUT", "/v1/retention", map[string]any{"releases": -1}, &bad); code != 400 {
		t.Fatalf("a negative retention: status %d", code)
	}
	var set raftfsm.Retention
	if code := call(t, c.Nodes[1], c.AdminToken, "PUT", "/v1/retention", map[string]any{"releases": 2}, &set); code != 200 || set.Releases != 2 || set.Builds != raftfsm.DefaultKeepBuilds {
		t.Fatalf("set retention: status %d, %+v", code, set)
	}
	c.Eventually(10*time.Second, "every node to keep v2, v5 and v6 only", func() bool {
		for _, x := range c.Nodes {
			var got []string
			x.FSM().Read(func(s *raftfsm.State) {
				for _, r := range s.AppReleases("web") {
					got = append(got, r.Version)
				}
			})
			if fmt.Sprint(got) != "[v2 v5 v6]" {
				return false
			}
		}
		return true
	})
	var v api.RetentionView
	if code := call(t, n, c.AdminToken, "GET", "/v1/retention", nil, &v); code != 200 || v.Set == nil || v.Effective.Releases != 2 {
		t.Fatalf("get retention: %d %+v", code, v)
	}
}

// A clean stop with a long log since the last snapshot takes one, so the next start restores it rather than
// replaying the log.
func TestSnapshotBeforeStop(t *testing.T) {
	c := meshtest.New(t, 1, func(cfg *node.Config) { cfg.Timing.SnapshotThreshold = 1 << 20 })
	n := c.Nodes[0]
	for i := range node.StopSnapshotMin + 10 {
		if _, err := n.Apply(context.Background(), &raftfsm.AppPut{App: raftfsm.App{Name: fmt.Sprintf("a%d", i)}, Create: true}, node.OnCommit); err != nil {
			t.Fatal(err)
		}
	}
	snaps := filepath.Join(n.Config().DataDir, node.RaftDir, "snapshots")
	if entries, _ := os.ReadDir(snaps); len(entries) != 0 {
		t.Fatalf("a snapshot before the stop: %v", entries)
	}
	c.Kill(0) // Close: a clean stop
	if entries, _ := os.ReadDir(snaps); len(entries) != 1 {
		t.Fatalf("snapshots after a clean stop: %v", entries)
	}
}
