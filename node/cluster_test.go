package node_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/transport"
)

func TestThreeNodeMesh(t *testing.T) {
	c := meshtest.New(t, 3, nil)
	leader := c.Leader()
	var follower *node.Node
	for _, n := range c.Nodes {
		if n != leader {
			follower = n
			break
		}
	}
	if got := c.RaftServers(); len(got) != 3 || got["n1"] != "voter" || got["n2"] != "voter" || got["n3"] != "voter" {
		t.Fatalf("raft servers %v, want three voters", got)
	}

	// A write through a follower is forwarded; the follower answers with the created app.
	var app api.AppView
	if code := call(t, follower, c.AdminToken, "POST", "/v1/apps", map[string]any{"name": "web", "repo": "/srv/web.git", "webhook_secret": "s3cret"}, &app); code != 201 {
		t.Fatalf("create app through follower: %d", code)
	}
	if app.Name != "web" || app.Branch != "main" || !app.WebhookSecretSet || app.WebhookSecret != "" {
		t.Fatalf("created app %+v", app)
	}
	// Every node has it.
	c.Eventually(5*time.Second, "app on every node", func() bool {
		for _, n := range c.Nodes {
			found := false
			n.FSM().Read(func(s *raftfsm.State) { found = s.Apps["web"] != nil })
			if !found {
				return false
			}
		}
		return true
	})
	// A consistent read from any node sees it.
	for _, n := range c.Nodes {
		var got api.AppView
		if code := call(t, n, c.AdminToken, "GET", "/v1/apps/web?consistent", nil, &got); code != 200 || got.Repo != "/srv/web.git" {
			t.Fatalf("%s consistent read: %d %+v", n.Name(), code, got)
		}
	}

	// Blocking read: wait on the follower for the next change, made through another node.
	idx := follower.FSM().Index()
	done := make(chan []raftfsm.Env, 1)
	go func() {
		var envs []raftfsm.Env
		call(t, follower, c.AdminToken, "GET", fmt.Sprintf("/v1/envs?index=%d&wait=10s", idx), nil, &envs)
		done <- envs
	}()
	if code := call(t, leader, c.AdminToken, "POST", "/v1/envs", map[string]any{"name": "prod", "app": "web", "tags": map[string]string{"role": "web"}}, nil); code != 201 {
		t.Fatalf("create env: %d", code)
	}
	select {
	case envs := <-done:
		if len(envs) != 1 || envs[0].Name != "prod" {
			t.Fatalf("blocking read returned %+v", envs)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("blocking read did not return after the change")
	}

	// Update through a follower merges fields.
	var env raftfsm.Env
	if code := call(t, follower, c.AdminToken, "PUT", "/v1/envs/prod", map[string]any{"auto_deploy": true}, &env); code != 200 || !env.AutoDeploy || env.Tags["role"] != "web" {
		t.Fatalf("update env: %d %+v", code, env)
	}
	// Errors carry the right statuses and codes.
	var e meshtest.Answer
	if code := call(t, follower, c.AdminToken, "POST", "/v1/apps", map[string]any{"name": "web"}, &e); code != 409 || e.Code != "conflict" {
		t.Fatalf("duplicate app: %d %+v", code, e)
	}
	if code := call(t, follower, c.AdminToken, "DELETE", "/v1/apps/web", nil, &e); code != 409 || !strings.Contains(e.Message, "prod") {
		t.Fatalf("delete app with env: %d %+v", code, e)
	}
	if code := call(t, follower, c.AdminToken, "GET", "/v1/apps/nope", nil, &e); code != 404 {
		t.Fatalf("missing app: %d", code)
	}
	if code := call(t, follower, c.AdminToken, "POST", "/v1/apps", map[string]any{"name": "x", "colour": "red"}, &e); code != 400 || !strings.Contains(e.Message, "colour") {
		t.Fatalf("unknown field: %d %+v", code, e)
	}
	if code := call(t, follower, c.AdminToken, "POST", "/v1/apps", map[string]any{"name": "bad name"}, &e); code != 400 {
		t.Fatalf("bad name: %d", code)
	}
	// Status names the leader.
	var st node.Status
	if code := call(t, follower, c.AdminToken, "GET", "/v1/status", nil, &st); code != 200 || st.Leader != leader.Name() || st.Voters != 3 {
		t.Fatalf("status %d %+v", code, st)
	}
}

func TestJoinRefusals(t *testing.T) {
	c := meshtest.New(t, 1, nil)
	n1 := c.Nodes[0]
	caHash, id, secret, err := node.ParseJoinToken(c.JoinToken)
	if err != nil {
		t.Fatal(err)
	}
	try := func(name, token string) error {
		cfg := meshtest.Config(t, c.Dir, name)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n, err := node.Join(ctx, cfg, n1.RaftAddr(), token)
		if err == nil {
			n.Close()
			return nil
		}
		if node.Joined(cfg.DataDir) {
			t.Errorf("%s: a refused join left a node in the data dir", name)
		}
		if _, statErr := os.Stat(filepath.Join(cfg.DataDir, node.TLSDir, "node.pem")); statErr == nil {
			t.Errorf("%s: a refused join left a certificate behind", name)
		}
		return err
	}
	// Wrong CA hash: refused before the secret leaves this process.
	wrongCA := strings.Repeat("ab", 32)
	err = try("wrong-ca", fmt.Sprintf("SHOAL-%s-%s.%s", wrongCA, id, secret))
	var mismatch *transport.CAMismatchError
	if !errors.As(err, &mismatch) {
		t.Fatalf("wrong CA hash: got %v, want a CA mismatch", err)
	}
	// Wrong secret.
	err = try("wrong-secret", fmt.Sprintf("SHOAL-%s-%s.%s", caHash, id, strings.Repeat("0", 32)))
	if err == nil || !strings.Contains(err.Error(), "secret is wrong") {
		t.Fatalf("wrong secret: %v", err)
	}
	// Expired token.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	short, err := n1.CreateJoinToken(ctx, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	c.Eventually(time.Second, "token expiry", func() bool {
		_, sid, _, _ := node.ParseJoinToken(short)
		expired := false
		n1.FSM().Read(func(s *raftfsm.State) { expired = time.Now().After(s.JoinTokens[sid].ExpiresAt) })
		return expired
	})
	err = try("expired", short)
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: %v", err)
	}
	// Malformed.
	if err := try("malformed", "hello"); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("malformed token: %v", err)
	}
	// The good token still works, and joining twice just starts the node.
	cfg := meshtest.Config(t, c.Dir, "good")
	n, err := node.Join(ctx, cfg, n1.RaftAddr(), c.JoinToken)
	if err != nil {
		t.Fatalf("good join: %v", err)
	}
	n.Close()
	n, err = node.Join(ctx, cfg, n1.RaftAddr(), "ignored-for-a-joined-data-dir")
	if err != nil {
		t.Fatalf("second join on a joined data dir: %v", err)
	}
	n.Close()
}

// TestLeaveAndDeath: in a 5-node mesh with 3 voters, the leader leaves and a voter dies. Raft ends with the
// three live nodes, all voters (non-voters promoted), and the mesh keeps taking writes.
func TestLeaveAndDeath(t *testing.T) {
	c := meshtest.New(t, 5, nil)
	servers := c.RaftServers()
	voters := 0
	for _, role := range servers {
		if role == "voter" {
			voters++
		}
	}
	if len(servers) != 5 || voters != 3 {
		t.Fatalf("raft servers %v: want 5 with 3 voters", servers)
	}
	leader := c.Leader()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := leader.Leave(ctx); err != nil {
		t.Fatalf("leader leave: %v", err)
	}
	var victim int
	for i, n := range c.Nodes {
		if n == leader {
			c.Kill(i)
		}
	}
	for i, n := range c.Nodes {
		if n != nil && servers[n.Name()] == "voter" && n != c.Leader() {
			victim = i
			break
		}
	}
	victimName := c.Nodes[victim].Name()
	c.Kill(victim)
	c.Eventually(30*time.Second, "raft to settle on the 3 live nodes, all voters", func() bool {
		s := c.RaftServers()
		if len(s) != 3 {
			return false
		}
		for name, role := range s {
			if role != "voter" || name == leader.Name() || name == victimName {
				return false
			}
		}
		return true
	})
	var left, dead bool
	for _, m := range c.Leader().Members() {
		left = left || m.Name == leader.Name() && m.Status == node.StatusLeft
		dead = dead || m.Name == victimName && m.Status == node.StatusDead
	}
	if !left || !dead {
		t.Errorf("members should show %s left and %s dead: %+v", leader.Name(), victimName, c.Leader().Members())
	}
	if code := call(t, c.Leader(), c.AdminToken, "POST", "/v1/apps", map[string]any{"name": "after"}, nil); code != 201 {
		t.Fatalf("write after leave and death: %d", code)
	}
}

// TestFreshJoinerKnowsTokens: a node that has just joined, before it has the mesh's state, never calls a valid
// token wrong: it answers "retry" until it has caught up, then accepts it.
func TestFreshJoinerKnowsTokens(t *testing.T) {
	c := meshtest.New(t, 1, nil)
	n := c.Join("fresh", nil)
	// Until it has the state it says "retry" (503), never "wrong token" (401).
	c.Eventually(20*time.Second, "the fresh joiner to accept the admin token", func() bool {
		code := call(t, n, c.AdminToken, "GET", "/v1/status", nil, nil)
		if code != 200 && code != 503 {
			t.Fatalf("a fresh joiner answered %d to a valid token", code)
		}
		return code == 200
	})
	if code := call(t, n, "abc.def", "GET", "/v1/status", nil, nil); code != 401 {
		t.Fatalf("a wrong token got %d", code)
	}
}

// The number of voters is the mesh's, chosen at init: a joined node that comes to lead keeps it, whatever its
// own setting (before, a joined node leading aimed for its own default of 3 after `init --voters 5`).
func TestVotersAreTheMeshs(t *testing.T) {
	c := meshtest.New(t, 4, func(cfg *node.Config) {
		if cfg.Name == "n1" {
			cfg.Voters = 5
		} else {
			cfg.Voters = 3
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Nodes[0].Leave(ctx); err != nil {
		t.Fatalf("n1 leave: %v", err)
	}
	c.Kill(0)
	c.Eventually(30*time.Second, "a joined node to lead without n1", func() bool {
		l := c.Leader()
		_, in := c.RaftServers()["n1"]
		return l.Name() != "n1" && !in
	})
	c.Join("n5", nil)
	c.Eventually(30*time.Second, "n5 to become the fourth voter (the mesh keeps 5)", func() bool {
		return c.RaftServers()["n5"] == "voter"
	})
}

// TestRestartNeverRejectsValidToken: right after a restart, before the node has replayed its log, a valid token
// must get "retry" (503), never "wrong token" (401).
func TestRestartNeverRejectsValidToken(t *testing.T) {
	c := meshtest.New(t, 3, nil)
	// Make the log long enough that replaying it takes a moment.
	leader := c.Leader()
	ctx := context.Background()
	for i := 0; i < 300; {
		_, err := c.Leader().Apply(ctx, &raftfsm.TokenCreate{Token: raftfsm.Token{ID: fmt.Sprintf("t%d", i), Role: raftfsm.RoleReader, SecretHash: "x"}})
		switch {
		case err == nil, raftfsm.KindOf(err) == raftfsm.KindConflict: // a retried write that had been applied
			i++
		case raftfsm.KindOf(err) != "":
			t.Fatal(err)
		}
	}
	leader = c.Leader()
	var idx int
	for i, n := range c.Nodes {
		if n != leader {
			idx = i
		}
	}
	name := c.Nodes[idx].Name()
	c.Kill(idx)
	n, err := node.Open(meshtest.Config(t, c.Dir, name))
	if err != nil {
		t.Fatal(err)
	}
	c.Put(idx, n)
	for deadline := time.Now().Add(20 * time.Second); ; {
		code := call(t, n, c.AdminToken, "GET", "/v1/status", nil, nil)
		if code == 401 {
			t.Fatalf("a valid token was rejected while the node was loading its state (start %d, fsm %d)", n.StartIndex(), n.FSM().Index())
		}
		if code == 200 {
			break
		}
		if code != 503 || time.Now().After(deadline) {
			t.Fatalf("status %d", code)
		}
	}
	c.Eventually(20*time.Second, "the restarted node to be ready", n.Ready)
}
