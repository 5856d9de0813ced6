package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/node"
)

// TestLeaveSeenAsLeftEverywhere has the six non-voters of a nine-node in-process mesh leave one after another.
// Each Leave must return once the leader removed the node from Raft, and every remaining member must list it as
// left (not dead: a dead member keeps its Raft seat for the dead-grace period, 30 minutes by default).
//
// This fails today, in most runs. The leaving node announces its intent in its gossip metadata (node/gossip.go
// announceLeaving) and then leaves memberlist. memberlist's leave message invalidates every queued copy of the
// metadata update (same node), and UpdateNode returned after only a few direct transmissions, so a member that
// receives the leave before the update records the node as dead and then ignores the update (same incarnation).
// A leader with that view never removes the node, and Leave times out.
func TestLeaveSeenAsLeftEverywhere(t *testing.T) {
	c := node.NewTestCluster(t, 9, func(cfg *node.Config) { cfg.DeadGrace = time.Hour })
	roles := c.RaftServers()
	for i, n := range c.Nodes {
		if roles[n.Name()] != "nonvoter" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := n.Leave(ctx)
		cancel()
		if err != nil {
			t.Errorf("%s leave: %v", n.Name(), err)
		}
		n.Close()
		c.Nodes[i] = nil
		for _, o := range c.Nodes {
			if o == nil {
				continue
			}
			status := ""
			eventually(t, 10*time.Second, fmt.Sprintf("%s to list %s as left or dead", o.Name(), n.Name()), func() (bool, string) {
				for _, m := range o.Members() {
					if m.Name == n.Name() {
						status = m.Status
					}
				}
				return status == node.StatusLeft || status == node.StatusDead, status
			})
			if status != node.StatusLeft {
				t.Errorf("%s lists %s, which left, as %s", o.Name(), n.Name(), status)
			}
		}
		if err != nil {
			// The leaver keeps a Raft seat the leader will not take back for an hour; more rounds would only
			// repeat the failure.
			return
		}
	}
}
