package node

import (
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

// A snapshot encodes the whole state, so taking one every SnapshotThreshold entries costs each write a share
// that grows with the state: ~200 bytes of JSON per app and 8,192 entries give 2.4 KB of encoding per write at
// 100,000 records, more than the write itself. snapshotTuner keeps that share constant: the threshold follows the
// number of records (at least the configured one), so a state twice as big is snapshotted half as often. The
// price is more log to replay at a restart, which grows as the snapshot to restore does.
const (
	snapshotTuneEvery = 10 * time.Second
	// entriesPerRecord: the threshold is this many log entries per record in the state.
	entriesPerRecord = 0.5
)

// snapshotThresholdFor returns the threshold for a state of records records.
func snapshotThresholdFor(base uint64, records int) uint64 {
	return max(base, uint64(float64(records)*entriesPerRecord))
}

// stateRecords counts the records a snapshot encodes (the maps' sizes: no scan).
func stateRecords(s *raftfsm.State) int {
	n := len(s.Apps) + len(s.Envs) + len(s.Builds) + len(s.Releases) + len(s.Deploys) + len(s.Tokens) +
		len(s.Runtimes) + len(s.Pipelines) + len(s.Departed)
	if s.Notify != nil {
		n += len(s.Notify.Deliveries)
	}
	return n
}

// snapshotTuner adjusts Raft's SnapshotThreshold to the state's size until the node closes.
func (n *Node) snapshotTuner() {
	defer n.wg.Done()
	base := n.cfg.Timing.SnapshotThreshold
	cur := base
	t := time.NewTicker(snapshotTuneEvery)
	defer t.Stop()
	for {
		var records int
		n.fsm.Read(func(s *raftfsm.State) { records = stateRecords(s) })
		// Change it only when it moves by a quarter or more: ReloadConfig takes Raft's config lock.
		if want := snapshotThresholdFor(base, records); want > cur+cur/4 || want < cur-cur/4 {
			rc := n.raft.ReloadableConfig()
			rc.SnapshotThreshold = want
			if err := n.raft.ReloadConfig(rc); err != nil {
				n.log.Warn("adjust the snapshot threshold", "want", want, "err", err)
			} else {
				n.log.Debug("snapshot threshold follows the state", "records", records, "threshold", want)
				cur = want
			}
		}
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
	}
}
