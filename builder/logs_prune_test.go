package builder

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/raftfsm"
)

// Build logs leave the disk with their builds: a log of a pruned build, or of a deleted app, goes; the log of a
// build in the state, and of a build number the app has not reached yet, stays.
func TestLogsPrunedWithTheirBuilds(t *testing.T) {
	c := meshtest.New(t, 1, nil)
	n := c.Nodes[0]
	svc, err := Attach(n, c.API(n), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	ctx := context.Background()
	apply := func(cmd raftfsm.Command) {
		t.Helper()
		if _, err := n.Apply(ctx, cmd); err != nil {
			t.Fatalf("%T: %v", cmd, err)
		}
	}
	apply(&raftfsm.AppPut{App: raftfsm.App{Name: "web"}, Create: true})
	apply(&raftfsm.AppPut{App: raftfsm.App{Name: "old"}, Create: true})
	for range 2 {
		apply(&raftfsm.BuildQueue{App: "web", Trigger: "manual", At: time.Now()})
	}
	apply(&raftfsm.BuildQueue{App: "old", Trigger: "manual", At: time.Now()})
	// The leader's builder runs them (they fail: the apps have no repository); the test waits for them to end.
	c.Eventually(20*time.Second, "the builds to end", func() bool {
		done := true
		n.FSM().Read(func(st *raftfsm.State) {
			for _, id := range []string{"web-1", "web-2", "old-1"} {
				done = done && st.Builds[id] != nil && st.Builds[id].Finished()
			}
		})
		return done
	})
	for _, id := range []string{"web-1", "web-2", "web-9", "old-1"} {
		if err := os.WriteFile(filepath.Join(svc.dir, id+".log"), []byte("log\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	apply(&raftfsm.Prune{Builds: []string{"web-1"}})
	apply(&raftfsm.AppDelete{Name: "old"})
	got := svc.pruneLogs()
	slices.Sort(got)
	if !slices.Equal(got, []string{"old-1", "web-1"}) {
		t.Fatalf("removed %v, want [old-1 web-1]", got)
	}
	for _, id := range []string{"web-2", "web-9"} {
		if _, err := os.Stat(filepath.Join(svc.dir, id+".log")); err != nil {
			t.Fatalf("the log of %s went: %v", id, err)
		}
	}
}
