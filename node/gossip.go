package node

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"github.com/shoal-ci/shoal/raftfsm"
)

// Member statuses, as gossip sees them.
const (
	StatusAlive   = "alive"
	StatusSuspect = "suspect"
	StatusDead    = "dead"
	StatusLeft    = "left"
)

// gossipMeta is what each node tells the others about itself through gossip (kept under 300 bytes for typical tags).
type gossipMeta struct {
	QUIC string            `json:"q"`
	HTTP string            `json:"h"`
	Tags map[string]string `json:"t,omitempty"`
	// Cmds is the command types the node knows (raftfsm.CommandSet's text form; node/commands.go).
	Cmds string `json:"c,omitempty"`
}

// Member is one node as this node knows it: from gossip, joined with its Raft role.
type Member struct {
	Name   string            `json:"name"`
	Status string            `json:"status"`
	Addr   string            `json:"addr"`
	HTTP   string            `json:"http"`
	Gossip string            `json:"gossip"`
	Tags   map[string]string `json:"tags,omitempty"`
	Role   string            `json:"role"`
	Leader bool              `json:"leader"`
	Since  time.Time         `json:"since"`
	// commands is what the member advertises it knows (nil: nothing advertised, an older Shoal).
	commands *raftfsm.CommandSet
}

// memberTable is fed by memberlist's event callbacks. The callbacks only record and signal; everything that
// acts on membership runs in the node's own goroutines (calling memberlist from its callbacks deadlocks).
type memberTable struct {
	mu      sync.Mutex
	members map[string]*Member
	sorted  []Member // the members sorted by name, built at the first snapshot after a change (nil: stale)
	changed chan struct{}
	// seen wakes the rejoin loop when a member is seen alive, so that it saves the peers at once: a first node
	// killed a second after the others joined must find them when it starts again.
	seen chan struct{}
	// version counts the changes (commands.go caches what the members know until it moves).
	version atomic.Uint64
}

func newMemberTable() *memberTable {
	return &memberTable{members: map[string]*Member{}, changed: make(chan struct{}, 1), seen: make(chan struct{}, 1)}
}

func (t *memberTable) set(n *memberlist.Node, status string) {
	var meta gossipMeta
	_ = json.Unmarshal(n.Meta, &meta)
	t.mu.Lock()
	m := t.members[n.Name]
	if m == nil || m.Status != status {
		m = &Member{Name: n.Name, Since: time.Now()}
		t.members[n.Name] = m
	}
	m.Status = status
	m.Addr, m.HTTP, m.Tags = meta.QUIC, meta.HTTP, meta.Tags
	m.commands = nil
	if cs, err := raftfsm.ParseCommandSet(meta.Cmds); err == nil {
		m.commands = &cs
	}
	m.Gossip = net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	t.version.Add(1)
	t.sorted = nil
	t.mu.Unlock()
	t.signal()
	if status == StatusAlive {
		select {
		case t.seen <- struct{}{}:
		default:
		}
	}
}

// snapshot returns copies of all members, sorted by name.
func (t *memberTable) snapshot() []Member {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sorted == nil {
		// Every service asks for the member list, several times a second on each node: sorting it once per
		// change instead of once per call keeps that a copy.
		t.sorted = make([]Member, 0, len(t.members))
		for _, m := range t.members {
			t.sorted = append(t.sorted, *m)
		}
		sort.Slice(t.sorted, func(i, j int) bool { return t.sorted[i].Name < t.sorted[j].Name })
	}
	return slices.Clone(t.sorted)
}

// status returns the gossip status of the member named name, "" for one this node does not know.
func (t *memberTable) status(name string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if m := t.members[name]; m != nil {
		return m.Status
	}
	return ""
}

// prune forgets members that have been dead or gone for longer than keep and that keep is not true for.
func (t *memberTable) prune(older time.Duration, keep func(name string) bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for name, m := range t.members {
		if m.Status != StatusAlive && time.Since(m.Since) > older && !keep(name) {
			delete(t.members, name)
			t.sorted = nil
			t.version.Add(1)
		}
	}
}

// forgetAfter is how long a member that died or left stays listed once Raft no longer has it.
const forgetAfter = time.Hour

type gossipEvents struct{ t *memberTable }

func (e gossipEvents) NotifyJoin(n *memberlist.Node)   { e.t.set(n, StatusAlive) }
func (e gossipEvents) NotifyUpdate(n *memberlist.Node) { e.t.set(n, StatusAlive) }

// NotifyLeave cannot tell a leave from a death (memberlist never updates the Node.State it passes); departures
// are recorded in Raft instead (raftfsm.MemberLeave), and Members shows those as left.
func (e gossipEvents) NotifyLeave(n *memberlist.Node) { e.t.set(n, StatusDead) }

// signal wakes whoever waits on membership changes (the leader's reconciliation).
func (t *memberTable) signal() {
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

type gossipDelegate struct{ meta []byte }

func (d gossipDelegate) NodeMeta(limit int) []byte {
	if len(d.meta) > limit {
		return nil
	}
	return d.meta
}
func (gossipDelegate) NotifyMsg([]byte)                {}
func (gossipDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (gossipDelegate) LocalState(bool) []byte          { return nil }
func (gossipDelegate) MergeRemoteState([]byte, bool)   {}

func (n *Node) startGossip() error {
	keys, err := n.initialGossipKeys()
	if err != nil {
		return err
	}
	ring, err := memberlist.NewKeyring(keys, keys[0])
	if err != nil {
		return fmt.Errorf("gossip keyring: %w", err)
	}
	meta, err := json.Marshal(gossipMeta{QUIC: n.raftAddr, HTTP: n.advertisedHTTP(), Tags: n.cfg.Tags, Cmds: n.advertisedCommands()})
	if err != nil {
		return err
	}
	if len(meta) > memberlist.MetaMaxSize {
		return fmt.Errorf("tags are too large for gossip (%d bytes, at most %d): use fewer or shorter tags", len(meta), memberlist.MetaMaxSize)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = n.cfg.Name
	mc.BindAddr = n.cfg.BindIP
	mc.BindPort = port(n.cfg.GossipPort)
	mc.AdvertiseAddr = n.cfg.AdvertiseIP
	mc.AdvertisePort = mc.BindPort
	mc.Keyring = ring // rotated in place by installGossipKeys
	mc.Delegate = gossipDelegate{meta: meta}
	mc.Events = gossipEvents{t: n.members}
	mc.Logger = memberlistLogger(n.log)
	mc.ProbeInterval = n.cfg.Timing.GossipProbeInterval
	mc.PushPullInterval = n.cfg.Timing.GossipPushPull
	if t := n.cfg.Timing.GossipProbeTimeout; t > 0 {
		mc.ProbeTimeout = t
	}
	if m := n.cfg.Timing.GossipSuspicionMult; m > 0 {
		mc.SuspicionMult = m
	}
	if n.cfg.Timing.GossipNoCompression {
		mc.EnableCompression = false
	}
	mc.DeadNodeReclaimTime = 10 * time.Second
	n.gossip, err = memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("start gossip on %s: %w", hostPort(n.cfg.BindIP, n.cfg.GossipPort), err)
	}
	n.gossipKeys.mu.Lock()
	n.gossipKeys.ring = ring
	n.gossipKeys.mu.Unlock()
	n.installGossipKeys() // a rotation applied between reading the keys and now, and the retired keys' timer
	return nil
}

func (n *Node) advertisedHTTP() string {
	return net.JoinHostPort(n.cfg.AdvertiseIP, strconv.Itoa(n.httpLn.Addr().(*net.TCPAddr).Port))
}

// JoinGossip joins the gossip of the given peers (gossip addresses); it succeeds if any one answers.
func (n *Node) JoinGossip(peers []string) error {
	if len(peers) == 0 {
		return nil
	}
	if _, err := n.gossip.Join(peers); err != nil {
		return fmt.Errorf("join gossip through %v: %w", peers, err)
	}
	return nil
}

// rejoinLoop keeps this node in the mesh after restarts and partitions: it joins the peers it last saw alive
// until one answers, then every half minute retries any known peer that is not alive, and remembers who is.
// How often the rejoin loop saves the peers it sees alive, and how often it tries to rejoin missing ones.
const (
	peersSaveInterval = 2 * time.Second
	rejoinInterval    = 30 * time.Second
	rejoinPeers       = 3 // the most missing peers one rejoin round contacts
)

func (n *Node) rejoinLoop() {
	defer n.wg.Done()
	peers := loadPeers(n.cfg.DataDir)
	backoff := 200 * time.Millisecond
	var lastRejoin time.Time
	tick := time.NewTimer(0)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		case <-n.members.seen:
		}
		alive := map[string]bool{}
		var known []string
		for _, m := range n.members.snapshot() {
			if m.Status != StatusAlive {
				continue
			}
			alive[m.Gossip] = true
			if m.Name != n.cfg.Name {
				known = append(known, m.Gossip)
			}
		}
		var missing []string
		for _, p := range peers {
			if !alive[p] {
				missing = append(missing, p)
			}
		}
		// The peers seen alive are saved when one is seen (and every few seconds), so a node restarted soon after others joined it (the
		// first node of a new mesh) still knows where they are; a rejoin of missing peers is tried every 30 s.
		next := peersSaveInterval
		if len(missing) > 0 && (len(known) == 0 || time.Since(lastRejoin) >= rejoinInterval) {
			lastRejoin = time.Now()
			// A join is a push-pull of the whole member list with each address given, and any one that answers
			// merges this node's view with that peer's: a few addresses, taken in turn, reach every partition in
			// a few rounds. Joining all of them cost O(N) push-pulls per round on every node that missed many
			// (on a starved 200-node mesh, nodes wrongly marked dead made that most nodes).
			// A node that sees no one (restarted) still tries every peer it saved.
			if len(known) > 0 && len(missing) > rejoinPeers {
				rot := int(lastRejoin.UnixNano()/int64(time.Millisecond)) % len(missing)
				missing = append(missing[rot:], missing[:rot]...)[:rejoinPeers]
			}
			if err := n.JoinGossip(missing); err != nil && len(known) == 0 {
				n.log.Debug("rejoin", "err", err)
				next, backoff = backoff, min(backoff*2, 10*time.Second)
			}
		}
		if len(known) > 0 {
			merged := append(slices.Clone(known), peers...)
			slices.Sort(merged)
			merged = slices.Compact(merged)
			if !slices.Equal(merged, peers) {
				peers = merged
				if err := savePeers(n.cfg.DataDir, peers); err != nil {
					n.log.Warn("save peers", "err", err)
				}
			}
		}
		// Connections whose peer certificate expired since (blob streams are not checked one by one) close here.
		n.ep.Revalidate()
		// Members gone from Raft for good drop off the list after a while (a dead one still in Raft stays).
		inRaft := n.raftServers()
		n.members.prune(forgetAfter, func(name string) bool { return inRaft[name] })
		tick.Reset(next)
	}
}

// Members returns every member this node knows, with its gossip status and Raft role. (memberlist's own
// Members hands out pointers into state it changes under its lock, so everything here comes from the table the
// event callbacks fill; memberlist reports no event for "suspect", so a member is alive until it is dead.)
func (n *Node) Members() []Member {
	roles := map[string]string{}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				roles[string(s.ID)] = "voter"
			} else {
				roles[string(s.ID)] = "nonvoter"
			}
		}
	}
	leader, _ := n.Leader()
	departed := n.departed()
	out := n.members.snapshot()
	for i := range out {
		m := &out[i]
		if departed[m.Name] {
			m.Status = StatusLeft
		}
		m.Role = roles[m.Name]
		if m.Role == "" {
			m.Role = "none"
		}
		m.Leader = m.Name == leader
	}
	return out
}

// departed returns the servers recorded in Raft as having left for good.
// MemberStatus returns what Members would say of one member's status (StatusLeft for one that left the mesh for
// good), or "" for a name this node does not know, at the cost of two lookups instead of the whole list.
func (n *Node) MemberStatus(name string) string {
	st := n.members.status(name)
	if st == "" {
		return ""
	}
	left := false
	n.fsm.Read(func(s *raftfsm.State) { _, left = s.Departed[name] })
	if left {
		return StatusLeft
	}
	return st
}

func (n *Node) departed() map[string]bool {
	out := map[string]bool{}
	n.fsm.Read(func(s *raftfsm.State) {
		for name := range s.Departed {
			out[name] = true
		}
	})
	return out
}

// raftServers returns the names in the Raft configuration this node knows.
// RaftServers returns the Raft configuration this node knows, as name → "voter" or "nonvoter".
func (n *Node) RaftServers() map[string]string {
	out := map[string]string{}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				out[string(s.ID)] = "voter"
			} else {
				out[string(s.ID)] = "nonvoter"
			}
		}
	}
	return out
}

func (n *Node) raftServers() map[string]bool {
	out := map[string]bool{}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			out[string(s.ID)] = true
		}
	}
	return out
}
