package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is one running `node` process. Its output goes to files that the test log shows if the test fails, and it
// is killed when the test ends, whatever happened.
type proc struct {
	t       testing.TB
	name    string
	cmd     *exec.Cmd
	outPath string
	errPath string
	done    chan struct{} // closed when the process has exited and been reaped
	waitErr error
}

var procSeq struct {
	sync.Mutex
	n int
}

// startProc runs the node binary with args. name labels its output in the test log.
func startProc(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	return startProcOf(t, nodeBinary(t), name, args...)
}

// startProcOf runs the node binary at bin (another build, as the upgrade test's) with args.
func startProcOf(t testing.TB, bin, name string, args ...string) *proc {
	t.Helper()
	procSeq.Lock()
	procSeq.n++
	seq := procSeq.n
	procSeq.Unlock()
	dir := t.TempDir()
	p := &proc{t: t, name: name, done: make(chan struct{}),
		outPath: filepath.Join(dir, fmt.Sprintf("%s-%d.stdout", name, seq)),
		errPath: filepath.Join(dir, fmt.Sprintf("%s-%d.stderr", name, seq))}
	out, err := os.Create(p.outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	errf, err := os.Create(p.errPath)
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = out, errf
	p.cmd.Env = cleanEnv()
	p.cmd.SysProcAttr = sysProcAttr()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start node %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			p.dump()
		}
	})
	return p
}

// cleanEnv is this process's environment without SHOAL_* variables, so that a developer's SHOAL_ADDR or
// SHOAL_TOKEN cannot steer the nodes under test. SHOAL_CPUPROFILE_DIR passes through: it profiles every node.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SHOAL_") || strings.HasPrefix(kv, "SHOAL_CPUPROFILE_DIR=") {
			env = append(env, kv)
		}
	}
	return env
}

// Pid is the process id.
func (p *proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL (kill -9) to the process group and waits until the process is reaped.
func (p *proc) Kill() {
	if p.Exited() {
		return
	}
	_ = killGroup(p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.t.Errorf("%s: still running 10s after SIGKILL", p.name)
	}
}

// Signal sends sig to the process, unless it has exited.
func (p *proc) Signal(sig os.Signal) {
	if !p.Exited() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// Stop sends SIGTERM and waits for a clean exit; a process that does not stop within 20 s is killed and the test
// fails.
func (p *proc) Stop() {
	p.t.Helper()
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if _, ok := p.Wait(20 * time.Second); !ok {
		p.t.Errorf("%s: did not stop within 20s of SIGTERM; killing it", p.name)
		p.Kill()
	}
}

// Wait waits up to timeout for the process to exit and returns its exit code.
func (p *proc) Wait(timeout time.Duration) (code int, exited bool) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), true
	case <-time.After(timeout):
		return 0, false
	}
}

// Stdout returns what the process has printed so far.
func (p *proc) Stdout() string {
	b, _ := os.ReadFile(p.outPath)
	return string(b)
}

// Stderr returns what the process has logged so far.
func (p *proc) Stderr() string {
	b, _ := os.ReadFile(p.errPath)
	return string(b)
}

// dump shows the tail of the process's output in the test log: 60 lines, or SHOAL_ITEST_LOG_LINES (0 for all).
func (p *proc) dump() {
	lines := 60
	if v, err := strconv.Atoi(os.Getenv("SHOAL_ITEST_LOG_LINES")); err == nil {
		lines = v
	}
	for _, f := range []struct{ what, path string }{{"stdout", p.outPath}, {"stderr", p.errPath}} {
		b, err := os.ReadFile(f.path)
		if err != nil || len(b) == 0 {
			continue
		}
		all := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
		from := 0
		if lines > 0 {
			from = max(0, len(all)-lines)
		}
		p.t.Logf("---- %s %s (%s), last %d of %d lines:\n%s", p.name, f.what, strings.Join(p.cmd.Args[1:], " "),
			len(all)-from, len(all), bytes.Join(all[from:], []byte("\n")))
	}
}
