package integration

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/testtier"
)

// TestDevFirstLook runs `node dev` as a newcomer would: it must build and deploy its sample app, print the sample
// service's URL, serve the release there, and on Ctrl-C stop the sample service and remove its data dir.
func TestDevFirstLook(t *testing.T) {
	needProcesses(t)
	if _, err := exec.LookPath("git"); err != nil {
		testtier.Skip(t, "node dev needs git, which is not installed")
	}
	bin := nodeBinary(t)
	cmd := exec.Command(bin, "dev", "--log-level", "warn",
		"--http-port", strconv.Itoa(freePort(t, "127.0.0.1")),
		"--gossip-port", strconv.Itoa(freePort(t, "127.0.0.1")),
		"--quic-port", strconv.Itoa(freePort(t, "127.0.0.1")))
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	// A file, not a buffer: the failure messages read it while the process may still write.
	stderr, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})

	var sampleURL, dataDir string
	var seen []string
	deadline := time.After(90 * time.Second)
	for ready := false; !ready; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("node dev exited before printing the sample URL; stdout:\n%s\nstderr:\n%s", strings.Join(seen, "\n"), devReadFile(stderr.Name()))
			}
			seen = append(seen, l)
			if v, ok := strings.CutPrefix(l, "sample service:"); ok {
				sampleURL = strings.TrimSpace(v)
			}
			ready = strings.HasPrefix(l, "Press Ctrl-C")
			if rest, ok := strings.CutPrefix(l, "Shoal dev mesh is running (data dir "); ok {
				dataDir, _, _ = strings.Cut(rest, ",")
			}
		case <-deadline:
			t.Fatalf("no sample URL from node dev within 90 s; stdout:\n%s\nstderr:\n%s", strings.Join(seen, "\n"), devReadFile(stderr.Name()))
		}
	}
	if sampleURL == "" {
		t.Fatalf("node dev printed no sample service URL:\n%s", strings.Join(seen, "\n"))
	}
	for _, want := range []string{"build sample-1: succeeded, release v1", "dashboard:", "admin token:", "export SHOAL_ADDR="} {
		if !strings.Contains(strings.Join(seen, "\n"), want) {
			t.Errorf("node dev's output lacks %q:\n%s", want, strings.Join(seen, "\n"))
		}
	}

	body := devGet(t, sampleURL)
	if !strings.Contains(body, "Hello from Shoal") || !strings.Contains(body, "release v1") {
		t.Fatalf("sample service answered %q, want its message and release v1", body)
	}
	// The summary is not buried in the node's log: that goes to the file it names.
	out := strings.Join(seen, "\n")
	if strings.Contains(out, "level=") || !strings.Contains(out, "node log: ") {
		t.Errorf("node dev's summary should name its log file and hold no log lines:\n%s", out)
	}

	// A commit rolls out, and node dev says so: one line for the build, one for the deployment.
	var repo string
	for _, l := range seen {
		if v, ok := strings.CutPrefix(l, "sample app: git repository "); ok {
			repo, _, _ = strings.Cut(v, " (")
		}
	}
	git := func(args ...string) {
		t.Helper()
		c := exec.Command("git", append([]string{"-C", repo}, args...)...)
		if b, err := c.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, b)
		}
	}
	if err := os.WriteFile(filepath.Join(repo, "message.txt"), []byte("Hello again\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qam", "new message")
	var buildLine, deployLine string
	deadline = time.After(90 * time.Second)
	for buildLine == "" || deployLine == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("node dev exited while a commit rolled out; stderr:\n%s", devReadFile(stderr.Name()))
			}
			seen = append(seen, l)
			if strings.HasPrefix(l, "build sample-2 succeeded") {
				buildLine = l
			}
			if strings.HasPrefix(l, "deployment ") && strings.Contains(l, "deploy v2 to dev succeeded") {
				deployLine = l
			}
		case <-deadline:
			t.Fatalf("node dev did not announce the new build and deployment within 90 s:\n%s", strings.Join(seen, "\n"))
		}
	}
	if !strings.Contains(buildLine, "release v2 from ") || !strings.Contains(buildLine, `"new message"`) {
		t.Errorf("build announcement %q: want the release, the commit and its message", buildLine)
	}
	go func() {
		for range lines {
		}
	}()
	port := strings.TrimSuffix(sampleURL[strings.LastIndex(sampleURL, ":")+1:], "/")
	if len(samplePIDs(port)) == 0 {
		t.Fatalf("no sample-server process for port %s found while it answers", port)
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("node dev exited with %v after SIGINT; stderr:\n%s", err, devReadFile(stderr.Name()))
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("node dev did not exit within 60 s of SIGINT; stderr:\n%s", devReadFile(stderr.Name()))
	}
	if pids := samplePIDs(port); len(pids) > 0 {
		t.Errorf("the sample server (pids %v) still runs after node dev exited", pids)
	}
	if dataDir != "" {
		if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
			t.Errorf("data dir %s is still there after exit (without --keep): %v", dataDir, err)
		}
	}
}

func devGet(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// samplePIDs finds live sample-server processes serving port.
func samplePIDs(port string) []int {
	var out []int
	entries, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, e := range entries {
		b, err := os.ReadFile(e)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if !hasSeq(args, "sample-server") || !hasSeq(args, "--port", port) {
			continue
		}
		if st, err := os.ReadFile(filepath.Join(filepath.Dir(e), "stat")); err == nil {
			// A zombie waits for its parent to reap it: it serves nothing.
			if i := bytes.LastIndexByte(st, ')'); i > 0 && i+2 < len(st) && st[i+2] == 'Z' {
				continue
			}
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(e)))
		out = append(out, pid)
	}
	return out
}

func hasSeq(args []string, seq ...string) bool {
	for i := 0; i+len(seq) <= len(args); i++ {
		match := true
		for j, s := range seq {
			if args[i+j] != s {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

func devReadFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
