package node

import (
	"strconv"
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
	// entriesPerRecord: the threshold is this many log entries per record in the state. More would make writes
	// cheaper still and restarts slower: a start replays the log since the last snapshot (measured at 100,000
	// records: ~80 µs an entry on a loaded 2-core machine, against ~6 µs to apply one).
	entriesPerRecord = 0.1
	// stopSnapshotMin: a clean stop takes a snapshot when at least this many entries were applied since the last
	// one, so the next start restores it rather than replaying them.
	stopSnapshotMin = 2048
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

// snapshotBeforeStop takes a snapshot at a clean stop (SIGTERM, `node leave`) when the log since the last one is
// long (stopSnapshotMin), so a restart restores it instead of replaying the log. A kill -9 replays at most the
// threshold's worth.
func (n *Node) snapshotBeforeStop() {
	st := n.raft.Stats()
	last, _ := strconv.ParseUint(st["last_snapshot_index"], 10, 64)
	applied, _ := strconv.ParseUint(st["applied_index"], 10, 64)
	if applied < last+stopSnapshotMin {
		return
	}
	start := time.Now()
	if err := n.raft.Snapshot().Error(); err != nil {
		n.log.Warn("snapshot before stopping", "err", err)
		return
	}
	n.log.Info("took a snapshot before stopping", "index", applied, "took", time.Since(start).Round(time.Millisecond))
}
