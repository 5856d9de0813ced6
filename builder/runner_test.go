package builder

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-ci/shoal/raftfsm"
)

// gateDir makes a directory for gate files: a build section waits for its gate instead of the test sleeping.
// The gates are opened when the test ends, so no build script outlives it.
func gateDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { os.WriteFile(filepath.Join(dir, "all"), nil, 0o644) })
	return dir
}

func openGate(t *testing.T, dir, name string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitGate is a script line that blocks until $GATES/<name> (or $GATES/all) exists, for at most 2 minutes.
func waitGate(name string) string {
	return `i=0; while [ ! -e "$GATES/` + name + `" ] && [ ! -e "$GATES/all" ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done`
}

func TestFailingBuildRunsAfterBuildFailure(t *testing.T) {
	repo, _ := newAppRepo(t, `
build:
  build:
    - echo before the failure
    - "false"
    - echo never printed
  after_build_success:
    - echo success hook must not run
  after_build_failure:
    - echo "after-failure ran for $SHOAL_COMMIT"
package:
  include: ['*']
`, nil)
	m := newMesh(t, 1, Options{})
	m.createApp("web", map[string]any{"repo": repo.dir})
	b := m.waitFinished(m.startBuild(0, "web", "main").ID)
	if b.State != raftfsm.BuildFailed || b.Error != "Build failed with exit code 1" || b.Release != "" {
		t.Fatalf("build %+v", b)
	}
	log := m.buildLog(b.ID)
	for _, want := range []string{"before the failure", "after-failure ran for " + b.Commit, "build failed: Build failed with exit code 1 (recorded)"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "never printed") || strings.Contains(log, "success hook") {
		t.Errorf("the build went on after the failing line:\n%s", log)
	}
	if rels := m.releases("web"); len(rels) != 0 {
		t.Errorf("a failed build made releases %+v", rels)
	}
	if got := metricValue(m.svcs[0].m.builds.WithLabelValues("web", resultFailed)); got != 1 {
		t.Errorf("shoal_builds_total{result=failed} = %v", got)
	}
}

func TestBuildTimeoutKillsProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	repo, _ := newAppRepo(t, `
build:
  build:
    - sleep 300 &
    - echo $! > "$PID_FILE"
    - wait
  after_build_failure:
    - echo cleanup after timeout
  timeouts:
    build: 2s
`, nil)
	m := newMesh(t, 1, Options{})
	m.createApp("slow", map[string]any{"repo": repo.dir, "build_vars": map[string]any{"PID_FILE": map[string]any{"value": pidFile}}})
	b := m.startBuild(0, "slow", "")
	pid := readPid(t, pidFile)
	b = m.waitFinished(b.ID)
	if b.State != raftfsm.BuildFailed || b.Error != "Build timed out after 2s" {
		t.Fatalf("build %+v\n%s", b, m.buildLog(b.ID))
	}
	if !processGone(pid) {
		t.Errorf("the build's background process %d outlived the timeout", pid)
	}
	if log := m.buildLog(b.ID); !strings.Contains(log, "Build timed out after 2s: its process group was stopped") || !strings.Contains(log, "cleanup after timeout") {
		t.Errorf("log:\n%s", log)
	}
}

func TestCancelRunningAndQueuedBuilds(t *testing.T) {
	gates := gateDir(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	repo, _ := newAppRepo(t, `
build:
  build:
    - sleep 300 &
    - echo $! > "$PID_FILE"
    - `+waitGate("never")+`
  after_build_failure:
    - echo failure hook must not run on cancel
`, nil)
	m := newMesh(t, 1, Options{})
	m.createApp("web", map[string]any{"repo": repo.dir, "build_vars": map[string]any{
		"PID_FILE": map[string]any{"value": pidFile}, "GATES": map[string]any{"value": gates}}})
	first := m.startBuild(0, "web", "")
	second := m.startBuild(0, "web", "") // same app and branch: waits for the first
	pid := readPid(t, pidFile)
	m.waitRunning(first.ID)

	var got raftfsm.Build
	if _, err := m.api(0).Post(context.Background(), "/v1/builds/"+second.ID+"/cancel", nil, &got); err != nil {
		t.Fatal(err)
	}
	if got.State != raftfsm.BuildCancelled {
		t.Errorf("a queued build cancelled is %s", got.State)
	}
	if _, err := m.api(0).Post(context.Background(), "/v1/builds/"+first.ID+"/cancel", nil, &got); err != nil {
		t.Fatal(err)
	}
	if !got.CancelRequested {
		t.Errorf("a running build's cancel is not recorded: %+v", got)
	}
	b := m.waitFinished(first.ID)
	if b.State != raftfsm.BuildCancelled {
		t.Fatalf("build %+v", b)
	}
	if !processGone(pid) {
		t.Errorf("process %d of the cancelled build still runs", pid)
	}
	log := m.buildLog(first.ID)
	if strings.Contains(log, "failure hook") || !strings.Contains(log, "cancelled by request") {
		t.Errorf("log:\n%s", log)
	}
	if _, err := m.api(0).Post(context.Background(), "/v1/builds/"+first.ID+"/cancel", nil, nil); err == nil {
		t.Error("cancelling an ended build succeeded")
	}
}

func TestBadManifestFailsWithItsPlace(t *testing.T) {
	repo, _ := newAppRepo(t, "biuld:\n  build: [echo hi]\n", nil)
	m := newMesh(t, 1, Options{})
	m.createApp("web", map[string]any{"repo": repo.dir})
	b := m.waitFinished(m.startBuild(0, "web", "").ID)
	if b.State != raftfsm.BuildFailed || !strings.HasPrefix(b.Error, `manifest: shoal.yml:1:1: unknown key "biuld"`) {
		t.Fatalf("build %+v", b)
	}
	if log := m.buildLog(b.ID); !strings.Contains(log, `shoal.yml:1:1: unknown key "biuld" in the manifest: did you mean "build"?`) {
		t.Errorf("log:\n%s", log)
	}
}

func TestSecretVariablesRedactedFromLog(t *testing.T) {
	repo, _ := newAppRepo(t, `
build:
  build:
    - echo "key=$API_KEY mode=$MODE"
    - echo "$API_KEY" >&2
`, nil)
	m := newMesh(t, 1, Options{})
	m.createApp("web", map[string]any{"repo": repo.dir, "build_vars": map[string]any{
		"API_KEY": map[string]any{"value": "s3cr3t-v4lue", "secret": true}, "MODE": map[string]any{"value": "fast"}}})
	b := m.waitFinished(m.startBuild(0, "web", "").ID)
	log := m.buildLog(b.ID)
	if b.State != raftfsm.BuildSucceeded || strings.Contains(log, "s3cr3t") || !strings.Contains(log, "key=[redacted] mode=fast") {
		t.Fatalf("build %s; log:\n%s", b.State, log)
	}
}

func TestCustomVersionNotesAndVersionClash(t *testing.T) {
	repo, _ := newAppRepo(t, `
build:
  build: [echo build]
  custom_version_cmd:
    - echo "computing the version..."
    - cat VERSION
  release_notes_cmd:
    - 'echo "notes for $SHOAL_RELEASE: $SHOAL_COMMIT_MESSAGE"'
package:
  include: [VERSION]
`, map[string]string{"VERSION": "1.2.3\n"})
	m := newMesh(t, 1, Options{})
	m.createApp("web", map[string]any{"repo": repo.dir})
	b := m.waitFinished(m.startBuild(0, "web", "").ID)
	if b.State != raftfsm.BuildSucceeded || b.Release != "1.2.3" {
		t.Fatalf("build %+v\n%s", b, m.buildLog(b.ID))
	}
	rels := m.releases("web")
	if len(rels) != 1 || rels[0].Version != "1.2.3" || rels[0].Notes != "notes for 1.2.3: first commit" {
		t.Fatalf("releases %+v", rels)
	}
	// The same commit built again computes the same version: the release is refused and the build fails.
	again := m.waitFinished(m.startBuild(0, "web", "").ID)
	if again.State != raftfsm.BuildFailed || !strings.Contains(again.Error, `already has a release "1.2.3"`) {
		t.Fatalf("second build %+v\n%s", again, m.buildLog(again.ID))
	}
	if rels := m.releases("web"); len(rels) != 1 {
		t.Errorf("releases %+v", rels)
	}
}

func TestOneBuildPerBranchAndConcurrencyLimit(t *testing.T) {
	gates := gateDir(t)
	manifest := `
build:
  build:
    - echo started > "$GATES/started-$SHOAL_APP-$SHOAL_BUILD"
    - ` + waitGate("$SHOAL_APP-$SHOAL_BUILD") + `
`
	m := newMesh(t, 1, Options{MaxConcurrent: 2})
	for _, app := range []string{"a", "b", "c"} {
		repo, _ := newAppRepo(t, manifest, nil)
		m.createApp(app, map[string]any{"repo": repo.dir, "build_vars": map[string]any{"GATES": map[string]any{"value": gates}}})
	}
	a1 := m.startBuild(0, "a", "")
	a2 := m.startBuild(0, "a", "")
	b1 := m.startBuild(0, "b", "")
	c1 := m.startBuild(0, "c", "")
	m.waitRunning(a1.ID)
	m.waitRunning(b1.ID)
	// Two run (the limit); a's second waits for a's first, c for a free slot.
	for _, id := range []string{a2.ID, c1.ID} {
		if b, _ := m.getBuild(0, id); b.State != raftfsm.BuildQueued {
			t.Errorf("%s is %s while two builds run", id, b.State)
		}
	}
	if got := queueDepth(t, m, 0); got != 2 {
		t.Errorf("shoal_build_queue_depth = %v, want 2", got)
	}
	openGate(t, gates, "a-1")
	m.waitFinished(a1.ID)
	// The freed slot goes to the oldest queued build that may run: a's second.
	m.waitRunning(a2.ID)
	if b, _ := m.getBuild(0, c1.ID); b.State != raftfsm.BuildQueued {
		t.Errorf("c-1 is %s; a-2 was queued before it", b.State)
	}
	openGate(t, gates, "all")
	for _, id := range []string{a2.ID, b1.ID, c1.ID} {
		if b := m.waitFinished(id); b.State != raftfsm.BuildSucceeded {
			t.Errorf("%s %s", id, b.State)
		}
	}
}

// queueDepth scrapes shoal_build_queue_depth from node i's /metrics.
func queueDepth(t *testing.T, m *mesh, i int) float64 {
	t.Helper()
	resp, err := m.rawGet(i, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v float64 = -1
	for _, line := range readLines(resp.Body) {
		if rest, ok := strings.CutPrefix(line, "shoal_build_queue_depth "); ok {
			v = parseFloat(rest)
		}
	}
	return v
}

// PreRelease runs after Build and before AfterBuildSuccess and the packaging, in Distelli's order, so it can
// change the artifacts; when it fails, the build fails and AfterBuildFailure runs.
func TestPreReleaseRunsBeforePackaging(t *testing.T) {
	repo, _ := newAppRepo(t, `
build:
  build:
    - mkdir -p out && echo built > out/info.txt
  pre_release:
    - echo "pre-released $SHOAL_COMMIT" >> out/info.txt
  after_build_success:
    - cat out/info.txt
package:
  include: ['out/*']
`, nil)
	m := newMesh(t, 1, Options{})
	m.createApp("web", map[string]any{"repo": repo.dir})
	b := m.waitFinished(m.startBuild(0, "web", "main").ID)
	if b.State != raftfsm.BuildSucceeded {
		t.Fatalf("build %+v\n%s", b, m.buildLog(b.ID))
	}
	log := m.buildLog(b.ID)
	if !strings.Contains(log, "built\npre-released "+b.Commit) {
		t.Errorf("AfterBuildSuccess should see Build's and then PreRelease's output:\n%s", log)
	}

	repo.commit("pre-release fails", map[string]string{"shoal.yml": `
build:
  build: [echo built]
  pre_release: ["false"]
  after_build_failure: [echo failure hook ran]
package:
  include: ['*']
`})
	b = m.waitFinished(m.startBuild(0, "web", "main").ID)
	if b.State != raftfsm.BuildFailed || b.Error != "PreRelease failed with exit code 1" {
		t.Fatalf("build %+v", b)
	}
	if b.Message != "pre-release fails" {
		t.Errorf("a manual build records its commit's subject: message %q", b.Message)
	}
	if log := m.buildLog(b.ID); !strings.Contains(log, "failure hook ran") {
		t.Errorf("AfterBuildFailure did not run after a failed PreRelease:\n%s", log)
	}
}
