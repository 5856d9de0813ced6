package deployer

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// procStat is the part of /proc/<pid>/stat the supervisor needs.
type procStat struct {
	state      byte
	ppid       int
	pgrp       int
	session    int
	startTicks uint64 // field 22: start time in clock ticks after boot; with the pid it names one process
}

func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(b)
}

func parseProcStat(b []byte) (procStat, error) {
	// The command name (field 2) is in parentheses and may itself hold spaces and parentheses, so the
	// fields are counted from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("malformed /proc stat line")
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, errors.New("short /proc stat line")
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	pgrp, err2 := strconv.Atoi(string(f[2]))
	sid, err3 := strconv.Atoi(string(f[3]))
	start, err4 := strconv.ParseUint(string(f[19]), 10, 64)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return procStat{}, fmt.Errorf("malformed /proc stat line: %w", err)
	}
	return procStat{state: f[0][0], ppid: ppid, pgrp: pgrp, session: sid, startTicks: start}, nil
}

// running reports whether pid is the process that started at startTicks and has not exited. A zombie
// has exited: only its parent has not collected it yet.
func running(pid int, startTicks uint64) bool {
	st, err := readProcStat(pid)
	if err != nil {
		return false
	}
	return st.startTicks == startTicks && st.state != 'Z' && st.state != 'X'
}

// groupRunning reports whether any process of the group pgid is still running (zombies excluded, since
// a container's init may never reap them).
func groupRunning(pgid int) bool {
	if err := unix.Kill(-pgid, 0); errors.Is(err, unix.ESRCH) {
		return false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true // cannot tell: assume the worst so callers escalate rather than report success
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readProcStat(pid)
		if err == nil && st.pgrp == pgid && st.state != 'Z' && st.state != 'X' {
			return true
		}
	}
	return false
}

// reap collects pid if it is an exited child of this process and describes how it ended. For a process
// that is not our child (adopted after an agent restart) the exit status is not ours to know. reaped is
// false when nothing was collected.
func reap(pid int) (status string, reaped bool) {
	var ws unix.WaitStatus
	wpid, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	switch {
	case err != nil || wpid != pid:
		return "exit status unknown (not a child of this agent)", false
	case ws.Signaled():
		return "killed by signal " + ws.Signal().String(), true
	default:
		return "exit status " + strconv.Itoa(ws.ExitStatus()), true
	}
}

// waitGroupsGone polls until no process of any of the groups is running or until deadline or done; it
// returns the groups still running. Each leader that is our child is reaped once, so it does not linger
// as a zombie (and so its pid is not collected twice if it is ever reused).
func waitGroupsGone(pgids []int, deadline <-chan time.Time, done <-chan struct{}) []int {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	reaped := map[int]bool{}
	for {
		var left []int
		for _, g := range pgids {
			if !reaped[g] {
				_, reaped[g] = reap(g)
			}
			if groupRunning(g) {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return nil
		}
		pgids = left
		select {
		case <-deadline:
			return left
		case <-done:
			return left
		case <-tick.C:
		}
	}
}

type markedProc struct {
	pid        int
	startTicks uint64
	value      string // what follows the prefix
}

// findMarked returns the running session leaders whose environment holds an entry starting with prefix.
// Only session leaders: the children a supervised process starts inherit its environment but not its
// session.
func findMarked(prefix string) []markedProc {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []markedProc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil || st.session != pid || st.state == 'Z' || st.state == 'X' {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if v, ok := bytes.CutPrefix(kv, []byte(prefix)); ok {
				out = append(out, markedProc{pid: pid, startTicks: st.startTicks, value: string(v)})
				break
			}
		}
	}
	return out
}
