package node

import (
	"io"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoal-ci/shoal/raftfsm"
)

// appliedFSM wraps the state machine for Raft. It times each Apply (shoal_fsm_apply_duration_seconds) and
// records the last index the state machine has really processed. Raft's own AppliedIndex moves as soon as
// entries are handed to the state machine's goroutine, before they are applied, so it cannot tell a read that
// the state includes an index yet.
type appliedFSM struct {
	*raftfsm.FSM
	m         *metrics
	logs      raft.LogStore
	processed atomic.Uint64
	// restored runs after a snapshot replaced the state (membership may have changed with it).
	restored func()
}

var _ raft.ConfigurationStore = (*appliedFSM)(nil)

func (f *appliedFSM) Apply(l *raft.Log) any {
	start := time.Now()
	r := f.FSM.Apply(l)
	f.m.fsmApply.Observe(time.Since(start).Seconds())
	f.processed.Store(l.Index)
	return r
}

// ApplyBatch applies a batch Raft committed together (raftfsm.FSM.ApplyBatch: one lock, one wake-up of the
// watchers); configuration entries come in it too, so the batch's last index is processed.
func (f *appliedFSM) ApplyBatch(logs []*raft.Log) []any {
	start := time.Now()
	out := f.FSM.ApplyBatch(logs)
	each := time.Since(start) / time.Duration(max(len(logs), 1))
	for _, l := range logs {
		if l.Type == raft.LogCommand {
			f.m.fsmApply.Observe(each.Seconds())
		}
	}
	if len(logs) > 0 {
		f.processed.Store(logs[len(logs)-1].Index)
	}
	return out
}

// StoreConfiguration is called by Raft, in log order, for configuration entries (when not batching).
func (f *appliedFSM) StoreConfiguration(index uint64, _ raft.Configuration) { f.processed.Store(index) }

func (f *appliedFSM) Restore(rc io.ReadCloser) error {
	if err := f.FSM.Restore(rc); err != nil {
		return err
	}
	f.processed.Store(f.FSM.Index())
	if f.restored != nil {
		f.restored()
	}
	return nil
}

// through reports whether the state machine has processed the log up to index. Entries that never reach the
// state machine (a new leader's no-op, barriers) are skipped by looking back in the log for the last entry
// that does; an entry below the log's first index is inside a snapshot, and so applied. An entry beyond the
// log's last index has not reached this node yet (a follower asked for the leader's commit index): not applied.
func (f *appliedFSM) through(index uint64) bool {
	done := f.processed.Load()
	if done >= index {
		return true
	}
	if last, err := f.logs.LastIndex(); err != nil || index > last {
		return false
	}
	var l raft.Log
	for i := index; i > done; i-- {
		if err := f.logs.GetLog(i, &l); err != nil {
			// Compacted: Raft only snapshots what the state machine has applied, so this node has it.
			return true
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return false
		}
	}
	return true
}
