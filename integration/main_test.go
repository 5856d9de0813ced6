package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"github.com/shoal-ci/shoal/internal/testtier"
)

// The node binary is built once per test run, on first use, so that `go test -short` (which runs no process test)
// builds nothing.
var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	if left := leftApps(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: the tests left %d deployed app processes running (pids %v; killed now): an app started by the deployer outlives its agent by design, so a test must stop the apps it deploys (deployApp.stopApps)\n", len(left), left)
		code = 1
	}
	os.Exit(code)
}

// runMarker is the value of appServerEnv in the apps this run deploys: leftApps finds them by it.
var runMarker = strconv.Itoa(os.Getpid())

// leftApps kills, and returns, the app processes this run deployed that still run.
func leftApps() []int {
	entries, _ := os.ReadDir("/proc")
	want := []byte(appServerEnv + "=" + runMarker + "\x00")
	var left []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !bytes.Contains(append(env, 0), want) {
			continue
		}
		left = append(left, pid)
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return left
}

// nodeBinary returns the path of the node binary built from this checkout. SHOAL_NODE_RACE=1 builds it with the
// race detector, so that process tests also catch races in the real binary (a racy node exits with status 66).
func nodeBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "shoal-integration-bin-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "node")
		args := []string{"build", "-o", binPath}
		if os.Getenv("SHOAL_NODE_RACE") == "1" {
			args = append(args, "-race")
		}
		args = append(args, "github.com/shoal-ci/shoal/cmd/node")
		cmd := exec.Command(goTool(), args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go %v: %w\n%s", args, err, out)
		}
	})
	if binErr != nil {
		t.Fatalf("build the node binary: %v", binErr)
	}
	return binPath
}

// goTool finds the go command that runs these tests: PATH first, then the toolchain's own GOROOT.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// needProcesses skips process-level tests under -short: they build the binary and start several processes.
func needProcesses(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping a test that builds the node binary and runs real node processes (CI runs it without -short)")
	}
	if runtime.GOOS != "linux" {
		testtier.Skipf(t, "process tests use Linux process groups and loopback aliases; %s is not supported", runtime.GOOS)
	}
}

// benchFull reads SHOAL_BENCH for a benchmark: false for smoke (the short form CI runs), true for full; with it
// unset the benchmark is skipped, saying how to run it.
func benchFull(t testing.TB) bool {
	t.Helper()
	switch mode := os.Getenv("SHOAL_BENCH"); mode {
	case "smoke", "1":
		return false
	case "full":
		return true
	case "":
		t.Skip("benchmark: set SHOAL_BENCH=smoke (the short form CI runs) or SHOAL_BENCH=full to run it (see docs/benchmarks.md)")
	default:
		t.Fatalf("SHOAL_BENCH=%q: use smoke or full", mode)
	}
	return false
}
