package builder

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// newBuildServerMesh is newMesh with n2 (and later nodes) started as build servers tagged build=linux.
func newBuildServerMesh(t *testing.T, size int, opts Options) *mesh {
	t.Helper()
	opts.KillGrace = time.Second
	m := &mesh{t: t, c: meshtest.New(t, size, func(c *node.Config) {
		if c.Name != "n1" {
			c.Tags = map[string]string{TagBuild: "linux"}
		}
	})}
	for _, n := range m.c.Nodes {
		svc, err := Attach(n, m.c.API(n), opts)
		if err != nil {
			t.Fatalf("attach the builder to %s: %v", n.Name(), err)
		}
		t.Cleanup(func() { svc.Close() })
		m.svcs = append(m.svcs, svc)
	}
	return m
}

// A build server's build whose lease the leader takes back is stopped on the build server, records nothing, and
// runs again (attempt 2) to one release; a cancel reaches a build server's build too.
func TestBuildServerLosesLeaseAndCancel(t *testing.T) {
	gates := gateDir(t)
	repo, _ := newAppRepo(t, `
build:
  build:
    - mktemp "$GATES/started.XXXXXX"
    - `+waitGate("go-$SHOAL_BUILD")+`
`, nil)
	m := newBuildServerMesh(t, 2, Options{LeaseTTL: 1500 * time.Millisecond})
	m.createApp("web", map[string]any{"repo": repo.dir, "build_vars": map[string]any{"GATES": map[string]any{"value": gates}}})
	b := m.startBuild(0, "web", "")
	first := m.waitBuild(b.ID, "running on n2", func(b raftfsm.Build) bool { return b.State == raftfsm.BuildRunning && b.Node == "n2" })
	if !first.Remote || first.Attempt != 1 {
		t.Fatalf("build %+v", first)
	}
	started := func(n int) {
		t.Helper()
		m.c.Eventually(30*time.Second, fmt.Sprintf("%d attempts started", n), func() bool {
			got, _ := filepath.Glob(filepath.Join(gates, "started.*"))
			return len(got) == n
		})
	}
	started(1)
	// Renewals move while the build server lives: the lease outlasts several lease lengths.
	m.c.Eventually(10*time.Second, "the lease to be renewed", func() bool {
		cur, _ := m.getBuild(0, b.ID)
		return cur.Renewals >= 2 && cur.Attempt == 1
	})

	// The leader takes the build back (as it does when it sees no renewal for a lease's length).
	leader := m.c.Leader()
	m.c.Eventually(10*time.Second, "the requeue to apply", func() bool {
		var term uint64
		var cur raftfsm.Build
		leader.FSM().Read(func(st *raftfsm.State) { term, cur = st.Term, *st.Builds[b.ID] })
		_, err := leader.Apply(context.Background(), &raftfsm.BuildRequeue{ID: b.ID, Term: term, Attempt: cur.Attempt,
			Renewals: cur.Renewals, Reason: "test: taken back", At: time.Now().UTC()})
		return err == nil
	})
	second := m.waitBuild(b.ID, "running again", func(b raftfsm.Build) bool { return b.State == raftfsm.BuildRunning && b.Attempt == 2 })
	if second.Node != "n2" || second.Requeued != "test: taken back" {
		t.Fatalf("second attempt %+v", second)
	}
	started(2)
	openGate(t, gates, "go-1")
	done := m.waitFinished(b.ID)
	if done.State != raftfsm.BuildSucceeded || done.Attempt != 2 || done.Release != "v1" {
		t.Fatalf("build %+v", done)
	}
	// The log, read through the leader from the build server, tells both attempts (the last line follows the
	// record by a moment).
	m.c.Eventually(10*time.Second, "the log to tell both attempts", func() bool {
		log := m.buildLog(b.ID)
		return strings.Contains(log, "stopped: this build server lost its lease") && strings.Contains(log, "build succeeded: release v1")
	})
	if rels := m.releases("web"); len(rels) != 1 || rels[0].Holders[0] != "n2" {
		t.Fatalf("releases %+v", rels)
	}

	// A cancel of a build running on the build server stops it there and records it cancelled.
	c := m.startBuild(1, "web", "")
	m.waitBuild(c.ID, "running on n2", func(b raftfsm.Build) bool { return b.State == raftfsm.BuildRunning && b.Node == "n2" })
	var got raftfsm.Build
	if _, err := m.api(0).Post(context.Background(), "/v1/builds/"+c.ID+"/cancel", nil, &got); err != nil {
		t.Fatal(err)
	}
	if end := m.waitFinished(c.ID); end.State != raftfsm.BuildCancelled {
		t.Fatalf("cancelled build %+v", end)
	}
}
