// Package proc is what Shoal knows about Linux processes, once: reading /proc/<pid>/stat, telling whether a
// process group still runs, and the one policy for stopping a group (SIGTERM, a grace period, then SIGKILL)
// that build steps and deploy hooks share.
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// Stat is the part of /proc/<pid>/stat Shoal uses.
type Stat struct {
	State      byte // R, S, D, Z (zombie), X (dead), ...
	PPid       int
	Pgrp       int
	Session    int
	StartTicks uint64 // field 22: start time in clock ticks after boot; with the pid it names one process
}

// Exited reports a zombie or dead process: it runs nothing, only its parent has not collected it yet.
func (s Stat) Exited() bool { return s.State == 'Z' || s.State == 'X' }

// ReadStat reads /proc/<pid>/stat.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	return ParseStat(b)
}

// ParseStat parses a /proc/<pid>/stat line.
func ParseStat(b []byte) (Stat, error) {
	// The command name (field 2) is in parentheses and may itself hold spaces and parentheses, so the fields
	// are counted from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, errors.New("malformed /proc stat line")
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, errors.New("short /proc stat line")
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	pgrp, err2 := strconv.Atoi(string(f[2]))
	sid, err3 := strconv.Atoi(string(f[3]))
	start, err4 := strconv.ParseUint(string(f[19]), 10, 64)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return Stat{}, fmt.Errorf("malformed /proc stat line: %w", err)
	}
	return Stat{State: f[0][0], PPid: ppid, Pgrp: pgrp, Session: sid, StartTicks: start}, nil
}

// GroupRunning reports whether a process of group pgid runs (zombies excluded: they run nothing, and a
// container's init may never reap them). Without /proc it can tell only that the group has members.
func GroupRunning(pgid int) bool {
	if syscall.Kill(-pgid, 0) != nil {
		return false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true // cannot tell: assume the worst, so callers escalate rather than report success
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := ReadStat(pid); err == nil && st.Pgrp == pgid && !st.Exited() {
			return true
		}
	}
	return false
}

// DefaultGrace is the time a group has between SIGTERM and SIGKILL when its owner sets none.
const DefaultGrace = 5 * time.Second

// StopGroup stops every process of group pgid: SIGTERM, then SIGKILL once grace passes. When exited is not nil
// the group's leader is still running, and its Wait result (sent on exited) is returned once it was reaped;
// otherwise the leader is already reaped and StopGroup clears out what it left behind. It returns when the
// group is gone or was SIGKILLed.
func StopGroup(pgid int, grace time.Duration, exited <-chan error) error {
	if grace <= 0 {
		grace = DefaultGrace
	}
	if syscall.Kill(-pgid, syscall.SIGTERM) != nil { // ESRCH: the group is already empty
		if exited != nil {
			return <-exited
		}
		return nil
	}
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	if exited != nil {
		select {
		case err := <-exited:
			waitGroupGone(pgid, deadline.C)
			return err
		case <-deadline.C:
			syscall.Kill(-pgid, syscall.SIGKILL)
			return <-exited
		}
	}
	waitGroupGone(pgid, deadline.C)
	return nil
}

// waitGroupGone polls until no process is left in the group, or SIGKILLs the group when the deadline passes
// first. Orphans are reaped by init, not by us, so polling is the only way to see them go.
func waitGroupGone(pgid int, deadline <-chan time.Time) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for GroupRunning(pgid) {
		select {
		case <-deadline:
			syscall.Kill(-pgid, syscall.SIGKILL)
			return
		case <-tick.C:
		}
	}
}

// StopOnCancel makes cmd, which must start in a process group of its own (Setpgid or Setsid), stop its whole
// group with StopGroup's policy when its context ends: every command Shoal runs for a user (build steps, deploy
// hooks, health checks, git) is stopped the same way.
func StopOnCancel(cmd *exec.Cmd, grace time.Duration) {
	cmd.Cancel = func() error { return StopGroup(cmd.Process.Pid, grace, nil) }
}
