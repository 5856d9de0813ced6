package deployer

import (
	"bytes"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-ci/shoal/internal/proc"
)

// running reports whether pid is the process that started at startTicks and has not exited. A zombie
// has exited: only its parent has not collected it yet.
func running(pid int, startTicks uint64) bool {
	st, err := proc.ReadStat(pid)
	if err != nil {
		return false
	}
	return st.StartTicks == startTicks && st.State != 'Z' && st.State != 'X'
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
			if proc.GroupRunning(g) {
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
		st, err := proc.ReadStat(pid)
		if err != nil || st.Session != pid || st.State == 'Z' || st.State == 'X' {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if v, ok := bytes.CutPrefix(kv, []byte(prefix)); ok {
				out = append(out, markedProc{pid: pid, startTicks: st.StartTicks, value: string(v)})
				break
			}
		}
	}
	return out
}
