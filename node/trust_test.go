package node_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/transport"
)

// forward sends raw command bytes to the leader's apply RPC from node from, as a forwarded write.
func forward(t *testing.T, from, leader *node.Node, data []byte, token string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out node.Applied
	return from.Endpoint().Call(ctx, leader.RaftAddr(), "apply", node.ApplyRequest{Data: data, Token: token}, &out)
}

func encode(t *testing.T, c raftfsm.Command) []byte {
	t.Helper()
	b, err := raftfsm.Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func codeOf(err error) string {
	var re *transport.RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	return ""
}

// The leader decodes every forwarded command strictly before Raft sees it: a malformed or unknown one is refused
// and nothing is committed.
func TestLeaderRefusesMalformedForwardedWrites(t *testing.T) {
	c := meshtest.New(t, 3, nil)
	leader, f := c.Leader(), c.Follower()
	app := encode(t, &raftfsm.AppPut{App: raftfsm.App{Name: "web", Repo: "https://example.com/web.git", Branch: "main", Manifest: "shoal.yml"}, Create: true})
	bad := map[string][]byte{
		"empty":           {},
		"garbage":         []byte("\x01\x06not json"),
		"newer envelope":  append([]byte{9}, app[1:]...),
		"unknown type":    append([]byte{1, 200}, app[2:]...),
		"ignorable type":  append([]byte{1, byte(raftfsm.IgnoreUnknown | 0x7e)}, app[2:]...),
		"trailing data":   append(append([]byte{}, app...), []byte(` {"App":{"Name":"evil"}}`)...),
		"unknown field":   append([]byte{1, byte(raftfsm.CmdAppPut)}, []byte(`{"App":{"Name":"web"},"Create":true,"Sneaky":1}`)...),
		"wrong body type": append([]byte{1, byte(raftfsm.CmdAppPut)}, []byte(`[1,2,3]`)...),
	}
	before := leader.Raft().LastIndex()
	for name, data := range bad {
		err := forward(t, f, leader, data, "")
		if err == nil || codeOf(err) != raftfsm.KindBadRequest {
			t.Errorf("%s: forwarded write answered %v (code %q), want a bad_request refusal", name, err, codeOf(err))
		}
	}
	if after := leader.Raft().LastIndex(); after != before {
		t.Errorf("refused writes reached the log: last index %d -> %d", before, after)
	}
	leader.FSM().Read(func(s *raftfsm.State) {
		if len(s.Apps) != 0 {
			t.Errorf("a refused write created apps: %v", s.Apps)
		}
	})
}

// A node certificate alone cannot commit what only an admin may; a forwarded write carries its caller's token id,
// which the leader checks against its own state.
func TestNodeCertificateAloneIsNotAnAdmin(t *testing.T) {
	c := meshtest.New(t, 3, nil)
	leader, f := c.Leader(), c.Follower()
	adminID, _, _ := strings.Cut(c.AdminToken, ".")
	_, evil := node.NewAPIToken("evil", raftfsm.RoleAdmin)
	app := &raftfsm.AppPut{App: raftfsm.App{Name: "web", Repo: "https://example.com/web.git", Branch: "main", Manifest: "shoal.yml"}, Create: true}
	for _, cmd := range []raftfsm.Command{app, &raftfsm.TokenCreate{Token: evil}, &raftfsm.JoinTokenCreate{Token: raftfsm.JoinToken{ID: "j", Secret: "s", ExpiresAt: time.Now().Add(time.Hour)}},
		&raftfsm.MeshInit{}, &raftfsm.MemberRejoin{Name: "x"}, &raftfsm.LeaderEpoch{Term: 99, Node: f.Name()},
		&raftfsm.ReleaseHolders{App: "web", Version: "1", Node: leader.Name()}, &raftfsm.MemberLeave{Name: leader.Name()}} {
		err := forward(t, f, leader, encode(t, cmd), "")
		if codeOf(err) != node.CodeForbidden {
			t.Errorf("%T from a node certificate alone: %v (code %q), want forbidden", cmd, err, codeOf(err))
		}
	}
	// A token id the leader does not know is refused as revoked, whatever the forwarding node claims.
	if err := forward(t, f, leader, encode(t, app), "no-such-token"); codeOf(err) != node.CodeUnauthorized {
		t.Errorf("unknown token id: %v, want unauthorized", err)
	}
	leader.FSM().Read(func(s *raftfsm.State) {
		if len(s.Apps) != 0 || s.Tokens[evil.ID] != nil || s.JoinTokens["j"] != nil || len(s.Departed) != 0 {
			t.Errorf("a refused write changed the state: apps %v, tokens %v, departed %v", s.Apps, s.Tokens, s.Departed)
		}
	})
	// The same write on behalf of the admin token is committed.
	if err := forward(t, f, leader, encode(t, app), adminID); err != nil {
		t.Fatalf("forwarded admin write: %v", err)
	}
	// An admin may remove another member through a follower.
	if err := forward(t, f, leader, encode(t, &raftfsm.MemberLeave{Name: "somebody-else"}), adminID); err != nil {
		t.Fatalf("an admin removing a member through a follower: %v", err)
	}
}

// TestEveryCommandHasAnAuthority: every command type that decodes is registered with its authority (the zero
// one, leader only, is the strictest), and the registry agrees with itself.
func TestEveryCommandHasAnAuthority(t *testing.T) {
	for typ := raftfsm.CommandType(1); typ < raftfsm.IgnoreUnknown; typ++ {
		data := []byte{raftfsm.EnvelopeVersion, byte(typ), '{', '}'}
		if _, err := raftfsm.DecodeStrict(data); err != nil {
			continue // not a registered type
		}
		spec, ok := raftfsm.SpecOf(typ)
		if !ok || spec.Name == "" || spec.New().Type() != typ {
			t.Errorf("command type %d decodes but its registration is %+v", typ, spec)
		}
		if spec.About != nil && !spec.Node {
			t.Errorf("%s names the node it is about but nodes may not write it", spec.Name)
		}
	}
}

// A token revoked on the leader is refused at once through a follower (before, a follower accepted it for the
// 100-150 ms until it applied the revocation itself).
func TestRevokedTokenRefusedAtOnceThroughFollower(t *testing.T) {
	c := meshtest.New(t, 3, nil)
	leader, f := c.Leader(), c.Follower()
	for i := range 5 {
		var tok api.TokenView
		if code := call(t, leader, c.AdminToken, "POST", "/v1/tokens", map[string]any{"name": fmt.Sprintf("ops%d", i), "role": "admin"}, &tok); code != 201 {
			t.Fatalf("create token: %d", code)
		}
		// The follower has the token before it is revoked, as a follower that accepted it a moment ago would.
		c.Eventually(5*time.Second, "the follower to know the token", func() bool {
			known := false
			f.FSM().Read(func(s *raftfsm.State) { known = s.Tokens[tok.ID] != nil })
			return known
		})
		if code := call(t, leader, c.AdminToken, "DELETE", "/v1/tokens/"+tok.ID, nil, nil); code != 204 {
			t.Fatalf("revoke: %d", code)
		}
		var e meshtest.Answer
		code := call(t, f, tok.Token, "POST", "/v1/apps", map[string]any{"name": fmt.Sprintf("late%d", i), "repo": "https://example.com/x.git"}, &e)
		if code != 401 {
			t.Fatalf("try %d: a token revoked on the leader wrote through a follower: %d %+v", i, code, e)
		}
	}
	leader.FSM().Read(func(s *raftfsm.State) {
		if len(s.Apps) != 0 {
			t.Errorf("revoked tokens created apps: %v", s.Apps)
		}
	})
}

// A join token revoked on the leader and used at once through a follower does not admit the node: the leader
// checks join tokens.
func TestRevokedJoinTokenRefusedThroughFollower(t *testing.T) {
	c := meshtest.New(t, 3, nil)
	leader, f := c.Leader(), c.Follower()
	for i := range 2 {
		var jt struct {
			ID    string `json:"id"`
			Token string `json:"token"`
		}
		if code := call(t, leader, c.AdminToken, "POST", "/v1/tokens/join", map[string]any{"ttl": "1h"}, &jt); code != 201 || jt.Token == "" {
			t.Fatalf("create join token: %d %+v", code, jt)
		}
		c.Eventually(5*time.Second, "the follower to know the join token", func() bool {
			known := false
			f.FSM().Read(func(s *raftfsm.State) { known = s.JoinTokens[jt.ID] != nil })
			return known
		})
		if code := call(t, leader, c.AdminToken, "DELETE", "/v1/tokens/join/"+jt.ID, nil, nil); code != 204 {
			t.Fatalf("revoke join token: %d", code)
		}
		cfg := meshtest.Config(t, c.Dir, fmt.Sprintf("intruder%d", i))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		n, err := node.Join(ctx, cfg, f.RaftAddr(), jt.Token)
		cancel()
		if err == nil {
			n.Close()
			t.Fatalf("try %d: a join token revoked on the leader admitted a node through a follower", i)
		}
		if !strings.Contains(err.Error(), "not known to this mesh") {
			t.Errorf("refusal does not say why: %v", err)
		}
	}
}

// dialAs opens a connection for alpn to addr with the identity stored in dataDir, from a fresh endpoint, and
// reports why it was refused (nil: accepted). A TLS 1.3 client may finish its side of the handshake before the
// server has refused its certificate; the refusal then closes the connection, which is waited for up to 5 s (a
// generous bound on a loaded machine: an accepted connection stays open).
func dialAs(t *testing.T, dataDir, addr, alpn string) error {
	t.Helper()
	ep := identityEndpoint(t, dataDir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := ep.Dial(ctx, addr, alpn)
	if err != nil {
		return err
	}
	select {
	case <-conn.Context().Done():
		return context.Cause(conn.Context())
	case <-time.After(5 * time.Second):
		return nil
	}
}

// answeredAs reports whether a node at addr answers an RPC from the identity stored in dataDir (any meshtest.Answer from
// a handler, even a refusal of the request, means the connection was accepted).
func answeredAs(t *testing.T, dataDir, addr string) error {
	t.Helper()
	ep := identityEndpoint(t, dataDir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := ep.Call(ctx, addr, "read_index", struct{}{}, nil)
	var re *transport.RemoteError
	if errors.As(err, &re) {
		return nil
	}
	return err
}

func identityEndpoint(t *testing.T, dataDir string) *transport.Endpoint {
	t.Helper()
	id, err := transport.LoadIdentity(filepath.Join(dataDir, node.TLSDir))
	if err != nil {
		t.Fatal(err)
	}
	ep, err := transport.Listen(transport.Config{Bind: "127.0.0.1:0", Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	return ep
}

// A node that leaves loses every ALPN within a second: new handshakes are refused by every member, and the
// connections it had open are closed. Its name can join again, but its old certificate stays refused.
func TestDepartedNodeIsRefusedEverywhere(t *testing.T) {
	c := meshtest.New(t, 4, nil)
	leader, f := c.Leader(), c.Follower()
	var others []*node.Node
	for _, n := range c.Nodes {
		if n != f {
			others = append(others, n)
		}
	}
	// A connection opened with the leaver's certificate while it is a member.
	spy := identityEndpoint(t, f.DataDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	open, err := spy.Dial(ctx, leader.RaftAddr(), transport.ALPNRPC)
	if err != nil {
		t.Fatalf("a member's certificate was refused: %v", err)
	}
	if err := f.Leave(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
	left := time.Now()
	select {
	case <-open.Context().Done():
	case <-time.After(time.Second):
		t.Fatal("the departed node's open connection stayed open a second after its departure")
	}
	for _, n := range others {
		for _, alpn := range []string{transport.ALPNRPC, transport.ALPNRaft} {
			if err := dialAs(t, f.DataDir(), n.RaftAddr(), alpn); err == nil {
				t.Errorf("%s accepted the departed node on %s", n.Name(), alpn)
			}
		}
	}
	t.Logf("refused everywhere %v after the departure", time.Since(left).Round(time.Millisecond))
	adminID, _, _ := strings.Cut(c.AdminToken, ".")
	app := &raftfsm.AppPut{App: raftfsm.App{Name: "web", Repo: "https://example.com/web.git"}, Create: true}
	var out node.Applied
	if err := spy.Call(ctx, leader.RaftAddr(), "apply", node.ApplyRequest{Data: encode(t, app), Token: adminID}, &out); err == nil {
		t.Fatal("the departed node's certificate wrote to the mesh")
	}

	// The name joins again from a new data dir: the new certificate works, the old one stays refused.
	for i, n := range c.Nodes {
		if n == f {
			c.Kill(i)
		}
	}
	cfg := meshtest.Config(t, filepath.Join(c.Dir, "again"), f.Name())
	back, err := node.Join(ctx, cfg, leader.RaftAddr(), c.JoinToken)
	if err != nil {
		t.Fatalf("rejoin: %v", err)
	}
	c.Add(back)
	if err := answeredAs(t, back.DataDir(), leader.RaftAddr()); err != nil {
		t.Fatalf("the rejoined node's new certificate was refused: %v", err)
	}
	if err := dialAs(t, f.DataDir(), leader.RaftAddr(), transport.ALPNRPC); err == nil {
		t.Fatal("the old certificate of a rejoined name was accepted")
	}
}

// Certificates are renewed at half-life by whoever leads, across a leader change, and a node that was off longer
// than its certificate's life is told how to come back.
func TestCertificatesRenewAcrossLeaderChange(t *testing.T) {
	const life = 6 * time.Second
	c := meshtest.New(t, 3, func(cfg *node.Config) { cfg.CertLifetime = life })
	serial := func(n *node.Node) string { return n.Endpoint().Identity().Cert.Leaf.SerialNumber.Text(16) }
	renewedSince := func(first map[string]string) func() bool {
		return func() bool {
			for _, n := range c.Nodes {
				if n != nil && serial(n) == first[n.Name()] {
					return false
				}
			}
			return true
		}
	}
	first := map[string]string{}
	for _, n := range c.Nodes {
		first[n.Name()] = serial(n)
	}
	c.Eventually(3*life, "every node to renew its certificate", renewedSince(first))

	old := c.Leader()
	for i, n := range c.Nodes {
		if n == old {
			c.Kill(i)
		}
	}
	second := map[string]string{}
	for _, n := range c.Nodes {
		if n != nil {
			second[n.Name()] = serial(n)
		}
	}
	c.Eventually(3*life, "the nodes to renew again under the new leader", renewedSince(second))
	start := time.Now()
	c.Eventually(3*life, "a write through a follower more than a lifetime later", func() bool {
		if time.Since(start) < life {
			return false
		}
		code := call(t, c.Follower(), c.AdminToken, "POST", "/v1/tokens", map[string]any{"name": fmt.Sprintf("t%d", time.Now().UnixNano()), "role": "reader"}, nil)
		return code == 201
	})

	// A node stopped past its certificate's life refuses to start, saying how to rejoin.
	f := c.Follower()
	cfg := f.Config()
	cfg.Registry = nil // the stopped node's registry holds its collectors
	expires := f.Endpoint().Identity().Cert.Leaf.NotAfter
	for i, n := range c.Nodes {
		if n == f {
			c.Kill(i)
		}
	}
	c.Eventually(2*life, "the stopped node's certificate to expire", func() bool { return time.Now().After(expires) })
	if n, err := node.Open(cfg); err == nil {
		n.Close()
		t.Fatal("a node started on an expired certificate")
	} else if !strings.Contains(err.Error(), "expired") || !strings.Contains(err.Error(), "node join") {
		t.Fatalf("the refusal does not say what to do: %v", err)
	}
}

// An admin removes a member that is still running (lost, or no longer trusted): the mesh refuses its certificate
// and closes its connections at once, and the leader takes it out of Raft.
func TestAdminRemovesAMember(t *testing.T) {
	c := meshtest.New(t, 4, nil)
	leader, f := c.Leader(), c.Follower()
	spy := identityEndpoint(t, f.DataDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	open, err := spy.Dial(ctx, leader.RaftAddr(), transport.ALPNRPC)
	if err != nil {
		t.Fatal(err)
	}
	var e meshtest.Answer
	if code := call(t, leader, c.AdminToken, "POST", "/v1/members/nobody/remove", nil, &e); code != 404 {
		t.Errorf("removing an unknown member: %d %+v", code, e)
	}
	if code := call(t, f, c.AdminToken, "POST", "/v1/members/"+leader.Name()+"/remove", nil, &e); code != 409 {
		t.Errorf("removing the leader: %d %+v", code, e)
	}
	if code := call(t, c.Nodes[0], c.AdminToken, "POST", "/v1/members/"+f.Name()+"/remove", nil, &e); code != 200 {
		t.Fatalf("remove %s: %d %+v", f.Name(), code, e)
	}
	removed := time.Now()
	select {
	case <-open.Context().Done():
	case <-time.After(time.Second):
		t.Fatal("the removed member's connection stayed open a second after its removal")
	}
	for _, n := range c.Nodes {
		if n != f {
			if err := dialAs(t, f.DataDir(), n.RaftAddr(), transport.ALPNRaft); err == nil {
				t.Errorf("%s accepted the removed member on raft", n.Name())
			}
		}
	}
	t.Logf("refused everywhere %v after the removal", time.Since(removed).Round(time.Millisecond))
	c.Eventually(10*time.Second, "the leader to take the removed member out of Raft", func() bool {
		_, in := c.RaftServers()[f.Name()]
		return !in
	})
	if code := call(t, leader, c.AdminToken, "POST", "/v1/tokens", map[string]any{"name": "after", "role": "reader"}, nil); code != 201 {
		t.Fatalf("write after the removal: %d", code)
	}
}

// A certificate that outlives the lifetime in force, as the 5-year ones issued before short-lived certificates do,
// is renewed as soon as the node runs with the new lifetime.
func TestLongLivedCertificateRenewedAfterUpgrade(t *testing.T) {
	c := meshtest.New(t, 1, func(cfg *node.Config) { cfg.CertLifetime = 5 * 365 * 24 * time.Hour })
	n := c.Nodes[0]
	cfg := n.Config()
	c.Kill(0)
	cfg.Registry, cfg.CertLifetime = nil, time.Hour
	back, err := node.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Put(0, back)
	c.Eventually(20*time.Second, "the 5-year certificate to be replaced by a 1-hour one", func() bool {
		leaf := back.Endpoint().Identity().Cert.Leaf
		return time.Until(leaf.NotAfter) <= time.Hour
	})
	id, err := transport.LoadIdentity(filepath.Join(back.DataDir(), node.TLSDir))
	if err != nil || time.Until(id.Cert.Leaf.NotAfter) > time.Hour {
		t.Fatalf("the stored certificate was not renewed: %v", err)
	}
}

// A leaver whose connection the leader closes before the answer to its departure arrives (here the leader closes
// at once; in a loaded mesh another stream of the leaver's can reach the leader first) still leaves cleanly: the
// refusal as a departed member proves the departure is committed.
func TestLeaveSurvivesItsConnectionClosedBeforeTheAnswer(t *testing.T) {
	t.Cleanup(node.SetRevalidateDelay(0)) // before the mesh, so it is restored after the mesh stops
	c := meshtest.New(t, 5, nil)
	for round := 0; round < 2; round++ {
		f := c.Follower()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := f.Leave(ctx)
		cancel()
		if err != nil {
			t.Fatalf("round %d: %s leave: %v", round, f.Name(), err)
		}
		for i, n := range c.Nodes {
			if n == f {
				c.Kill(i)
			}
		}
		testutil.Eventually(t, 10*time.Second, f.Name()+" listed as left", func() (bool, string) {
			for _, m := range c.Leader().Members() {
				if m.Name == f.Name() {
					return m.Status == node.StatusLeft, m.Status
				}
			}
			return false, "not listed"
		})
	}
}
