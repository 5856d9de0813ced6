package deployer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/testtier"
	"github.com/shoal-ci/shoal/internal/testutil"
)

type lifecycleFixture struct {
	t       *testing.T
	envDir  string
	trace   string
	sup     *Supervisor
	mu      sync.Mutex
	phases  []string
	archive []byte
}

func newLifecycleFixture(t *testing.T) *lifecycleFixture {
	base := t.TempDir()
	f := &lifecycleFixture{
		t:      t,
		envDir: filepath.Join(base, "apps", "web", "prod"),
		trace:  filepath.Join(base, "trace"),
	}
	stateDir := filepath.Join(f.envDir, "supervisor")
	f.sup = NewSupervisor(stateDir, testLogger(t))
	t.Cleanup(func() {
		f.sup.Close()
		if err := NewSupervisor(stateDir, nil).Stop(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	f.archive = makeArchive(t, []tarEntry{
		file("app.txt", "the app\n"),
		{name: "bin/serve", typ: '0', body: "#!/bin/bash\nexec sleep 600\n", mode: 0o755},
	})
	return f
}

func (f *lifecycleFixture) lifecycle(release string, hooks Hooks) *Lifecycle {
	return &Lifecycle{
		App: "web", Env: "prod", Release: release, Build: "7", Commit: "abc123", Branch: "main", Node: "n1",
		Deployment: "d-" + release,
		EnvDir:     f.envDir,
		InstallDir: filepath.Join(f.envDir, "releases", release),
		Vars:       []string{"TRACE=" + f.trace, "QUOTED=it's $(not run)"},
		Hooks:      hooks,
		OpenArchive: func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(f.archive)), nil
		},
		Supervisor: f.sup,
		Exec:       ExecSpec{MinStable: time.Hour, InitialBackoff: 10 * time.Millisecond, StopGrace: 5 * time.Second},
		OnPhase: func(p string) {
			f.mu.Lock()
			f.phases = append(f.phases, p)
			f.mu.Unlock()
		},
		Logger: testLogger(f.t),
	}
}

func (f *lifecycleFixture) takePhases() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := strings.Join(f.phases, " ")
	f.phases = nil
	return s
}

func (f *lifecycleFixture) traceLines() []string {
	b, _ := os.ReadFile(f.trace)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// tracing returns a hook line that records its phase and working directory.
func tracing(phase string) string {
	return `echo "` + phase + ` $(pwd -P)" >> "$TRACE"`
}

func webHooks() Hooks {
	return Hooks{
		Env: []EnvVar{{Key: "GREETING", Value: "hello $(echo world)"}, {Key: "QUOTED", Value: "from manifest"}},
		Sections: map[string][]string{
			PhasePreInstall:  {tracing("PreInstall"), `echo "entries $(ls -A | wc -l)" >> "$TRACE"`},
			PhasePostInstall: {tracing("PostInstall"), `test -f app.txt`},
			PhasePreStart:    {tracing("PreStart")},
			PhaseExec: {`echo "Exec $GREETING|$QUOTED|$SHOAL_RELEASE|$DISTELLI_APPNAME|$SHOAL_INSTALLHOME" >> "$TRACE"`,
				"exec bin/serve"},
			PhasePostStart: {tracing("PostStart")},
		},
	}
}

func TestDeployRunsPhasesInOrder(t *testing.T) {
	f := newLifecycleFixture(t)
	l1 := f.lifecycle("v1", webHooks())
	if err := l1.Deploy(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := f.takePhases(), "Env PreInstall Extract PostInstall Stop Flip PreStart Exec PostStart"; got != want {
		t.Fatalf("phases %q, want %q", got, want)
	}
	if cur, err := Current(f.envDir); err != nil || cur != l1.InstallDir {
		t.Fatalf("current = %q, %v; want %s", cur, err, l1.InstallDir)
	}
	testutil.Until(t, 20*time.Second, "the Exec line in the trace", func() bool { return len(f.traceLines()) >= 6 })
	inst, _ := filepath.EvalSymlinks(l1.InstallDir)
	want := []string{
		"PreInstall " + inst,
		"entries 0", // the release is not on disk yet when PreInstall runs
		"PostInstall " + inst,
		"PreStart " + inst,
		"PostStart " + inst,
		"Exec hello world|it's $(not run)|v1|web|" + l1.InstallDir,
	}
	got := f.traceLines()
	// Exec runs concurrently with PostStart, so compare its line apart.
	if strings.Join(got[:4], "\n") != strings.Join(want[:4], "\n") || !contains(got[4:], want[4]) || !contains(got[4:], want[5]) {
		t.Fatalf("trace:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	pids := f.sup.PIDs()
	if len(pids) != 1 || !alive(pids[0]) {
		t.Fatalf("exec pids %v", pids)
	}
	for _, p := range []string{PhaseEnv, PhasePreInstall, PhasePostInstall, PhasePreStart, PhasePostStart} {
		if _, err := os.Stat(l1.LogPath(p)); err != nil {
			t.Errorf("no log for %s: %v", p, err)
		}
	}
	if _, err := os.Stat(l1.ScriptPath(PhaseExec)); err != nil {
		t.Fatalf("no exec script: %v", err)
	}

	// The next release replaces the running process.
	l2 := f.lifecycle("v2", webHooks())
	if err := l2.Deploy(context.Background()); err != nil {
		t.Fatal(err)
	}
	if cur, _ := Current(f.envDir); cur != l2.InstallDir {
		t.Fatalf("current = %q after v2", cur)
	}
	if alive(pids[0]) {
		t.Fatal("v1's process still runs after v2 was deployed")
	}
	if now := f.sup.PIDs(); len(now) != 1 || now[0] == pids[0] {
		t.Fatalf("exec pids after v2: %v", now)
	}
	if err := l2.Deploy(context.Background()); err == nil {
		t.Fatal("deploying into the active release's directory succeeded")
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestDeployFailureBeforeFlipKeepsOldRunning(t *testing.T) {
	f := newLifecycleFixture(t)
	l1 := f.lifecycle("v1", webHooks())
	if err := l1.Deploy(context.Background()); err != nil {
		t.Fatal(err)
	}
	pids := f.sup.PIDs()

	bad := webHooks()
	bad.Sections[PhasePostInstall] = []string{`echo "bundle install: gem not found" >&2`, "exit 4"}
	l2 := f.lifecycle("v2", bad)
	err := l2.Deploy(context.Background())
	var pe *PhaseError
	if !errors.As(err, &pe) || pe.Phase != PhasePostInstall {
		t.Fatalf("got %v, want a PostInstall PhaseError", err)
	}
	if !strings.Contains(err.Error(), "exit status 4") || !strings.Contains(err.Error(), "gem not found") {
		t.Fatalf("error does not say what failed: %v", err)
	}
	if cur, _ := Current(f.envDir); cur != l1.InstallDir {
		t.Fatalf("current = %q, want the old %s", cur, l1.InstallDir)
	}
	if now := f.sup.PIDs(); len(now) != 1 || now[0] != pids[0] || !alive(now[0]) {
		t.Fatalf("old process %v replaced or gone: %v", pids, now)
	}

	// A phase that hangs is cut off by its timeout, with the same guarantee.
	slow := webHooks()
	slow.Sections[PhasePreInstall] = []string{"sleep 60 & wait"}
	slow.Timeouts = map[string]time.Duration{PhasePreInstall: 100 * time.Millisecond}
	err = f.lifecycle("v3", slow).Deploy(context.Background())
	if !errors.As(err, &pe) || pe.Phase != PhasePreInstall || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("got %v, want a PreInstall timeout", err)
	}
	if cur, _ := Current(f.envDir); cur != l1.InstallDir {
		t.Fatalf("current = %q after a timeout", cur)
	}

	// The retry of the failed release starts from a clean directory and succeeds.
	if err := f.lifecycle("v2", webHooks()).Deploy(context.Background()); err != nil {
		t.Fatal(err)
	}
	if alive(pids[0]) {
		t.Fatal("old process survived the successful deploy")
	}
}

func TestDeployInstallSectionReplacesExtraction(t *testing.T) {
	f := newLifecycleFixture(t)
	hooks := Hooks{Sections: map[string][]string{
		PhaseInstall:   {`echo custom > installed.txt`},
		PhaseStart:     {tracing("Start")},
		PhasePostStart: {`test -f installed.txt`},
	}}
	l := f.lifecycle("v1", hooks)
	l.OpenArchive = func() (io.ReadCloser, error) {
		t.Error("the archive was opened although Install is present")
		return nil, errors.New("no")
	}
	if err := l.Deploy(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := f.takePhases(), "Env Install Stop Flip Start PostStart"; got != want {
		t.Fatalf("phases %q, want %q", got, want)
	}
	if _, err := os.Stat(filepath.Join(l.InstallDir, "app.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the release was extracted although Install is present")
	}
}

func TestDeployPreInstallFilesAreKept(t *testing.T) {
	f := newLifecycleFixture(t)
	hooks := Hooks{Sections: map[string][]string{PhasePreInstall: {"echo pre > pre.txt"}}}
	l := f.lifecycle("v1", hooks)
	if err := l.Deploy(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"pre.txt", "app.txt", "bin/serve"} {
		if _, err := os.Stat(filepath.Join(l.InstallDir, name)); err != nil {
			t.Errorf("%s missing: %v", name, err)
		}
	}
	hooks.Sections[PhasePreInstall] = []string{"echo clash > app.txt"}
	err := f.lifecycle("v2", hooks).Deploy(context.Background())
	var pe *PhaseError
	if !errors.As(err, &pe) || pe.Phase != PhaseExtract {
		t.Fatalf("got %v, want an Extract error about app.txt", err)
	}
}

func TestRestartAndTerminate(t *testing.T) {
	f := newLifecycleFixture(t)
	hooks := webHooks()
	hooks.Sections[PhasePreRestart] = []string{tracing("PreRestart")}
	hooks.Sections[PhasePostRestart] = []string{tracing("PostRestart")}
	hooks.Sections[PhasePreTerminate] = []string{tracing("PreTerminate")}
	hooks.Sections[PhaseTerminate] = []string{tracing("Terminate")}
	hooks.Sections[PhasePostTerminate] = []string{tracing("PostTerminate")}
	if err := f.lifecycle("v1", hooks).Deploy(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.takePhases()
	before := f.sup.PIDs()

	restart := f.lifecycle("v1", hooks)
	restart.InstallDir = "" // Restart works on whatever is current
	if err := restart.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := f.takePhases(), "Env PreRestart Stop PreStart Exec PostStart PostRestart"; got != want {
		t.Fatalf("restart phases %q, want %q", got, want)
	}
	after := f.sup.PIDs()
	if len(after) != 1 || after[0] == before[0] || alive(before[0]) {
		t.Fatalf("restart did not replace the process: %v -> %v", before, after)
	}

	term := f.lifecycle("v1", hooks)
	term.InstallDir = ""
	if err := term.Terminate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := f.takePhases(), "Env PreTerminate Terminate Stop PostTerminate"; got != want {
		t.Fatalf("terminate phases %q, want %q", got, want)
	}
	if alive(after[0]) || len(f.sup.PIDs()) != 0 {
		t.Fatal("terminate left the Exec process running")
	}
	if resumed, _ := NewSupervisor(filepath.Join(f.envDir, "supervisor"), nil).Resume(); resumed {
		t.Fatal("a terminated app would come back after an agent restart")
	}
}

func TestEnvScriptRefusesBadNames(t *testing.T) {
	f := newLifecycleFixture(t)
	l := f.lifecycle("v1", Hooks{Env: []EnvVar{{Key: "A;rm -rf /", Value: "x"}}})
	if err := l.Deploy(context.Background()); err == nil {
		t.Fatal("a manifest Env name with shell syntax was accepted")
	}
	l = f.lifecycle("v1", Hooks{})
	l.Vars = []string{"no-equals-sign"}
	if err := l.Deploy(context.Background()); err == nil {
		t.Fatal("a malformed variable was accepted")
	}
}

func TestAgentDirIsNotOnScriptPath(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		testtier.Skipf(t, "cannot find the test binary: %v", err)
	}
	selfDir := filepath.Dir(self)
	l := &Lifecycle{BaseEnv: []string{"PATH=/usr/bin:" + selfDir + ":/bin", "HOME=/root"}}
	env := l.baseEnv()
	if env[0] != "PATH=/usr/bin:/bin" || env[1] != "HOME=/root" {
		t.Fatalf("script environment %v still holds the agent's directory %s", env, selfDir)
	}
}

func TestLifecycleHealthSpecAndRemoveRelease(t *testing.T) {
	f := newLifecycleFixture(t)
	l1 := f.lifecycle("v1", Hooks{})
	if err := l1.Deploy(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The check sees the scripts' variables and runs in the app home.
	h := l1.HealthSpec(HealthSpec{Command: `test "$SHOAL_RELEASE" = v1` + "\n" + `test -f app.txt`,
		Interval: 5 * time.Millisecond, Deadline: 10 * time.Second})
	if err := WaitHealthy(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	h = l1.HealthSpec(HealthSpec{Command: "false\ntrue", Interval: 5 * time.Millisecond, Deadline: 30 * time.Millisecond})
	if err := WaitHealthy(context.Background(), h); err == nil {
		t.Fatal("a failing first line passed: the check does not run with -e")
	}

	l2 := f.lifecycle("v2", Hooks{})
	if err := l2.Deploy(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := RemoveRelease(f.envDir, l2.InstallDir); err == nil {
		t.Fatal("removed the active release")
	}
	if err := RemoveRelease(f.envDir, l1.InstallDir); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Join(f.envDir, "releases"))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "v2,v2.shoal" {
		t.Fatalf("releases dir holds %v, want only v2 and its scripts", names)
	}
}
