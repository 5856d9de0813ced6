package node

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoal-ci/shoal/raftfsm"
)

// leaderLoop follows this node's leadership. On gaining it, it commits a leader epoch (which fences builds of
// older terms), starts the leader hooks, and reconciles Raft membership against gossip until leadership ends.
// It is the only goroutine that changes the Raft configuration, so changes happen one at a time.
func (n *Node) leaderLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case isLeader := <-n.leaderCh:
			if isLeader {
				n.lead()
			}
		}
	}
}

// lead runs while this node is leader.
func (n *Node) lead() {
	ctx, cancel := context.WithCancel(n.ctx)
	var hooks sync.WaitGroup
	defer func() {
		cancel()
		hooks.Wait()
	}()
	term := n.raft.CurrentTerm()
	log := n.log.With("component", "reconcile", "term", term)
	log.Info("leading the mesh")

	// Watch for the loss of leadership on our own: leaderCh carries it, but this goroutine is busy below.
	lost := make(chan struct{})
	hooks.Add(1)
	go func() {
		defer hooks.Done()
		defer close(lost)
		for {
			select {
			case <-ctx.Done():
				return
			case isLeader := <-n.leaderCh:
				if !isLeader {
					cancel()
					return
				}
			}
		}
	}()

	epochCtx, epochCancel := context.WithTimeout(ctx, 10*time.Second)
	_, err := n.Apply(epochCtx, &raftfsm.LeaderEpoch{Term: term, Node: n.cfg.Name})
	epochCancel()
	if err != nil {
		log.Warn("could not commit the leader epoch; stepping back", "err", err)
		return
	}
	n.hookMu.Lock()
	n.lease = &leadership{ctx: ctx, term: term, wg: &hooks}
	for _, h := range n.leaderHooks {
		n.lease.start(h)
	}
	n.hookMu.Unlock()
	defer func() {
		n.hookMu.Lock()
		n.lease = nil
		n.hookMu.Unlock()
	}()

	tick := time.NewTicker(n.cfg.Timing.ReconcileInterval)
	defer tick.Stop()
	for {
		n.reconcile(log)
		n.rotateAfterDeparture(log)
		select {
		case <-ctx.Done():
			return
		case <-lost:
			log.Info("lost leadership")
			return
		case <-tick.C:
		case <-n.members.changed:
		}
	}
}

// reconcile makes the Raft configuration follow gossip: alive members are added (voters up to the target,
// non-voters after), members that left are removed at once, members dead past the grace period are removed, and
// non-voters are promoted while there are fewer voters than the target.
func (n *Node) reconcile(log interface {
	Info(string, ...any)
	Warn(string, ...any)
}) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return
	}
	servers := f.Configuration().Servers
	inRaft := map[string]raft.Server{}
	voters := 0
	for _, s := range servers {
		inRaft[string(s.ID)] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	want := n.votersWanted()
	members := n.members.snapshot()
	departed := n.departed()
	byName := map[string]Member{}
	for _, m := range members {
		byName[m.Name] = m
	}
	timeout := 5 * time.Second
	change := func(what string, fut raft.Future, id string) bool {
		if err := fut.Error(); err != nil {
			log.Warn("raft membership change failed", "change", what, "server", id, "err", err)
			return false
		}
		log.Info("raft membership changed", "change", what, "server", id)
		n.metrics.membershipChanges.WithLabelValues(what).Inc()
		return true
	}

	for _, s := range servers {
		id := string(s.ID)
		if id == n.cfg.Name {
			continue
		}
		m, known := byName[id]
		gone := departed[id] || known && m.Status == StatusDead && time.Since(m.Since) > n.cfg.DeadGrace
		if gone && change("remove", n.raft.RemoveServer(s.ID, 0, timeout), id) {
			if s.Suffrage == raft.Voter {
				voters--
			}
			delete(inRaft, id)
		}
	}
	for _, m := range members {
		if m.Status != StatusAlive || m.Addr == "" || departed[m.Name] {
			continue
		}
		s, in := inRaft[m.Name]
		switch {
		case !in && voters < want:
			if change("add-voter", n.raft.AddVoter(raft.ServerID(m.Name), raft.ServerAddress(m.Addr), 0, timeout), m.Name) {
				voters++
			}
		case !in:
			change("add-nonvoter", n.raft.AddNonvoter(raft.ServerID(m.Name), raft.ServerAddress(m.Addr), 0, timeout), m.Name)
		case s.Suffrage != raft.Voter && voters < want:
			if change("promote", n.raft.AddVoter(s.ID, raft.ServerAddress(m.Addr), 0, timeout), m.Name) {
				voters++
			}
		case string(s.Address) != m.Addr:
			// The member came back at a new address: re-adding it with its role updates the address.
			if s.Suffrage == raft.Voter {
				change("readdress", n.raft.AddVoter(s.ID, raft.ServerAddress(m.Addr), 0, timeout), m.Name)
			} else {
				change("readdress", n.raft.AddNonvoter(s.ID, raft.ServerAddress(m.Addr), 0, timeout), m.Name)
			}
		}
	}
}

// votersWanted is how many voters the mesh keeps: the number chosen at init, recorded in the replicated state, so
// a joined node that comes to lead keeps the same number; this node's own setting for meshes made before that.
func (n *Node) votersWanted() int {
	want := 0
	n.fsm.Read(func(s *raftfsm.State) {
		if s.Mesh != nil {
			want = s.Mesh.Voters
		}
	})
	if want == 0 {
		want = n.cfg.Voters
	}
	return want
}
