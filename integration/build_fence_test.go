package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/builder"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/raftfsm"
)

// TestBuildDeposedLeaderCannotPublish stops the leader of a 3-process mesh with SIGSTOP while it builds, lets a
// new leader take over and finish the build, lets the old leader's build script finish too, and resumes the
// old leader with SIGCONT. The old leader then tries to publish its result under its old term: the FSM refuses
// it, its build log says so, its metrics count a fenced build, and the commit is exactly one release.
func TestBuildDeposedLeaderCannotPublish(t *testing.T) {
	needProcesses(t)
	g := newGate(t)
	repo := newTestRepo(t, t.TempDir(), "web.git")
	// Each attempt marks its start and its end with its own files beside the gate, so the test knows when the
	// scripts run and when both are done.
	sha := repo.commit("web", map[string]string{"shoal.yml": `
build:
  build:
    - mktemp "$GATE.started.XXXXXX"
    - ` + g.line() + `
    - mktemp "$GATE.done.XXXXXX"
package:
  include: [shoal.yml]
`})
	m := startPmesh(t, 3)
	old := m.waitHealthy(m.nodes...)
	api := m.client(old)
	api.RetryNoLeader = 30 * time.Second
	ctx := context.Background()
	if _, err := api.Post(ctx, "/v1/apps", map[string]any{"name": "web", "repo": repo.dir,
		"build_vars": map[string]any{"GATE": map[string]any{"value": g.path}}}, nil); err != nil {
		t.Fatal(err)
	}
	var b raftfsm.Build
	if _, err := api.Post(ctx, "/v1/apps/web/builds", builder.BuildRequest{}, &b); err != nil {
		t.Fatal(err)
	}
	first := waitBuildVia(t, api, b.ID, "running on the leader", 30*time.Second, func(b raftfsm.Build) bool {
		return b.State == raftfsm.BuildRunning && b.Node == old.name
	})
	testutil.Eventually(t, 30*time.Second, "the first attempt's script to start", func() (bool, string) {
		started, _ := filepath.Glob(g.path + ".started.*")
		return len(started) == 1, fmt.Sprintf("%d started", len(started))
	})

	// Freeze the leader (only the node process: its build script, in its own process group, keeps running).
	if err := syscall.Kill(old.proc.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			syscall.Kill(old.proc.Pid(), syscall.SIGCONT)
		}
	})
	var survivors []*pnode
	for _, n := range m.nodes {
		if n != old {
			survivors = append(survivors, n)
		}
	}
	leader := m.waitLeader(survivors...)
	sapi := m.client(leader)
	second := waitBuildVia(t, sapi, b.ID, "running again on the new leader", 30*time.Second, func(b raftfsm.Build) bool {
		return b.State == raftfsm.BuildRunning && b.Node == leader.name
	})
	if second.Term <= first.Term || second.Attempt != 2 {
		t.Fatalf("the new leader runs %+v; first attempt was %+v", second, first)
	}

	// Both scripts finish: the new leader's publishes; the old leader's waits, frozen, for its node to resume.
	g.open()
	done := waitBuildVia(t, sapi, b.ID, "finished", 60*time.Second, func(b raftfsm.Build) bool { return b.Finished() })
	if done.State != raftfsm.BuildSucceeded || done.Node != leader.name || done.Term != second.Term || done.Release != "v1" {
		t.Fatalf("build %+v", done)
	}
	testutil.Eventually(t, 30*time.Second, "both attempts' scripts to end", func() (bool, string) {
		ends, _ := filepath.Glob(g.path + ".done.*")
		return len(ends) == 2, fmt.Sprintf("%d ended", len(ends))
	})

	if err := syscall.Kill(old.proc.Pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true
	logPath := filepath.Join(old.dir, "builds", b.ID+".log")
	testutil.Eventually(t, 60*time.Second, "the old leader's result to be refused", func() (bool, string) {
		data, _ := os.ReadFile(logPath)
		return strings.Contains(string(data), "this attempt's result is discarded"), string(data)
	})
	oldLog, _ := os.ReadFile(logPath)
	if !strings.Contains(string(oldLog), fmt.Sprintf("leader term %d is over", first.Term)) {
		t.Errorf("the old leader's log does not say its term is over:\n%s", oldLog)
	}
	t.Logf("the old leader's build log:\n%s", oldLog)
	testutil.Eventually(t, 30*time.Second, "the old leader to count a fenced build", func() (bool, string) {
		text, err := scrape(m, old)
		return err == nil && strings.Contains(text, `shoal_builds_total{app="web",result="fenced"} 1`), fmt.Sprint(err)
	})

	// Exactly one release, the new leader's, seen the same by every node once the old one has caught up.
	m.waitHealthy(m.nodes...)
	for _, n := range m.nodes {
		var rels []raftfsm.Release
		if _, err := m.client(n).Get(ctx, "/v1/apps/web/releases?consistent", &rels); err != nil {
			t.Fatal(err)
		}
		// Holders grow as the release spreads (the old leader even built the same bytes), so only the builder is
		// checked among them.
		if len(rels) != 1 || rels[0].Commit != sha || rels[0].Build != b.ID || !slices.Contains(rels[0].Holders, leader.name) {
			t.Errorf("releases on %s: %+v; want one, built by %s", n.name, rels, leader.name)
		}
		var got raftfsm.Build
		if _, err := m.client(n).Get(ctx, "/v1/builds/"+b.ID+"?consistent", &got); err != nil || got.Term != done.Term || got.State != raftfsm.BuildSucceeded {
			t.Errorf("build on %s: %+v %v", n.name, got, err)
		}
	}
}

// scrape reads a process node's /metrics.
func scrape(m *pmesh, n *pnode) (string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+n.api()+"/metrics", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+m.admin)
	resp, err := m.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return string(data), err
}

// parseMetrics reads Prometheus text: each sample line's name (labels included) and value.
func parseMetrics(body string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			out[name] = v
		}
	}
	return out
}

// TestBuildLeaderKilled9MidBuild kills the leader of a 3-process mesh with SIGKILL while it builds. The next
// leader runs the build again and it becomes exactly one release; the killed node, restarted, stops the build
// script its earlier life left running (no section time limit guards it any more).
func TestBuildLeaderKilled9MidBuild(t *testing.T) {
	needProcesses(t)
	g := newGate(t)
	repo := newTestRepo(t, t.TempDir(), "web.git")
	sha := repo.commit("web", map[string]string{"shoal.yml": `
build:
  build:
    - echo $$ >> "$GATE.pids"
    - ` + g.line() + `
package:
  include: [shoal.yml]
`})
	pids := func() []int {
		data, _ := os.ReadFile(g.path + ".pids")
		var out []int
		for _, f := range strings.Fields(string(data)) {
			var p int
			fmt.Sscan(f, &p)
			out = append(out, p)
		}
		return out
	}
	alive := func(pid int) bool {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		i := strings.LastIndexByte(string(data), ')')
		return i > 0 && len(data) > i+2 && data[i+2] != 'Z'
	}

	m := startPmesh(t, 3)
	old := m.waitHealthy(m.nodes...)
	api := m.client(old)
	ctx := context.Background()
	if _, err := api.Post(ctx, "/v1/apps", map[string]any{"name": "web", "repo": repo.dir,
		"build_vars": map[string]any{"GATE": map[string]any{"value": g.path}}}, nil); err != nil {
		t.Fatal(err)
	}
	var b raftfsm.Build
	if _, err := api.Post(ctx, "/v1/apps/web/builds", builder.BuildRequest{}, &b); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "the first attempt's script to run", func() (bool, string) {
		return len(pids()) == 1, fmt.Sprint(pids())
	})
	orphan := pids()[0]
	t.Cleanup(func() { syscall.Kill(orphan, syscall.SIGKILL) })

	old.proc.Kill() // SIGKILL to the node's process group; the script has its own group and lives on
	var survivors []*pnode
	for _, n := range m.nodes {
		if n != old {
			survivors = append(survivors, n)
		}
	}
	leader := m.waitLeader(survivors...)
	sapi := m.client(leader)
	waitBuildVia(t, sapi, b.ID, "running again on the new leader", 30*time.Second, func(b raftfsm.Build) bool {
		return b.State == raftfsm.BuildRunning && b.Node == leader.name && b.Attempt == 2
	})
	testutil.Eventually(t, 30*time.Second, "the second attempt's script to run", func() (bool, string) {
		return len(pids()) == 2, fmt.Sprint(pids())
	})
	if !alive(orphan) {
		t.Fatalf("the killed node's script %d is not running: nothing to test", orphan)
	}

	m.restart(old)
	testutil.Eventually(t, 30*time.Second, "the restarted node to stop its earlier life's script", func() (bool, string) {
		return !alive(orphan), fmt.Sprintf("pid %d alive", orphan)
	})
	if second := pids()[1]; !alive(second) {
		t.Errorf("the new leader's script %d was stopped too", second)
	}
	g.open()
	done := waitBuildVia(t, sapi, b.ID, "finished", 60*time.Second, func(b raftfsm.Build) bool { return b.Finished() })
	if done.State != raftfsm.BuildSucceeded || done.Node != leader.name {
		t.Fatalf("build %+v", done)
	}
	m.waitHealthy(m.nodes...)
	var rels []raftfsm.Release
	if _, err := m.client(old).Get(ctx, "/v1/apps/web/releases?consistent", &rels); err != nil {
		t.Fatal(err)
	}
	if len(rels) != 1 || rels[0].Commit != sha || rels[0].Build != b.ID {
		t.Errorf("releases %+v; want exactly one, of %s", rels, sha)
	}
}
