package node_test

import (
	"context"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/transport"
)

func meshOf(n *node.Node) raftfsm.Mesh {
	var m raftfsm.Mesh
	n.FSM().Read(func(s *raftfsm.State) { m = *s.Mesh })
	return m
}

// forgedIdentity is a certificate for member name signed by the CA in caCert/caKey, as someone holding an old
// snapshot's CA key could make.
func forgedIdentity(t *testing.T, caCert, caKey, name string) *transport.Identity {
	t.Helper()
	ca, err := transport.LoadCA([]byte(caCert), []byte(caKey))
	if err != nil {
		t.Fatal(err)
	}
	key, keyPEM, err := transport.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := transport.PublicKeyPEM(key)
	cert, err := ca.SignNode(name, pub, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := transport.NewIdentity(name, ca.CertPEM, cert, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func dialWith(t *testing.T, id *transport.Identity, addr string) error {
	t.Helper()
	ep, err := transport.Listen(transport.Config{Bind: "127.0.0.1:0", Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := ep.Dial(ctx, addr, transport.ALPNRPC)
	if err != nil {
		return err
	}
	select {
	case <-conn.Context().Done():
		return context.Cause(conn.Context())
	case <-time.After(time.Second):
		return nil
	}
}

// A CA rotation keeps the mesh whole throughout (writes through a follower at every stage), refuses to finish
// while a member lacks a certificate from the new CA, switches every member to the new CA at the finish, and after
// the grace refuses certificates from the old CA, even ones minted with its key for a member's name.
func TestCARotation(t *testing.T) {
	c := meshtest.New(t, 4, func(cfg *node.Config) { cfg.DeadGrace = time.Hour })
	leader := c.Leader()
	old := meshOf(leader)
	write := func(stage string) {
		t.Helper()
		name := "t-" + strings.ReplaceAll(stage, " ", "-")
		if code := call(t, c.Follower(), c.AdminToken, "POST", "/v1/tokens", map[string]any{"name": name, "role": "reader"}, nil); code != 201 {
			t.Fatalf("write %s: %d", stage, code)
		}
	}
	// One member is down for the whole rotation: finishing must wait for it, or be forced.
	var down *node.Node
	for i, n := range c.Nodes {
		if n != leader && n != c.Follower() {
			down = n
			c.Kill(i)
			break
		}
	}
	var out map[string]any
	if code := call(t, leader, c.AdminToken, "POST", "/v1/mesh/ca/rotate", nil, &out); code != 200 {
		t.Fatalf("start: %d %v", code, out)
	}
	if code := call(t, leader, c.AdminToken, "POST", "/v1/mesh/ca/rotate", nil, &out); code != 409 {
		t.Errorf("a second start: %d %v", code, out)
	}
	write("after start")
	c.Eventually(20*time.Second, "every running member to hold a certificate from the next CA", func() bool {
		var st node.CAStatus
		call(t, leader, c.AdminToken, "GET", "/v1/mesh/ca", nil, &st)
		return len(st.Missing) == 1 && st.Missing[0] == down.Name()
	})
	var e meshtest.Answer
	if code := call(t, leader, c.AdminToken, "POST", "/v1/mesh/ca/rotate", map[string]any{"finish": true}, &e); code != 409 || !strings.Contains(e.Message, down.Name()) {
		t.Fatalf("finish with a member lacking its certificate: %d %+v", code, e)
	}
	write("during the rotation")
	if code := call(t, c.Follower(), c.AdminToken, "POST", "/v1/mesh/ca/rotate", map[string]any{"finish": true, "force": true, "grace": "2s"}, &out); code != 200 {
		t.Fatalf("forced finish: %d %v", code, out)
	}
	next := meshOf(leader)
	if next.CACert == old.CACert {
		t.Fatal("the signing CA did not change")
	}
	newCA := node.FirstCert([]byte(next.CACert))
	var live []*node.Node
	for _, n := range c.Nodes {
		if n != nil {
			live = append(live, n)
		}
	}
	c.Eventually(10*time.Second, "every running member to present its certificate from the new CA", func() bool {
		for _, n := range live {
			if n.Endpoint().Identity().CAHash != transport.CertHash(newCA.Raw) {
				return false
			}
		}
		return true
	})
	write("after the finish")
	// During the grace the old CA is still trusted; after it, a certificate from it is refused, even for a
	// member's name and signed with the old CA's key.
	forged := forgedIdentity(t, old.CACert, old.CAKey, live[1].Name())
	c.Eventually(10*time.Second, "the old CA's grace to end everywhere", func() bool {
		for _, n := range live {
			if strings.Contains(string(n.Endpoint().Identity().CAPEM), strings.TrimSpace(old.CACert)) {
				return false
			}
		}
		return true
	})
	for _, n := range live {
		if err := dialWith(t, forged, n.RaftAddr()); err == nil {
			t.Errorf("%s accepted a certificate from the replaced CA", n.Name())
		}
	}
	write("after the grace")
	// The stored identity is the new one, and a join token printed now admits a new member.
	for _, n := range live {
		id, err := transport.LoadIdentity(filepath.Join(n.DataDir(), node.TLSDir))
		if err != nil || id.CAHash != transport.CertHash(newCA.Raw) {
			t.Errorf("%s stored identity: %v", n.Name(), err)
		}
	}
	var jt api.JoinTokenView
	if code := call(t, leader, c.AdminToken, "POST", "/v1/tokens/join", nil, &jt); code != 201 {
		t.Fatalf("join token: %d", code)
	}
	c.JoinToken = jt.Token
	n5 := c.Join("n5", nil)
	c.Eventually(20*time.Second, "the new member in Raft", func() bool {
		_, in := c.RaftServers()[n5.Name()]
		return in
	})
	if slices.Contains(meshOf(leader).NextIssued, "x") {
		t.Fatal("unreachable")
	}
}
