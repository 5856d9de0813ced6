package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/node"
)

// TestLeaveSeenAsLeftEverywhere has the six non-voters of a nine-node in-process mesh leave one after another.
// Each Leave must return once the leader removed the node from Raft, and every remaining member must list it as
// left (not dead: a dead member keeps its Raft seat for the dead-grace period, 30 minutes by default).
//
// A regression test: when departures travelled only in gossip metadata, a member that received memberlist's
// leave message before the metadata update (the leave invalidates queued copies of the update, and a later
// update with the same incarnation is ignored) recorded the node as dead; a leader with that view never removed
// it, and Leave timed out. Most runs of this test failed then; node now records departures in Raft.
func TestLeaveSeenAsLeftEverywhere(t *testing.T) {
	c := meshtest.New(t, 9, func(cfg *node.Config) { cfg.DeadGrace = time.Hour })
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
		c.Kill(i)
		for _, o := range c.Nodes {
			if o == nil {
				continue
			}
			status := ""
			// The departure is a Raft entry: a member that has not applied it yet may see only gossip's "dead" for a
			// moment; it must come to "left".
			testutil.Eventually(t, 10*time.Second, fmt.Sprintf("%s to list %s as left", o.Name(), n.Name()), func() (bool, string) {
				for _, m := range o.Members() {
					if m.Name == n.Name() {
						status = m.Status
					}
				}
				return status == node.StatusLeft, status
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
