package node

import (
	"context"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

// pruneLoop runs on the leader: every PruneInterval it asks the state what the retention prunes now
// (raftfsm.State.PrunePlan) and commits it as one Prune command, which every node applies alike. A plan that
// Apply refuses (the state moved between the plan and the commit) is planned again at the next tick.
func (n *Node) pruneLoop(ctx context.Context, _ uint64) {
	every := n.cfg.Timing.PruneInterval
	if every <= 0 {
		every = time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.pruneOnce(ctx)
	}
}

// pruneOnce commits what the retention prunes now, if anything; it reports the prune it committed.
func (n *Node) pruneOnce(ctx context.Context) *raftfsm.Prune {
	var plan *raftfsm.Prune
	n.fsm.Read(func(s *raftfsm.State) { plan = s.PrunePlan(time.Now().UTC()) })
	if plan == nil {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := n.Apply(wctx, plan, OnCommit); err != nil {
		if ctx.Err() == nil {
			n.log.Warn("prune by the retention", "err", err)
		}
		return nil
	}
	n.log.Info("pruned by the retention", "builds", len(plan.Builds), "releases", len(plan.Releases),
		"deployments", len(plan.Deploys), "deliveries", len(plan.Deliveries), "departed", len(plan.Departed))
	return plan
}
