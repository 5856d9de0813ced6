package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/node"
)

// pnode is one server of a process mesh: its addresses, data dir, and the process running it now.
type pnode struct {
	name       string
	ip         string
	httpPort   int
	gossipPort int
	quicPort   int
	dir        string
	proc       *proc
	// bin is the node binary this server runs; empty: the one built from this checkout.
	bin string
}

// start runs n's binary with args.
func (n *pnode) start(t testing.TB, args ...string) *proc {
	t.Helper()
	if n.bin != "" {
		return startProcOf(t, n.bin, n.name, args...)
	}
	return startProc(t, n.name, args...)
}

func (n *pnode) api() string  { return net.JoinHostPort(n.ip, strconv.Itoa(n.httpPort)) }
func (n *pnode) quic() string { return net.JoinHostPort(n.ip, strconv.Itoa(n.quicPort)) }

// pmesh is a mesh of real `node` processes on loopback, each with its own address and free ports.
type pmesh struct {
	t     testing.TB
	dir   string
	admin string
	join  string
	nodes []*pnode
	// flags are added to every command that runs a node (init, join, agent); initFlags to init only.
	flags     []string
	initFlags []string
	// voters is the Raft voter count the mesh was initialised with (node init --voters), 3 unless set.
	voters int
	http   *http.Client
}

// newPmesh prepares a mesh of size servers named n1..nN without starting any.
func newPmesh(t testing.TB, size int, flags ...string) *pmesh {
	t.Helper()
	// SHOAL_ITEST_LOG_LEVEL=debug makes the nodes' logs, shown when a test fails, say more.
	if lvl := os.Getenv("SHOAL_ITEST_LOG_LEVEL"); lvl != "" {
		flags = append(slices.Clone(flags), "--log-level", lvl)
	}
	m := &pmesh{t: t, dir: t.TempDir(), flags: flags, voters: 3, http: &http.Client{Timeout: 5 * time.Second}}
	for i := range size {
		ip := loopbackIP(i)
		name := fmt.Sprintf("n%d", i+1)
		m.nodes = append(m.nodes, &pnode{name: name, ip: ip, dir: filepath.Join(m.dir, name),
			httpPort: freePort(t, ip), gossipPort: freePort(t, ip), quicPort: freePort(t, ip)})
	}
	return m
}

// startPmesh starts a mesh of size processes: n1 runs `node init`, the others `node join` through n1, one at a
// time. It returns once every node sees the same leader and the full Raft configuration (voters up to 3).
func startPmesh(t testing.TB, size int, flags ...string) *pmesh {
	t.Helper()
	m := newPmesh(t, size, flags...)
	m.start()
	return m
}

// start runs init and the joins for a mesh prepared by newPmesh (see startPmesh).
func (m *pmesh) start() {
	m.t.Helper()
	m.init(m.nodes[0])
	for _, n := range m.nodes[1:] {
		m.startJoin(n)
		m.eventually(30*time.Second, n.name+" in Raft", func() (bool, string) {
			ms, err := m.members(m.nodes[0])
			if err != nil {
				return false, err.Error()
			}
			for _, x := range ms {
				if x.Name == n.name && (x.Role == "voter" || x.Role == "nonvoter") {
					return true, ""
				}
			}
			return false, fmt.Sprintf("members %s", memberSummary(ms))
		})
	}
	m.waitHealthy(m.nodes...)
}

func (m *pmesh) nodeArgs(n *pnode) []string {
	return append([]string{"--data-dir", n.dir, "--bind", n.ip, "--http-port", strconv.Itoa(n.httpPort),
		"--gossip-port", strconv.Itoa(n.gossipPort), "--quic-port", strconv.Itoa(n.quicPort)}, m.flags...)
}

// init runs `node init --json` for n and reads the tokens it prints.
func (m *pmesh) init(n *pnode) {
	m.t.Helper()
	args := append(append([]string{"init", "--json", "--name", n.name, "--mesh", "itest"}, m.nodeArgs(n)...), m.initFlags...)
	n.proc = n.start(m.t, args...)
	var res node.InitResult
	m.eventually(30*time.Second, "node init to print its tokens", func() (bool, string) {
		if n.proc.Exited() {
			m.t.Fatalf("node init exited early: %v", n.proc.waitErr)
		}
		out := n.proc.Stdout()
		return json.Unmarshal([]byte(out), &res) == nil && res.AdminToken != "" && res.JoinToken != "", out
	})
	if res.API != n.api() {
		m.t.Fatalf("node init says its API is at %q; it was asked for %q", res.API, n.api())
	}
	m.admin, m.join = res.AdminToken, res.JoinToken
}

// startJoin runs `node join` for n through the first node; the caller waits for what it needs.
func (m *pmesh) startJoin(n *pnode) {
	m.t.Helper()
	args := append([]string{"join", m.nodes[0].quic(), "--token", m.join, "--name", n.name}, m.nodeArgs(n)...)
	n.proc = n.start(m.t, args...)
}

// restart runs `node agent --data-dir` for n, which finds everything else in its data dir.
func (m *pmesh) restart(n *pnode) {
	m.t.Helper()
	if n.proc != nil && !n.proc.Exited() {
		m.t.Fatalf("restart %s: it is still running", n.name)
	}
	n.proc = n.start(m.t, append([]string{"agent", "--data-dir", n.dir}, m.flags...)...)
}

// live returns the nodes whose process runs.
func (m *pmesh) live() []*pnode {
	var out []*pnode
	for _, n := range m.nodes {
		if n.proc != nil && !n.proc.Exited() {
			out = append(out, n)
		}
	}
	return out
}

func (m *pmesh) byName(name string) *pnode {
	for _, n := range m.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// client returns an API client for n that fails fast: polls decide for themselves how long to wait.
func (m *pmesh) client(n *pnode) *client.Client {
	c := client.New(n.api(), m.admin)
	c.HTTP = m.http
	c.RetryNoLeader = 0
	return c
}

func (m *pmesh) status(n *pnode) (node.Status, error) {
	var st node.Status
	_, err := m.client(n).Get(context.Background(), "/v1/status", &st)
	return st, err
}

func (m *pmesh) members(n *pnode) ([]node.Member, error) {
	var ms []node.Member
	_, err := m.client(n).Get(context.Background(), "/v1/members", &ms)
	return ms, err
}

// createApp creates an app through n (see createAppVia).
func (m *pmesh) createApp(n *pnode, name string) error {
	return createAppVia(m.t, m.client(n), name)
}

// createAppVia creates app name through c the way the API asks clients to: while the mesh has no leader (503
// no_leader) it retries; after a 503 that says the write may or may not have been applied (a leader lost its
// leadership mid-commit), it reads the app back with ?consistent and retries only if the write was lost. It
// gives up after 30 s. Every retry is logged, so a test that needed one shows it.
func createAppVia(t testing.TB, c *client.Client, name string) error {
	ctx := context.Background()
	body := map[string]any{"name": name, "repo": "/srv/git/" + name + ".git"}
	deadline := time.Now().Add(30 * time.Second)
	uncertain := false
	for {
		var app api.AppView
		_, err := c.Post(ctx, "/v1/apps", body, &app)
		switch {
		case err == nil && app.Name != name:
			return fmt.Errorf("created app is %+v", app)
		case err == nil:
			return nil
		case uncertain && client.IsStatus(err, http.StatusConflict):
			return nil // the earlier, uncertain attempt was applied after all
		case !client.IsStatus(err, http.StatusServiceUnavailable) || time.Now().After(deadline):
			return err
		}
		t.Logf("create app %s through %s: %v; retrying", name, c.Addr, err)
		var e *client.Error
		if errors.As(err, &e) && e.Code != node.CodeNoLeader {
			uncertain = true
			var got api.AppView
			if _, rerr := c.Get(ctx, "/v1/apps/"+name+"?consistent", &got); rerr == nil && got.Name == name {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond) // pace retries against a mesh that is electing a leader
	}
}

// hasApp reads app on n, locally or (consistent) linearizably.
func (m *pmesh) hasApp(n *pnode, name string, consistent bool) (bool, error) {
	path := "/v1/apps/" + name
	if consistent {
		path += "?consistent"
	}
	var app api.AppView
	_, err := m.client(n).Get(context.Background(), path, &app)
	if client.IsStatus(err, http.StatusNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return app.Name == name && app.Repo == "/srv/git/"+name+".git", nil
}

// waitLeader waits until every node in among answers /v1/status naming the same leader, itself one of among.
func (m *pmesh) waitLeader(among ...*pnode) *pnode {
	m.t.Helper()
	var leader *pnode
	m.eventually(30*time.Second, "a leader every live node agrees on", func() (bool, string) {
		name, detail, ok := m.agreedLeader(among)
		if !ok {
			return false, detail
		}
		for _, n := range among {
			if n.name == name {
				leader = n
				return true, ""
			}
		}
		return false, fmt.Sprintf("leader %s is not among the live nodes", name)
	})
	return leader
}

// agreedLeader returns the leader all of nodes name, if they agree.
func (m *pmesh) agreedLeader(nodes []*pnode) (string, string, bool) {
	var leader string
	var seen []string
	for _, n := range nodes {
		st, err := m.status(n)
		if err != nil {
			return "", fmt.Sprintf("%s: %v", n.name, err), false
		}
		seen = append(seen, fmt.Sprintf("%s:%s leader=%q term=%d", n.name, st.State, st.Leader, st.Term))
		if st.Leader == "" || (leader != "" && st.Leader != leader) {
			return "", strings.Join(seen, ", "), false
		}
		leader = st.Leader
	}
	return leader, "", leader != ""
}

// waitHealthy waits until nodes agree on a leader among them, the leader's Raft configuration holds them all
// (voters up to m.voters, then non-voters), gossip sees them all alive, and each has applied what the leader committed.
func (m *pmesh) waitHealthy(nodes ...*pnode) *pnode {
	m.t.Helper()
	var leader *pnode
	m.eventually(60*time.Second, "a healthy mesh", func() (bool, string) {
		name, detail, ok := m.agreedLeader(nodes)
		if !ok {
			return false, detail
		}
		leader = m.byName(name)
		ms, err := m.members(leader)
		if err != nil {
			return false, err.Error()
		}
		byName := map[string]node.Member{}
		voters := 0
		for _, x := range ms {
			byName[x.Name] = x
			if x.Role == "voter" {
				voters++
			}
		}
		for _, n := range nodes {
			x, ok := byName[n.name]
			if !ok || x.Status != node.StatusAlive || (x.Role != "voter" && x.Role != "nonvoter") {
				return false, "members " + memberSummary(ms)
			}
		}
		if voters < min(len(nodes), m.voters) {
			return false, "members " + memberSummary(ms)
		}
		lst, err := m.status(leader)
		if err != nil {
			return false, err.Error()
		}
		for _, n := range nodes {
			st, err := m.status(n)
			if err != nil {
				return false, err.Error()
			}
			if st.AppliedIndex < lst.CommitIndex {
				return false, fmt.Sprintf("%s applied %d < leader commit %d", n.name, st.AppliedIndex, lst.CommitIndex)
			}
		}
		return true, ""
	})
	return leader
}

// eventually is testutil.Eventually for the mesh's test.
func (m *pmesh) eventually(timeout time.Duration, what string, cond func() (bool, string)) {
	m.t.Helper()
	testutil.Eventually(m.t, timeout, what, cond)
}

func memberSummary(ms []node.Member) string {
	var parts []string
	for _, x := range ms {
		s := fmt.Sprintf("%s=%s/%s", x.Name, x.Status, x.Role)
		if x.Leader {
			s += "*"
		}
		parts = append(parts, s)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
