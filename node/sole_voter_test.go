package node_test

import (
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/node"
)

// TestSoleVoterLeadsAtOnce: a node that is the only voter of its mesh does not wait out a heartbeat timeout for
// a leader that cannot exist, at init or after a restart (issue 13: 0.86 s of a 2.3 s restart with a large state
// was that wait). The heartbeat timeout here is 20 s, so a node that waited would not lead within the test's
// 10 s bound, however loaded the machine.
func TestSoleVoterLeadsAtOnce(t *testing.T) {
	dir := t.TempDir()
	slow := func() node.Config {
		cfg := meshtest.Config(t, dir, "n1")
		cfg.Timing.HeartbeatTimeout, cfg.Timing.ElectionTimeout = 20*time.Second, 20*time.Second
		return cfg
	}
	leads := func(n *node.Node, what string) {
		t.Helper()
		testutil.Until(t, 10*time.Second, what+": the sole voter to lead (its heartbeat timeout is 20 s)", n.IsLeader)
	}
	n, _, err := node.Init(slow(), "test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leads(n, "init")
	for i, stop := range []string{"close", "close again"} {
		n.Close()
		if n, err = node.Open(slow()); err != nil {
			t.Fatalf("restart %d: %v", i+1, err)
		}
		leads(n, "after "+stop)
	}
	n.Close()
}
