package integration

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/builder"
	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/raftfsm"
)

// TestBenchBuildTriggers measures, on a 3-process loopback mesh, the time from a push webhook received by a
// follower to the build running on the leader (goal p50 ≤ 200 ms), and from that webhook to the release of a
// trivial build committed (goal ≤ 2 s). It prints the figures beside the goals and asserts neither:
//
//	SHOAL_BENCH=smoke go test -count=1 -run BenchBuild -v ./integration   # 10 pushes, for CI
//	SHOAL_BENCH=full  go test -count=1 -run BenchBuild -v ./integration   # 50 pushes, docs/benchmarks.md
func TestBenchBuildTriggers(t *testing.T) {
	trials := 10
	if benchFull(t) {
		trials = 50
	}
	needProcesses(t)
	const secret = "bench-secret"
	repo := newTestRepo(t, t.TempDir(), "web.git")
	head := repo.commit("trivial app", map[string]string{"shoal.yml": "build:\n  build: ['true']\npackage:\n  include: [shoal.yml]\n"})
	m := startPmesh(t, 3)
	leader := m.waitHealthy(m.nodes...)
	var via *pnode
	for _, n := range m.nodes {
		if n != leader {
			via = n
			break
		}
	}
	lapi := m.client(leader)
	lapi.HTTP = &http.Client{Timeout: 30 * time.Second}
	if _, err := lapi.Post(context.Background(), "/v1/apps", map[string]any{"name": "web", "repo": repo.dir,
		"auto_build": true, "webhook_secret": secret}, nil); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}

	var toRunning, toRelease []time.Duration
	for i := range trials + 1 {
		sha := repo.commit(fmt.Sprintf("change %d", i), map[string]string{"n.txt": fmt.Sprint(i)})
		h, body := forgePush(builder.ProviderGitHub, fmt.Sprintf("bench-%d", i), "main", head, sha, "change", secret)
		head = sha
		start := time.Now()
		status, ans := sendHook(t, hc, via.api(), "web", h, body)
		if status != http.StatusCreated || ans.Build == nil {
			t.Fatalf("push %d: %d %+v", i, status, ans)
		}
		running, released := watchBuild(t, lapi, ans.Build.ID, start)
		if i == 0 {
			continue // the first build warms connections and the leader's git; it is not counted
		}
		toRunning, toRelease = append(toRunning, running), append(toRelease, released)
	}
	slices.Sort(toRunning)
	slices.Sort(toRelease)
	p := func(d []time.Duration, q float64) time.Duration {
		return d[min(max(int(math.Ceil(q*float64(len(d))))-1, 0), len(d)-1)]
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
	met := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	t.Logf("builds on a 3-process loopback mesh, %d pushes (webhook to follower %s, leader %s)", len(toRunning), via.name, leader.name)
	t.Logf("  webhook received → build running:   p50 %s  p90 %s  max %s   goal p50 ≤ 200 ms: %s",
		ms(p(toRunning, .5)), ms(p(toRunning, .9)), ms(toRunning[len(toRunning)-1]), met(p(toRunning, .5) <= 200*time.Millisecond))
	t.Logf("  push → release committed (trivial): p50 %s  p90 %s  max %s   goal ≤ 2 s: %s",
		ms(p(toRelease, .5)), ms(p(toRelease, .9)), ms(toRelease[len(toRelease)-1]), met(toRelease[len(toRelease)-1] <= 2*time.Second))
}

// watchBuild follows a build on the leader with blocking reads and returns when it was first seen running and
// when it was seen succeeded, both measured from start.
func watchBuild(t *testing.T, cl *client.Client, id string, start time.Time) (running, released time.Duration) {
	t.Helper()
	var index uint64
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		path := "/v1/builds/" + id
		if index > 0 {
			path += fmt.Sprintf("?index=%d&wait=10s", index)
		}
		var b raftfsm.Build
		idx, err := cl.Get(context.Background(), path, &b)
		if err != nil {
			// The build may not have reached the leader's state yet when the follower forwarded it.
			if index == 0 {
				continue
			}
			t.Fatalf("read build %s: %v", id, err)
		}
		now := time.Since(start)
		if running == 0 && b.State != raftfsm.BuildQueued {
			running = now
		}
		if b.Finished() {
			if b.State != raftfsm.BuildSucceeded {
				t.Fatalf("build %s %s: %s", id, b.State, b.Error)
			}
			return running, now
		}
		index = idx
	}
	t.Fatalf("build %s did not finish within 60 s", id)
	return 0, 0
}
