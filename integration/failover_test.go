package integration

import (
	"fmt"
	"testing"
	"time"
)

// TestProcessMeshFailover runs three real node processes: init and two joins, an app created through a follower,
// the leader killed with SIGKILL; a survivor becomes leader, both survivors have the app, writes work again, and
// the killed node, restarted with `node agent`, catches up.
func TestProcessMeshFailover(t *testing.T) {
	needProcesses(t)
	m := startPmesh(t, 3)
	leader := m.waitLeader(m.nodes...)
	var follower *pnode
	for _, n := range m.nodes {
		if n != leader {
			follower = n
			break
		}
	}
	if err := m.createApp(follower, "web"); err != nil {
		t.Fatalf("create an app through follower %s: %v", follower.name, err)
	}

	leader.proc.Kill()
	survivors := m.live()
	newLeader := m.waitLeader(survivors...)
	t.Logf("killed leader %s; %s leads now", leader.name, newLeader.name)
	for _, n := range survivors {
		ok, err := m.hasApp(n, "web", true)
		if err != nil || !ok {
			t.Fatalf("%s after failover: consistent read of app web: found=%v err=%v", n.name, ok, err)
		}
	}
	for _, n := range survivors {
		if n != newLeader {
			if err := m.createApp(n, "after"); err != nil {
				t.Fatalf("write through %s after failover: %v", n.name, err)
			}
		}
	}

	m.restart(leader)
	m.eventually(60*time.Second, leader.name+" to rejoin and catch up", func() (bool, string) {
		st, err := m.status(leader)
		if err != nil {
			return false, err.Error()
		}
		if st.Leader == "" {
			return false, fmt.Sprintf("%s sees no leader (state %s, term %d)", leader.name, st.State, st.Term)
		}
		for _, app := range []string{"web", "after"} {
			if ok, err := m.hasApp(leader, app, false); !ok || err != nil {
				return false, fmt.Sprintf("%s lacks app %s locally (err %v)", leader.name, app, err)
			}
		}
		return true, ""
	})
	m.waitHealthy(m.nodes...)
}
