package deployer

import (
	"context"
	"log/slog"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

// orchestratorInterval bounds how long the orchestrator goes without looking: gossip (a server down) and
// the clock (how long it has been down) change without a Raft write.
const orchestratorInterval = time.Second

// releaseGaugeInterval is how often the leader recounts shoal_nodes_on_release.
const releaseGaugeInterval = 5 * time.Second

// lead runs the orchestrator while this node leads (the node's OnLeader hook): it moves every deployment
// through its batches, ends it, rolls back, and creates auto deploys and promotions. Everything it knows
// comes from the replicated state and gossip, so a new leader carries on where the old one stopped.
func (d *Deployer) lead(ctx context.Context, term uint64) {
	if !d.track() {
		return
	}
	defer d.wg.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(d.ctx, cancel)
	defer stop()
	log := d.log.With("role", "orchestrator", "term", term)
	log.Info("orchestrating deployments")
	defer d.m.nodesRelease.Reset()

	tick := time.NewTicker(orchestratorInterval)
	defer tick.Stop()
	var lastGauge time.Time
	var failing int
	for {
		changed := d.n.FSM().Changed()
		planned, ok := d.orchestrateOnce(ctx, log)
		if ctx.Err() != nil {
			return
		}
		if time.Since(lastGauge) >= releaseGaugeInterval {
			lastGauge = time.Now()
			d.countReleases()
		}
		wait := time.Duration(0)
		if !ok {
			// Back off a little so a write that keeps failing does not spin.
			failing++
			wait = min(time.Duration(failing)*100*time.Millisecond, 2*time.Second)
		} else {
			failing = 0
		}
		if wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			continue
		}
		if planned > 0 {
			continue // look again at once: each step may enable the next
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
	}
}

// orchestrateOnce plans against the state now and applies the plan's writes in order, stopping at the first
// that fails: the state moved under the plan (a rejection) or the leadership is going, and the next round plans
// again. It returns how many writes the plan held and whether all of them were applied.
func (d *Deployer) orchestrateOnce(ctx context.Context, log *slog.Logger) (planned int, ok bool) {
	acts := d.planNow()
	for _, a := range acts {
		if ctx.Err() != nil {
			return len(acts), false
		}
		if _, err := d.apply(ctx, a.cmd); err != nil {
			log.Warn("orchestrator write", "why", a.why, "err", err)
			return len(acts), false
		}
		log.Info("orchestrator", "did", a.why)
		if a.done != nil {
			a.done()
		}
	}
	return len(acts), true
}

// planNow reads gossip, then plans against the state under its read lock.
func (d *Deployer) planNow() []action {
	members := d.n.Members()
	p := &planner{members: memberViews(members), all: members, now: time.Now().UTC(), deadAfter: d.opts.DeadAfter, m: d.m}
	var acts []action
	d.n.FSM().Read(func(s *raftfsm.State) { acts = p.plan(s) })
	return acts
}

func (d *Deployer) countReleases() {
	var counts map[[3]string]int
	d.n.FSM().Read(func(s *raftfsm.State) { counts = nodesOnRelease(s) })
	d.m.nodesRelease.Reset()
	for k, n := range counts {
		d.m.nodesRelease.WithLabelValues(k[0], k[1], k[2]).Set(float64(n))
	}
}
