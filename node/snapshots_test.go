package node_test

import (
	"testing"

	"github.com/shoal-ci/shoal/node"
)

// The snapshot threshold follows the state's size, never below the configured one.
func TestSnapshotThresholdFollowsTheState(t *testing.T) {
	if got := node.SnapshotThresholdFor(8192, 1000); got != 8192 {
		t.Fatalf("small state: %d", got)
	}
	if got := node.SnapshotThresholdFor(8192, 200_000); got != 20_000 {
		t.Fatalf("200,000 records: %d", got)
	}
}
