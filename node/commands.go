package node

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/transport"
)

// A rolling upgrade runs old and new Shoal side by side. A command type that only the new code knows must not
// reach the log while a member that would apply it runs the old code: that member would stop at the entry
// ("unknown command type: upgrade this node"). So each node advertises the command types it knows in its gossip
// metadata (a node that advertises none, an older Shoal, knows raftfsm.Baseline), and the leader commits a
// command only when every member that applies the log knows its type: every voter, and every non-voter that is
// alive. Otherwise the write waits, up to its deadline, for the upgrade to finish, and then answers 503
// unavailable, naming the members still to upgrade.

// advertisedCommands is the text form of the command types this node says it knows.
func (n *Node) advertisedCommands() string {
	if n.cfg.AdvertiseCommands != nil {
		return raftfsm.SetOf(n.cfg.AdvertiseCommands).String()
	}
	return raftfsm.SetOf(raftfsm.Known()).String()
}

// knownCheck caches, for a short while, the command types every member that applies the log knows, so that a
// write costs a bit test, not a round trip to Raft's main loop for its configuration.
type knownCheck struct {
	mu      sync.Mutex
	at      time.Time
	version uint64 // of the member table
	common  raftfsm.CommandSet
}

const knownCheckTTL = 500 * time.Millisecond

// awaitKnown waits until every member that applies the log knows command type t, or deadline passes.
func (n *Node) awaitKnown(ctx context.Context, t raftfsm.CommandType, deadline time.Time) error {
	n.known.mu.Lock()
	fresh := time.Since(n.known.at) < knownCheckTTL && n.known.version == n.members.version.Load() && n.known.common.Has(t)
	n.known.mu.Unlock()
	if fresh {
		return nil
	}
	for {
		version := n.members.version.Load()
		common, missing := n.commandsInCommon(t)
		n.known.mu.Lock()
		n.known.at, n.known.version, n.known.common = time.Now(), version, common
		n.known.mu.Unlock()
		if len(missing) == 0 {
			return nil
		}
		if time.Now().Add(100*time.Millisecond).After(deadline) || ctx.Err() != nil {
			n.log.Warn("a write waits for members to upgrade", "command", t, "members", missing)
			return &transport.RemoteError{Code: CodeUnavailable, Message: fmt.Sprintf(
				"this write needs command type %d, which %s do not know yet (they run an older Shoal): "+
					"upgrade them (docs/operations.md, Upgrades), then retry", t, strings.Join(missing, ", "))}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// commandsInCommon returns the command types every member that applies the log knows, and the members that do
// not know t.
func (n *Node) commandsInCommon(t raftfsm.CommandType) (common raftfsm.CommandSet, missing []string) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return common, []string{"(the Raft configuration: " + err.Error() + ")"}
	}
	members := map[string]Member{}
	for _, m := range n.members.snapshot() {
		members[m.Name] = m
	}
	for i := range common {
		common[i] = 0xff
	}
	for _, s := range f.Configuration().Servers {
		m, ok := members[string(s.ID)]
		if s.Suffrage != raft.Voter && (!ok || m.Status != StatusAlive) {
			continue // a non-voter that is not running applies nothing now, and checks the log when it starts
		}
		// A member that advertises nothing (an older Shoal), or that gossip has not heard from yet (a voter
		// being added), is taken to know the baseline.
		knows := raftfsm.SetOf(raftfsm.Baseline)
		if ok && m.commands != nil {
			knows = *m.commands
		}
		if string(s.ID) == n.cfg.Name {
			knows, _ = raftfsm.ParseCommandSet(n.advertisedCommands())
		}
		for i := range common {
			common[i] &= knows[i]
		}
		if !knows.Has(t) {
			missing = append(missing, string(s.ID))
		}
	}
	return common, missing
}
