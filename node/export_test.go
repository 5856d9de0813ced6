package node

import (
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoal-ci/shoal/raftfsm"
)

// Internals the external tests (package node_test) use.
var (
	RaftDir              = raftDir
	TLSDir               = tlsDir
	GossipKeyFile        = gossipKeyFile
	RemoveGossipKeys     = removeGossipKeys
	SnapshotThresholdFor = snapshotThresholdFor
	FirstCert            = firstCert
)

const StopSnapshotMin = stopSnapshotMin

type (
	ApplyRequest = applyRequest
	JoinRequest  = joinRequest
	JoinResponse = joinResponse
)

// SetRevalidateDelay changes how long a node waits after a membership change before it closes the connections of
// removed peers, and returns a function that restores it.
func SetRevalidateDelay(d time.Duration) (restore func()) {
	old := revalidateDelay
	revalidateDelay = d
	return func() { revalidateDelay = old }
}

// RingKeys returns the keys of n's gossip keyring now.
func RingKeys(n *Node) [][]byte {
	n.gossipKeys.mu.Lock()
	defer n.gossipKeys.mu.Unlock()
	if n.gossipKeys.ring == nil {
		return nil
	}
	return append([][]byte(nil), n.gossipKeys.ring.GetKeys()...)
}

// Raft returns n's Raft.
func (n *Node) Raft() *raft.Raft { return n.raft }

// Config returns the config n runs with (defaults filled in).
func (n *Node) Config() Config { return n.cfg }

// CommandsInCommon is commandsInCommon.
func (n *Node) CommandsInCommon(t raftfsm.CommandType) (raftfsm.CommandSet, []string) {
	return n.commandsInCommon(t)
}

// StartIndex is the last index of n's own log when it started.
func (n *Node) StartIndex() uint64 { return n.startIndex }
