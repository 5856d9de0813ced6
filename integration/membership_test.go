package integration

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/node"
)

// TestProcessFiveLeaveAndDeath runs five node processes (three voters, two non-voters). The leader leaves through
// `node leave` and exits by itself; then a voter is killed with SIGKILL. Raft membership must follow: the leaver
// is removed at once and a non-voter promoted in its place, the dead voter is marked dead and removed after the
// dead-grace period (3 s here, 30 minutes by default), the last non-voter promoted, and the mesh keeps taking
// writes throughout.
func TestProcessFiveLeaveAndDeath(t *testing.T) {
	needProcesses(t)
	m := startPmesh(t, 5, "--dead-grace", "3s")
	leader := m.waitHealthy(m.nodes...)
	roles := raftRoles(t, m, leader)
	if got := countRoles(roles); got["voter"] != 3 || got["nonvoter"] != 2 {
		t.Fatalf("five nodes should make 3 voters and 2 non-voters: %v", roles)
	}

	// The CLI names its target: another name than the node at --addr's, or no --yes without a terminal to ask on,
	// is refused and changes nothing.
	for _, args := range [][]string{{"leave", "no-such-node", "--yes"}, {"leave", leader.name}} {
		p := startProc(t, "leave-refused", append(args, "--addr", leader.api(), "--token", m.admin)...)
		if code, ok := p.Wait(60 * time.Second); !ok || code == 0 {
			t.Fatalf("node %v: exited=%v code=%d, want a refusal\n%s%s", args, ok, code, p.Stdout(), p.Stderr())
		}
		if !strings.Contains(p.Stderr(), "nothing was changed") && !strings.Contains(p.Stderr(), "refusing without --yes") {
			t.Errorf("node %v said %q: want it to say why it refused", args, p.Stderr())
		}
	}
	if got := countRoles(raftRoles(t, m, leader)); got["voter"] != 3 || got["nonvoter"] != 2 {
		t.Fatalf("a refused leave changed the membership: %v", got)
	}

	// The leader leaves: the CLI asks it through its API, it hands off leadership, is removed from Raft and exits 0.
	cli := startProc(t, "leave-cli", "leave", leader.name, "--yes", "--addr", leader.api(), "--token", m.admin)
	if code, ok := cli.Wait(60 * time.Second); !ok || code != 0 {
		t.Fatalf("node leave: exited=%v code=%d\n%s%s", ok, code, cli.Stdout(), cli.Stderr())
	}
	if !strings.Contains(cli.Stdout(), leader.name+" left the mesh") {
		t.Errorf("node leave printed %q", cli.Stdout())
	}
	if code, ok := leader.proc.Wait(30 * time.Second); !ok || code != 0 {
		t.Fatalf("%s after leaving: exited=%v code=%d; want it to exit by itself with status 0", leader.name, ok, code)
	}
	survivors := m.live()
	newLeader := m.waitLeader(survivors...)
	m.eventually(30*time.Second, "the leaver removed from Raft and a non-voter promoted", func() (bool, string) {
		r, err := tryRaftRoles(m, newLeader)
		if err != nil {
			return false, err.Error()
		}
		_, in := r[leader.name]
		return !in && countRoles(r)["voter"] == 3 && len(r) == 4, fmt.Sprint(r)
	})
	if err := m.createApp(survivors[0], "after-leave"); err != nil {
		t.Fatalf("write after the leader left: %v", err)
	}

	// A voter other than the leader dies.
	roles = raftRoles(t, m, newLeader)
	var victim *pnode
	for _, n := range survivors {
		if n != newLeader && roles[n.name] == "voter" {
			victim = n
			break
		}
	}
	victim.proc.Kill()
	survivors = m.live()
	newLeader = m.waitLeader(survivors...)
	m.eventually(30*time.Second, victim.name+" seen dead", func() (bool, string) {
		ms, err := m.members(newLeader)
		if err != nil {
			return false, err.Error()
		}
		x := findMember(ms, victim.name)
		return x != nil && x.Status == node.StatusDead, memberSummary(ms)
	})
	for i, n := range survivors {
		if err := m.createApp(n, fmt.Sprintf("after-death-%d", i)); err != nil {
			t.Fatalf("write through %s after %s died: %v", n.name, victim.name, err)
		}
	}

	want := map[string]string{}
	for _, n := range survivors {
		want[n.name] = "voter"
	}
	for _, n := range survivors {
		m.eventually(60*time.Second, n.name+" to see Raft end as the three live nodes, all voters", func() (bool, string) {
			r, err := tryRaftRoles(m, n)
			if err != nil {
				return false, err.Error()
			}
			return fmt.Sprint(r) == fmt.Sprint(want), fmt.Sprint(r)
		})
	}

	if err := m.createApp(survivors[len(survivors)-1], "after-settle"); err != nil {
		t.Fatalf("write once Raft settled: %v", err)
	}

	// Every survivor agrees on the membership statuses and has every write.
	for _, n := range survivors {
		ms, err := m.members(n)
		if err != nil {
			t.Fatalf("%s members: %v", n.name, err)
		}
		if x := findMember(ms, leader.name); x == nil || x.Status != node.StatusLeft || x.Role != "none" {
			t.Errorf("%s lists the leaver %s as %+v, want status left and no Raft role", n.name, leader.name, x)
		}
		m.eventually(10*time.Second, n.name+" to list "+victim.name+" dead and out of Raft", func() (bool, string) {
			ms, err := m.members(n)
			if err != nil {
				return false, err.Error()
			}
			x := findMember(ms, victim.name)
			return x != nil && x.Status == node.StatusDead && x.Role == "none", memberSummary(ms)
		})
		for _, app := range []string{"after-leave", "after-death-0", "after-death-1", "after-death-2", "after-settle"} {
			if ok, err := m.hasApp(n, app, true); !ok || err != nil {
				t.Errorf("%s: consistent read of %s: found=%v err=%v", n.name, app, ok, err)
			}
		}
	}
}

// raftRoles returns the Raft configuration as n sees it: name → voter or nonvoter.
func raftRoles(t testing.TB, m *pmesh, n *pnode) map[string]string {
	t.Helper()
	r, err := tryRaftRoles(m, n)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func tryRaftRoles(m *pmesh, n *pnode) (map[string]string, error) {
	ms, err := m.members(n)
	if err != nil {
		return nil, fmt.Errorf("%s members: %w", n.name, err)
	}
	out := map[string]string{}
	for _, x := range ms {
		if x.Role == "voter" || x.Role == "nonvoter" {
			out[x.Name] = x.Role
		}
	}
	return out, nil
}

func countRoles(r map[string]string) map[string]int {
	out := map[string]int{}
	for _, role := range r {
		out[role]++
	}
	return out
}

func findMember(ms []node.Member, name string) *node.Member {
	i := slices.IndexFunc(ms, func(x node.Member) bool { return x.Name == name })
	if i < 0 {
		return nil
	}
	return &ms[i]
}
