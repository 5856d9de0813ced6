package builder

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/proc"
	"github.com/shoal-ci/shoal/internal/testutil"
)

// syncBuffer is a bytes.Buffer safe to read while RunScript writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func run(t *testing.T, ctx context.Context, s Script) (Result, string) {
	t.Helper()
	var out syncBuffer
	s.Out = &out
	if s.Dir == "" {
		s.Dir = t.TempDir()
	}
	res, err := RunScript(ctx, s)
	if err != nil {
		t.Fatalf("RunScript: %v", err)
	}
	return res, out.String()
}

// readPid waits for a script to write a pid into file.
func readPid(t *testing.T, file string) int {
	t.Helper()
	var pid int
	testutil.Until(t, 20*time.Second, "the script to write "+file, func() bool {
		data, err := os.ReadFile(file)
		if err != nil || !bytes.HasSuffix(data, []byte("\n")) {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(data)))
		return err == nil
	})
	return pid
}

// cancelWhenWritten cancels once a script has written file, from a goroutine the test waits for (it must
// not call t.Fatal, so a script that never writes the file just leaves the cancel to the deferred one).
func cancelWhenWritten(t *testing.T, file string, cancel context.CancelFunc) {
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if data, err := os.ReadFile(file); err == nil && bytes.HasSuffix(data, []byte("\n")) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
}

// processGone reports whether pid has exited (a zombie awaiting its reaper counts as gone).
func processGone(pid int) bool {
	st, err := proc.ReadStat(pid)
	return err != nil || st.State == 'Z'
}

func TestSetEStopsAtFirstFailure(t *testing.T) {
	res, out := run(t, context.Background(), Script{Name: "Build", Lines: []string{"echo one", "false", "echo two"}})
	if res.ExitCode != 1 || res.Succeeded() {
		t.Errorf("result %+v, want exit 1", res)
	}
	if out != "one\n" {
		t.Errorf("output %q, want only the line before the failure", out)
	}
}

func TestLinesFormOneScript(t *testing.T) {
	res, out := run(t, context.Background(), Script{Name: "Build", Lines: []string{
		"if [ -d . ]; then", "  echo yes", "else", "  echo no", "fi",
		"for i in 1 2; do\n  echo item $i\ndone\n",
		"exit 3",
	}})
	if res.ExitCode != 3 {
		t.Errorf("exit %d, want 3", res.ExitCode)
	}
	if out != "yes\nitem 1\nitem 2\n" {
		t.Errorf("output %q", out)
	}
}

func TestStdoutAndStderrMergedInWorkDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "marker"), []byte("here\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, out := run(t, context.Background(), Script{Name: "Build", Dir: dir, Lines: []string{"cat marker", "echo err >&2"}})
	if !res.Succeeded() || out != "here\nerr\n" {
		t.Errorf("result %+v output %q", res, out)
	}
}

func TestEnvironmentIsOnlyWhatWasGiven(t *testing.T) {
	t.Setenv("SHOAL_TEST_LEAK", "from the parent")
	res, out := run(t, context.Background(), Script{Name: "Build", Env: []string{"GIVEN=yes"}, Lines: []string{"env"}})
	if !res.Succeeded() {
		t.Fatalf("result %+v: %s", res, out)
	}
	allowed := map[string]bool{"GIVEN": true, "PATH": true, "HOME": true, "PWD": true, "SHLVL": true, "_": true, "OLDPWD": true}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, _, _ := strings.Cut(line, "=")
		if !allowed[k] {
			t.Errorf("unexpected variable in the script's environment: %q", line)
		}
	}
	for _, want := range []string{"GIVEN=yes", "PATH=" + DefaultPath, "HOME="} {
		if !strings.Contains(out, want) {
			t.Errorf("environment lacks %q:\n%s", want, out)
		}
	}
	// A PATH given by the caller wins over the default.
	_, out = run(t, context.Background(), Script{Name: "Build", Env: []string{"PATH=/bin:/usr/bin"}, Lines: []string{`echo "$PATH"`}})
	if out != "/bin:/usr/bin\n" {
		t.Errorf("given PATH became %q", out)
	}
}

func TestShellMetacharactersStayText(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "x")
	msg := "$(touch " + marker + "); rm -rf `touch " + marker + "` \"quoted\" 'single' && touch " + marker
	env, _, err := BuildEnv(BuildInfo{App: "a", Build: "1", Commit: "c", Branch: "main", CommitMessage: msg}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, out := run(t, context.Background(), Script{Name: "Build", Dir: dir, Env: env, Lines: []string{
		`echo "$SHOAL_COMMIT_MESSAGE"`,
		`echo $SHOAL_COMMIT_MESSAGE`, // unquoted: split into words, still never evaluated
	}})
	if !res.Succeeded() {
		t.Fatalf("result %+v: %s", res, out)
	}
	if first, _, _ := strings.Cut(out, "\n"); first != msg {
		t.Errorf("message arrived as %q, want %q", first, msg)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the commit message was executed")
	}
}

func TestSecretsRedacted(t *testing.T) {
	res, out := run(t, context.Background(), Script{
		Name:    "Build",
		Env:     []string{"TOKEN=s3cr3t-value"},
		Secrets: []string{"s3cr3t-value"},
		Lines: []string{
			`echo "token is $TOKEN"`,
			`printf 's3cr'; printf '3t-val'; sleep 0.05; printf 'ue at the end\n'`,
			`printf 'no newline %s' "$TOKEN"`,
		},
	})
	if !res.Succeeded() {
		t.Fatalf("result %+v", res)
	}
	want := "token is [redacted]\n[redacted] at the end\nno newline [redacted]"
	if out != want {
		t.Errorf("output %q, want %q", out, want)
	}
}

func TestTimeoutKillsWholeGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	res, out := run(t, context.Background(), Script{
		Name:      "Build",
		Dir:       dir,
		Timeout:   2 * time.Second,
		KillGrace: time.Second,
		Lines:     []string{"sleep 1000 &", `echo $! > child.pid`, "echo started", "sleep 1000"},
	})
	if !res.TimedOut || res.Cancelled || res.Succeeded() {
		t.Errorf("result %+v, want timed out", res)
	}
	if res.ExitCode != 128+15 {
		t.Errorf("exit code %d, want %d (SIGTERM)", res.ExitCode, 128+15)
	}
	if out != "started\n" {
		t.Errorf("output %q", out)
	}
	pid := readPid(t, pidFile)
	testutil.Until(t, 20*time.Second, "the background child to be gone", func() bool { return processGone(pid) })
}

func TestCancelKillsWholeGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	ctx, cancel := context.WithCancel(context.Background())
	cancelWhenWritten(t, pidFile, cancel)
	res, _ := run(t, ctx, Script{
		Name:  "Build",
		Dir:   dir,
		Lines: []string{"sleep 1000 &", `echo $! > child.pid`, "sleep 1000"},
	})
	if !res.Cancelled || res.TimedOut || res.Succeeded() {
		t.Errorf("result %+v, want cancelled", res)
	}
	pid := readPid(t, pidFile)
	testutil.Until(t, 20*time.Second, "the background child to be gone", func() bool { return processGone(pid) })
}

func TestSigkillAfterGraceWhenTermIgnored(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancelWhenWritten(t, filepath.Join(dir, "ready"), cancel)
	res, _ := run(t, ctx, Script{
		Name:      "Build",
		Dir:       dir,
		KillGrace: 200 * time.Millisecond,
		Lines:     []string{"trap '' TERM", "echo $$ > ready", "sleep 1000"},
	})
	if !res.Cancelled || res.ExitCode != 128+9 {
		t.Errorf("result %+v, want cancelled with SIGKILL (exit 137)", res)
	}
}

func TestLeftoverProcessesStoppedOnExit(t *testing.T) {
	dir := t.TempDir()
	res, out := run(t, context.Background(), Script{
		Name:  "Build",
		Dir:   dir,
		Lines: []string{"sleep 1000 &", `echo $! > child.pid`, "echo done"},
	})
	if !res.Succeeded() || out != "done\n" {
		t.Fatalf("result %+v output %q", res, out)
	}
	pid := readPid(t, filepath.Join(dir, "child.pid"))
	testutil.Until(t, 20*time.Second, "the leftover child to be gone", func() bool { return processGone(pid) })
}

func TestNoLinesRunsNothing(t *testing.T) {
	res, err := RunScript(context.Background(), Script{Name: "Build", Dir: "/nonexistent"})
	if err != nil || !res.Succeeded() {
		t.Errorf("empty section: %+v, %v", res, err)
	}
}

func TestMissingWorkDirIsAnError(t *testing.T) {
	_, err := RunScript(context.Background(), Script{Name: "Build", Dir: filepath.Join(t.TempDir(), "gone"), Lines: []string{"true"}})
	if err == nil {
		t.Error("want an error for a missing working directory")
	}
}
