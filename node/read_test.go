package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/node"
)

// A consistent read that starts while the leader is gone waits for the next leader, as a write does, instead of
// failing in the middle of the election.
func TestConsistentReadWaitsOutAnElection(t *testing.T) {
	c := meshtest.New(t, 3, nil)
	leader := c.Leader()
	var follower *node.Node
	for i, n := range c.Nodes {
		if n == leader {
			defer func() { c.Nodes[i] = nil }()
		} else if follower == nil {
			follower = n
		}
	}
	leader.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := follower.ConsistentRead(ctx); err != nil {
		t.Fatalf("a consistent read during the election failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
	}
	if follower.IsLeader() {
		return // it won the election itself
	}
	if _, addr := follower.Leader(); addr == "" || addr == leader.RaftAddr() {
		t.Fatalf("the read succeeded, but %s names %q as its leader", follower.Name(), addr)
	}
}

// A read with no time left fails with the no-leader error rather than waiting.
func TestConsistentReadGivesUpWithItsContext(t *testing.T) {
	c := meshtest.New(t, 3, nil)
	leader := c.Leader()
	for i, n := range c.Nodes {
		if n != leader {
			c.Kill(i)
		}
	}
	// The leader alone cannot confirm it still leads: every read-index round fails until ctx ends.
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := leader.ConsistentRead(ctx)
	if err == nil {
		t.Fatal("a leader cut off from every other voter confirmed a consistent read")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the read took %v to give up with a 1.5 s context", took)
	}
}
