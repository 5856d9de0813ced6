package node_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/transport"
)

// A join with a name that is not a valid node name is refused by the node it reaches, whatever the joiner's
// own checks (an attacker skips those).
func TestJoinRefusesBadNodeNames(t *testing.T) {
	c := meshtest.New(t, 1, nil)
	n := c.Nodes[0]
	caHash, id, secret, err := node.ParseJoinToken(c.JoinToken)
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := transport.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := transport.PublicKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, name := range []string{"../evil", strings.Repeat("n", 100), "a b", "", "-x"} {
		req := node.JoinRequest{TokenID: id, Secret: secret, Name: name, PublicKey: pub, AdvertiseIP: "127.0.0.1"}
		var resp node.JoinResponse
		err := transport.CallJoin(ctx, n.RaftAddr(), caHash, "join", req, &resp)
		var re *transport.RemoteError
		if !errors.As(err, &re) || re.Code != "join_refused" || !strings.Contains(re.Message, "name") {
			t.Errorf("join as %q: %v (cert %d bytes), want a join_refused naming the name", name, err, len(resp.Cert))
		}
	}
	// The joiner's own config refuses such a name before it sends anything.
	cfg := meshtest.Config(t, t.TempDir(), "../evil")
	if _, err := node.Join(ctx, cfg, n.RaftAddr(), c.JoinToken); err == nil || !strings.Contains(err.Error(), "--name") {
		t.Fatalf("Join with name ../evil: %v", err)
	}
}
