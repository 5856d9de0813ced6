package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-ci/shoal/internal/proc"
)

// DefaultPath is the PATH a script gets when its environment names none: what `getconf PATH` gives plus
// /usr/local/bin, as Distelli's agent did. It never holds Shoal's own directory, so a script's `node` is
// Node.js, not Shoal.
const DefaultPath = "/usr/local/bin:/usr/bin:/bin"

// DefaultKillGrace is how long a script's process group has between SIGTERM and SIGKILL.
const DefaultKillGrace = proc.DefaultGrace

// outputDrain bounds how long RunScript waits for output after the script's process group is gone: a
// process that escaped the group (setsid) may still hold the pipe open, and must not hang the build.
const outputDrain = 2 * time.Second

// Script is one manifest section to run.
type Script struct {
	Name    string   // the section's name, for messages and the script file's name
	Lines   []string // joined with newlines after `set -e`, so if/else/fi may span items
	Dir     string   // working directory
	Env     []string // the whole environment ("KEY=value"); PATH and HOME are added when missing
	Timeout time.Duration
	Out     io.Writer // stdout and stderr, merged, redacted; nil discards
	Secrets []string  // values replaced by [redacted] in Out
	// KillGrace is the time between SIGTERM and SIGKILL when stopping the group; 0 means DefaultKillGrace.
	KillGrace time.Duration
}

// Result is how a script ended.
type Result struct {
	// ExitCode is the script's exit status; 128+N when it was killed by signal N (the shell's convention).
	ExitCode  int
	TimedOut  bool // stopped because Timeout passed
	Cancelled bool // stopped because the context was done
	Duration  time.Duration
}

// Succeeded reports whether the script ran to the end and exited 0.
func (r Result) Succeeded() bool { return r.ExitCode == 0 && !r.TimedOut && !r.Cancelled }

// RunScript runs the lines as one script with `set -e`, in its own process group, with exactly the given
// environment. When the timeout passes or ctx is done the whole group is stopped (SIGTERM, then SIGKILL after
// the grace period); when the script exits by itself, whatever it left running in the group is stopped the
// same way, so a build step never leaves processes behind. An error means the script could not be started;
// a script that failed is a Result with a non-zero ExitCode.
func RunScript(ctx context.Context, s Script) (Result, error) {
	start := time.Now()
	if len(s.Lines) == 0 {
		return Result{}, nil
	}
	out := s.Out
	if out == nil {
		out = io.Discard
	}
	red := NewRedactor(out, s.Secrets)
	defer red.Flush()

	env := scriptEnv(s.Env)
	shell := findShell(lookupEnv(env, "PATH"))
	file, err := writeScriptFile(s.Name, s.Lines)
	if err != nil {
		return Result{}, err
	}
	defer os.Remove(file)

	pr, pw, err := os.Pipe()
	if err != nil {
		return Result{}, fmt.Errorf("script %s: make output pipe: %w", s.Name, err)
	}
	cmd := &exec.Cmd{
		Path:        shell,
		Args:        []string{shell, file},
		Dir:         s.Dir,
		Env:         env,
		Stdout:      pw,
		Stderr:      pw,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	err = cmd.Start()
	pw.Close() // the child holds its own copy; ours must go so the reader sees EOF when the group is gone
	if err != nil {
		pr.Close()
		return Result{}, fmt.Errorf("script %s: start %s in %s: %w", s.Name, shell, s.Dir, err)
	}
	pgid := cmd.Process.Pid

	copied := make(chan struct{})
	go func() {
		defer close(copied)
		io.Copy(red, pr)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	var timeout <-chan time.Time
	if s.Timeout > 0 {
		t := time.NewTimer(s.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	grace := s.KillGrace
	if grace <= 0 {
		grace = DefaultKillGrace
	}

	var res Result
	var waitErr error
	var ok bool
	select {
	case waitErr = <-exited:
		proc.StopGroup(pgid, grace, nil)
	case <-timeout:
		if waitErr, ok = exitedAlready(exited, pgid); ok {
			proc.StopGroup(pgid, grace, nil)
			break
		}
		res.TimedOut = true
		waitErr = proc.StopGroup(pgid, grace, exited)
	case <-ctx.Done():
		if waitErr, ok = exitedAlready(exited, pgid); ok {
			proc.StopGroup(pgid, grace, nil)
			break
		}
		res.Cancelled = true
		waitErr = proc.StopGroup(pgid, grace, exited)
	}

	select {
	case <-copied:
	case <-time.After(outputDrain):
	}
	pr.Close() // unblocks the copy if an escaped process still holds the pipe
	<-copied

	res.Duration = time.Since(start)
	res.ExitCode = exitCode(cmd.ProcessState, waitErr)
	return res, nil
}

// exitedAlready reports a script that ended by itself by the time its time limit or cancellation came: select
// picks among ready cases at random, and a node resumed after a pause (SIGSTOP) sees the script's exit and its
// own loss of leadership at once. A script that finished its work was not cancelled. Nothing has signalled the
// shell yet, so a shell that is a zombie, or already reaped by Wait (whose result is then on its way), ended
// by itself.
func exitedAlready(exited <-chan error, pid int) (error, bool) {
	select {
	case err := <-exited:
		return err, true
	default:
	}
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		return nil, false // no /proc to tell: treat the script as still running
	}
	if st, err := proc.ReadStat(pid); err != nil || st.Pgrp != pid || st.State == 'Z' {
		return <-exited, true
	}
	return nil, false
}

func exitCode(ps *os.ProcessState, waitErr error) int {
	if ps == nil {
		if waitErr != nil {
			return -1
		}
		return 0
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// scriptEnv is the given environment plus PATH and HOME when it lacks them; nothing is inherited beyond HOME.
func scriptEnv(given []string) []string {
	env := append([]string(nil), given...)
	if _, ok := lookupEnvOK(env, "PATH"); !ok {
		env = append(env, "PATH="+DefaultPath)
	}
	if _, ok := lookupEnvOK(env, "HOME"); !ok {
		home := os.Getenv("HOME")
		if home == "" {
			home = "/"
		}
		env = append(env, "HOME="+home)
	}
	return env
}

func lookupEnv(env []string, key string) string {
	v, _ := lookupEnvOK(env, key)
	return v
}

// lookupEnvOK finds the last value of key, as exec.Cmd does with duplicates.
func lookupEnvOK(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// findShell prefers bash (scripts written for Distelli assume it) and falls back to sh, looking in the
// script's PATH first and the standard places after.
func findShell(path string) string {
	dirs := append(filepath.SplitList(path), "/usr/bin", "/bin")
	for _, name := range []string{"bash", "sh"} {
		for _, d := range dirs {
			p := filepath.Join(d, name)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				return p
			}
		}
	}
	return "/bin/sh"
}

// writeScriptFile writes the section outside the working directory, so that it is neither packaged nor
// visible to the build as a stray file.
func writeScriptFile(name string, lines []string) (string, error) {
	f, err := os.CreateTemp("", "shoal-"+safeName(name)+"-*.sh")
	if err != nil {
		return "", fmt.Errorf("script %s: create the script file: %w", name, err)
	}
	var b strings.Builder
	b.WriteString("set -e\n")
	for _, l := range lines {
		b.WriteString(l)
		if !strings.HasSuffix(l, "\n") {
			b.WriteByte('\n')
		}
	}
	_, werr := f.WriteString(b.String())
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("script %s: write the script file: %w", name, err)
	}
	return f.Name(), nil
}

func safeName(name string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, name)
}
