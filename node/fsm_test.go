package node

import (
	"testing"

	"github.com/hashicorp/raft"
)

// through must answer "not yet" for an index this node's log has not received: a follower's consistent read waits
// for the leader's commit index, which can be ahead of the follower's log (a fetch once answered 404 for a release
// committed a moment before because of this).
func TestAppliedThrough(t *testing.T) {
	logs := raft.NewInmemStore()
	put := func(index uint64, typ raft.LogType) {
		if err := logs.StoreLog(&raft.Log{Index: index, Term: 1, Type: typ}); err != nil {
			t.Fatal(err)
		}
	}
	f := &appliedFSM{logs: logs}
	put(1, raft.LogConfiguration)
	put(2, raft.LogCommand)
	put(3, raft.LogNoop)
	put(4, raft.LogCommand)
	f.processed.Store(2)

	cases := []struct {
		index uint64
		want  bool
		why   string
	}{
		{1, true, "below what the state machine processed"},
		{2, true, "exactly what it processed"},
		{3, true, "a no-op after it never reaches the state machine"},
		{4, false, "a command it has not processed"},
		{5, false, "an entry the log has not received yet"},
		{50, false, "far beyond the log"},
	}
	for _, c := range cases {
		if got := f.through(c.index); got != c.want {
			t.Errorf("through(%d) = %v, want %v: %s", c.index, got, c.want, c.why)
		}
	}

	// Once the command is processed and more no-ops arrive, they count as applied too.
	f.processed.Store(4)
	put(5, raft.LogNoop)
	put(6, raft.LogBarrier)
	if !f.through(6) {
		t.Error("through(6) = false after the last command was processed and only a no-op and a barrier followed")
	}
	if f.through(7) {
		t.Error("through(7) = true for an entry the log has not received")
	}

	// Entries compacted into a snapshot were applied before the snapshot was taken.
	if err := logs.DeleteRange(1, 6); err != nil {
		t.Fatal(err)
	}
	put(7, raft.LogNoop)
	f.processed.Store(0)
	if !f.through(6) {
		t.Error("through(6) = false for an entry compacted into a snapshot")
	}
}
