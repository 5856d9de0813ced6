package integration

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/builder"
	"github.com/shoal-ci/shoal/raftfsm"
)

// TestBenchBuildOnBuildServer measures, on a loopback mesh of three untagged voters and one build server
// (`--tag build=linux`), the time from a push webhook received by a follower to the build running on the build
// server (the leader's assignment committed, which is when the build server starts it; goal p50 ≤ 200 ms, as on
// the leader) and to the release committed. It prints the figures beside the goals and asserts neither:
//
//	SHOAL_BENCH=smoke go test -count=1 -run BenchBuildOnBuildServer -v ./integration   # 10 pushes, for CI
//	SHOAL_BENCH=full  go test -count=1 -run BenchBuildOnBuildServer -v ./integration   # 50 pushes, docs/benchmarks.md
func TestBenchBuildOnBuildServer(t *testing.T) {
	trials := 10
	if benchFull(t) {
		trials = 50
	}
	needProcesses(t)
	const secret = "bench-secret"
	repo := newTestRepo(t, t.TempDir(), "web.git")
	// The script stamps the moment it starts on the build server (same machine, same clock as this test).
	head := repo.commit("trivial app", map[string]string{"shoal.yml": "build:\n  build: ['date +%s%N > \"$STAMPS/$SHOAL_BUILD\"']\npackage:\n  include: [shoal.yml]\n"})
	stamps := t.TempDir()
	m := startPmesh(t, 3)
	leader := m.waitHealthy(m.nodes...)
	var via *pnode
	for _, n := range m.nodes {
		if n != leader {
			via = n
			break
		}
	}
	bs := m.addBuildServer("build=linux")
	lapi := m.client(leader)
	lapi.HTTP = &http.Client{Timeout: 30 * time.Second}
	if _, err := lapi.Post(context.Background(), "/v1/apps", map[string]any{"name": "web", "repo": repo.dir,
		"auto_build": true, "webhook_secret": secret, "build_capabilities": []string{"linux"},
		"build_vars": map[string]any{"STAMPS": map[string]any{"value": stamps}}}, nil); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}

	var toRunning, toScript, toRelease []time.Duration
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
		var b raftfsm.Build
		if _, err := lapi.Get(context.Background(), "/v1/builds/"+ans.Build.ID, &b); err != nil || b.Node != bs.name {
			t.Fatalf("build %s ran on %q, not build server %s (%v)", ans.Build.ID, b.Node, bs.name, err)
		}
		data, err := os.ReadFile(filepath.Join(stamps, strconv.FormatUint(b.Number, 10)))
		ns, perr := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		if err != nil || perr != nil {
			t.Fatalf("build %s left no start stamp: %v %v", b.ID, err, perr)
		}
		if i == 0 {
			continue // the first build warms connections and the build server's git; it is not counted
		}
		toRunning, toRelease = append(toRunning, running), append(toRelease, released)
		toScript = append(toScript, time.Unix(0, ns).Sub(start))
	}
	slices.Sort(toRunning)
	slices.Sort(toRelease)
	slices.Sort(toScript)
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
	t.Logf("builds on build server %s of a loopback mesh (3 voters + 1 build server), %d pushes (webhook to follower %s, leader %s)",
		bs.name, len(toRunning), via.name, leader.name)
	t.Logf("  webhook received → build running on the build server: p50 %s  p90 %s  max %s   goal p50 ≤ 200 ms: %s",
		ms(p(toRunning, .5)), ms(p(toRunning, .9)), ms(toRunning[len(toRunning)-1]), met(p(toRunning, .5) <= 200*time.Millisecond))
	t.Logf("  webhook received → build script started there:        p50 %s  p90 %s  max %s   (fetch, manifest, then the script)",
		ms(p(toScript, .5)), ms(p(toScript, .9)), ms(toScript[len(toScript)-1]))
	t.Logf("  push → release committed (trivial):                  p50 %s  p90 %s  max %s   goal ≤ 2 s: %s",
		ms(p(toRelease, .5)), ms(p(toRelease, .9)), ms(toRelease[len(toRelease)-1]), met(toRelease[len(toRelease)-1] <= 2*time.Second))
}
