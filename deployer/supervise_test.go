package deployer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/proc"
	"github.com/shoal-ci/shoal/internal/testutil"
)

const helperEnv = "SHOAL_TEST_SUPERVISE_HELPER"

type helperConfig struct {
	StateDir string
	Spec     ExecSpec
}

func TestMain(m *testing.M) {
	if cfg := os.Getenv(helperEnv); cfg != "" {
		os.Exit(supervisorHelper(cfg))
	}
	if os.Getenv(appServerEnv) != "" {
		os.Exit(appServer())
	}
	os.Exit(m.Run())
}

// supervisorHelper is a stand-in agent run as a separate process: it supervises a spec, prints its
// pids and then waits to be killed (or for stdin to close, so it never outlives the test).
func supervisorHelper(cfg string) int {
	var c helperConfig
	if err := json.Unmarshal([]byte(cfg), &c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	s := NewSupervisor(c.StateDir, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err := s.Start(c.Spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	pids := s.PIDs()
	for len(pids) < c.Spec.withDefaults().Count {
		time.Sleep(10 * time.Millisecond) // the helper's own loop, not a test wait
		pids = s.PIDs()
	}
	fmt.Printf("pids %s\n", strings.Trim(fmt.Sprint(pids), "[]"))
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	s.Close()
	return 0
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// alive reports whether pid runs (zombies count as gone).
func alive(pid int) bool {
	st, err := proc.ReadStat(pid)
	return err == nil && st.State != 'Z' && st.State != 'X'
}

type fixture struct {
	dir      string
	stateDir string
	spec     ExecSpec
}

// newFixture writes script into a temp app dir and returns a spec for it, with a cleanup that kills
// whatever the state dir still names.
func newFixture(t *testing.T, script string) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{dir: dir, stateDir: filepath.Join(dir, "state")}
	scriptPath := filepath.Join(dir, "run.sh")
	if err := os.WriteFile(scriptPath, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	f.spec = ExecSpec{
		Script:         scriptPath,
		Dir:            dir,
		Env:            []string{"PATH=/usr/local/bin:/usr/bin:/bin", "OUT=" + filepath.Join(dir, "out")},
		LogPath:        filepath.Join(dir, "logs", "exec.log"),
		MinStable:      time.Hour,
		InitialBackoff: 5 * time.Millisecond,
		MaxBackoff:     20 * time.Millisecond,
		StopGrace:      5 * time.Second,
	}
	t.Cleanup(func() {
		s := NewSupervisor(f.stateDir, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("cleanup stop: %v", err)
		}
	})
	return f
}

const sleeper = "echo \"started $$\" >> \"$OUT\"\nexec sleep 600\n"

func TestSupervisorBackoffDoublesForShortRuns(t *testing.T) {
	f := newFixture(t, "echo ran >> \"$OUT\"\nexit 3\n")
	s := NewSupervisor(f.stateDir, testLogger(t))
	var mu sync.Mutex
	var delays []time.Duration
	s.OnRestart(func(slot int, d time.Duration) {
		mu.Lock()
		delays = append(delays, d)
		mu.Unlock()
	})
	if err := s.Start(f.spec); err != nil {
		t.Fatal(err)
	}
	testutil.Until(t, 20*time.Second, "5 restarts", func() bool { return s.Restarts() >= 5 })
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := fmt.Sprint(delays[:5])
	mu.Unlock()
	if want := "[5ms 10ms 20ms 20ms 20ms]"; got != want {
		t.Fatalf("back-off delays %s, want %s", got, want)
	}
	log, _ := os.ReadFile(f.spec.LogPath)
	if !bytes.Contains(log, []byte("exit status 3")) {
		t.Fatalf("exec log does not say why the process ended:\n%s", log)
	}
}

func TestSupervisorRestartsStableRunsAtOnce(t *testing.T) {
	f := newFixture(t, "exit 0\n")
	f.spec.MinStable = time.Nanosecond // every run counts as stable
	s := NewSupervisor(f.stateDir, testLogger(t))
	var mu sync.Mutex
	var delays []time.Duration
	s.OnRestart(func(slot int, d time.Duration) {
		mu.Lock()
		delays = append(delays, d)
		mu.Unlock()
	})
	if err := s.Start(f.spec); err != nil {
		t.Fatal(err)
	}
	testutil.Until(t, 20*time.Second, "3 restarts", func() bool { return s.Restarts() >= 3 })
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, d := range delays {
		if d != 0 {
			t.Fatalf("a stable run was restarted after %s, want at once", d)
		}
	}
}

func TestSupervisorProcessCountAndRestartAfterKill(t *testing.T) {
	f := newFixture(t, sleeper)
	f.spec.Count = 3
	s := NewSupervisor(f.stateDir, testLogger(t))
	if err := s.Start(f.spec); err != nil {
		t.Fatal(err)
	}
	pids := s.PIDs()
	if len(pids) != 3 || pids[0] == pids[1] || pids[1] == pids[2] || pids[0] == pids[2] {
		t.Fatalf("PIDs() = %v, want 3 distinct", pids)
	}
	for _, p := range pids {
		if !alive(p) {
			t.Fatalf("pid %d is not running", p)
		}
	}
	if err := s.Start(f.spec); err != nil {
		t.Fatalf("Start again with the same spec: %v", err)
	}

	if err := syscall.Kill(pids[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.Until(t, 20*time.Second, "slot 1 restarted", func() bool {
		now := s.PIDs()
		return len(now) == 3 && now[1] != pids[1] && alive(now[1])
	})
	if got := s.Restarts(); got != 1 {
		t.Fatalf("Restarts() = %d, want 1", got)
	}
	now := s.PIDs()
	if now[0] != pids[0] || now[2] != pids[2] {
		t.Fatalf("other slots changed: %v -> %v", pids, now)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, p := range now {
		if alive(p) {
			t.Fatalf("pid %d survived Stop", p)
		}
	}
}

func TestSupervisorSamePIDAcrossInProcessRestarts(t *testing.T) {
	f := newFixture(t, sleeper)
	s := NewSupervisor(f.stateDir, testLogger(t))
	if err := s.Start(f.spec); err != nil {
		t.Fatal(err)
	}
	pid := s.PIDs()[0]
	for i := range 5 {
		s.Close() // the agent goes away; the process must not
		if !alive(pid) {
			t.Fatalf("cycle %d: the process died with its supervisor", i)
		}
		s = NewSupervisor(f.stateDir, testLogger(t))
		if i%2 == 0 {
			if err := s.Start(f.spec); err != nil {
				t.Fatal(err)
			}
		} else if resumed, err := s.Resume(); err != nil || !resumed {
			t.Fatalf("Resume: %v, %v", resumed, err)
		}
		if got := s.PIDs(); len(got) != 1 || got[0] != pid {
			t.Fatalf("cycle %d: PIDs() = %v, want the adopted %d", i, got, pid)
		}
	}
	if s.Restarts() != 0 {
		t.Fatalf("adoption counted %d restarts", s.Restarts())
	}
	assertSupervisedByNew(t, s, pid)
	s.Close()
}

// assertSupervisedByNew kills the adopted process and expects s to start it again.
func assertSupervisedByNew(t *testing.T, s *Supervisor, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.Until(t, 20*time.Second, "the new supervisor to restart the process", func() bool {
		now := s.PIDs()
		return len(now) == 1 && now[0] != pid && alive(now[0])
	})
	if s.Restarts() != 1 {
		t.Fatalf("Restarts() = %d, want 1", s.Restarts())
	}
}

func TestSupervisorSamePIDAfterAgentSIGKILL(t *testing.T) {
	f := newFixture(t, sleeper)
	cfg, err := json.Marshal(helperConfig{StateDir: f.stateDir, Spec: f.spec})
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	for i := range 5 {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), helperEnv+"="+string(cfg))
		cmd.Stderr = tWriter{t}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("cycle %d: helper agent printed no pids: %v", i, err)
		}
		got, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "pids ")))
		if err != nil {
			t.Fatalf("cycle %d: helper said %q", i, line)
		}
		if i == 0 {
			pid = got
		} else if got != pid {
			t.Fatalf("cycle %d: the restarted agent runs pid %d, want the adopted %d", i, got, pid)
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		stdin.Close()
		if !alive(pid) {
			t.Fatalf("cycle %d: the process died with the agent", i)
		}
	}
	s := NewSupervisor(f.stateDir, testLogger(t))
	if err := s.Start(f.spec); err != nil {
		t.Fatal(err)
	}
	if got := s.PIDs(); len(got) != 1 || got[0] != pid {
		t.Fatalf("PIDs() = %v, want the adopted %d", got, pid)
	}
	assertSupervisedByNew(t, s, pid)
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestSupervisorDoesNotAdoptReusedPID(t *testing.T) {
	f := newFixture(t, sleeper)
	// A live process that is not ours sits at the recorded pid: the start time gives it away.
	other := exec.Command("sleep", "600")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	st, err := proc.ReadStat(other.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := f.spec.withDefaults().hash()
	if err != nil {
		t.Fatal(err)
	}
	state, _ := json.Marshal(supervisorState{Instances: []instanceRecord{{
		Slot: 0, PID: other.Process.Pid, StartTicks: st.StartTicks + 1, SpecHash: hash, StartedAt: time.Now(),
	}}})
	if err := os.MkdirAll(f.stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.stateDir, stateFileName), state, 0o600); err != nil {
		t.Fatal(err)
	}
	s := NewSupervisor(f.stateDir, testLogger(t))
	if err := s.Start(f.spec); err != nil {
		t.Fatal(err)
	}
	if got := s.PIDs(); len(got) != 1 || got[0] == other.Process.Pid {
		t.Fatalf("PIDs() = %v: the reused pid %d was adopted", got, other.Process.Pid)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !alive(other.Process.Pid) {
		t.Fatal("Stop killed a process that was never ours")
	}
}

func TestSupervisorStopKillsStubbornGroup(t *testing.T) {
	f := newFixture(t, "trap '' TERM\nsleep 600 &\necho $! > \"$OUT.child\"\nwait\n")
	f.spec.StopGrace = 200 * time.Millisecond
	s := NewSupervisor(f.stateDir, testLogger(t))
	if err := s.Start(f.spec); err != nil {
		t.Fatal(err)
	}
	pid := s.PIDs()[0]
	var child int
	testutil.Until(t, 20*time.Second, "the script's child", func() bool {
		b, err := os.ReadFile(f.spec.Env[1][len("OUT="):] + ".child")
		if err != nil {
			return false
		}
		child, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if alive(pid) || alive(child) {
		t.Fatalf("after Stop: script alive %v, child alive %v", alive(pid), alive(child))
	}
}

func TestSupervisorStopFromFreshSupervisorAndSpecChange(t *testing.T) {
	f := newFixture(t, sleeper)
	s := NewSupervisor(f.stateDir, testLogger(t))
	if err := s.Start(f.spec); err != nil {
		t.Fatal(err)
	}
	old := s.PIDs()[0]
	s.Close()

	// A new release: another environment means another hash, so the old process is replaced.
	changed := f.spec
	changed.Env = append(append([]string{}, f.spec.Env...), "RELEASE=v2")
	s = NewSupervisor(f.stateDir, testLogger(t))
	if err := s.Start(changed); err != nil {
		t.Fatal(err)
	}
	if alive(old) {
		t.Fatal("the previous spec's process still runs")
	}
	cur := s.PIDs()[0]
	if err := s.Start(f.spec); err == nil {
		t.Fatal("Start with another spec while running succeeded")
	}
	s.Close()

	// A restarted agent that only wants the app gone.
	s = NewSupervisor(f.stateDir, testLogger(t))
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if alive(cur) {
		t.Fatal("Stop on a fresh supervisor left the process running")
	}
	if resumed, err := NewSupervisor(f.stateDir, nil).Resume(); resumed || err != nil {
		t.Fatalf("Resume after Stop: %v, %v; want nothing to resume", resumed, err)
	}
	if err := s.Start(f.spec); err != nil {
		t.Fatalf("Start after Stop: %v", err)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.Start(f.spec); err != ErrSupervisorClosed {
		t.Fatalf("Start after Close: %v", err)
	}
}

// An agent killed between forking a process and recording it leaves an orphan no state file names; the
// environment marker finds it: adopted when it runs the spec, stopped when it does not.
func TestSupervisorFindsUnrecordedProcesses(t *testing.T) {
	f := newFixture(t, sleeper)
	f.spec.Count = 2
	s := NewSupervisor(f.stateDir, testLogger(t))
	hash, err := f.spec.withDefaults().hash()
	if err != nil {
		t.Fatal(err)
	}
	orphan := func(hash string, slot int) int {
		pid, err := syscall.ForkExec("/bin/bash", []string{"bash", "-e", f.spec.Script}, &syscall.ProcAttr{
			Dir: f.dir, Env: append(append([]string{}, f.spec.Env...), s.marker(hash, slot)),
			Sys: &syscall.SysProcAttr{Setsid: true},
		})
		if err != nil {
			t.Fatal(err)
		}
		return pid
	}
	mine := orphan(hash, 1)
	foreign := orphan("0000", 0)
	t.Cleanup(func() {
		for _, p := range []int{mine, foreign} {
			_ = syscall.Kill(p, syscall.SIGKILL)
			reap(p)
		}
	})
	testutil.Until(t, 20*time.Second, "the orphans to exec", func() bool { return len(findMarked(markerVar+"="+s.id+"/")) == 2 })

	if err := s.Start(f.spec); err != nil {
		t.Fatal(err)
	}
	pids := s.PIDs()
	if len(pids) != 2 || pids[1] != mine || pids[0] == foreign {
		t.Fatalf("PIDs() = %v; want slot 1 adopted (%d) and slot 0 new", pids, mine)
	}
	testutil.Until(t, 20*time.Second, "the other spec's orphan to be stopped", func() bool { reap(foreign); return !alive(foreign) })
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if alive(mine) {
		t.Fatal("Stop left the adopted orphan running")
	}
}
