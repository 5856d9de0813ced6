package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/shoal-ci/shoal/raftfsm"
)

// Overlaps of a gossip key rotation: how long the previous key stays accepted. After a departure the key must stop
// opening gossip to the departed node quickly; a rotation by hand has no such hurry and gives slow members time.
const (
	departureKeyOverlap = 500 * time.Millisecond
	DefaultKeyOverlap   = time.Minute
)

// gossipKeys keeps memberlist's keyring equal to the keys the replicated state accepts now: the current key to
// send with, and retired ones until their overlap ends.
type gossipKeys struct {
	mu    sync.Mutex
	ring  *memberlist.Keyring
	timer *time.Timer
}

// initialGossipKeys are the keys gossip starts with: the state's, when this node has it (a restart), else the
// key the join handed over.
func (n *Node) initialGossipKeys() ([][]byte, error) {
	var keys [][]byte
	n.fsm.Read(func(s *raftfsm.State) {
		if s.Mesh != nil {
			keys = s.Mesh.GossipKeys(time.Now())
		}
	})
	key, err := os.ReadFile(filepath.Join(n.cfg.DataDir, tlsDir, gossipKeyFile))
	if err != nil {
		if len(keys) > 0 {
			return keys, nil
		}
		return nil, fmt.Errorf("read gossip key: %w", err)
	}
	// The stored key is the newest this node saw; the state may be an older snapshot until the node catches up.
	if !slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Equal(k, key) }) {
		keys = append([][]byte{key}, keys...)
	}
	return keys, nil
}

// syncKeys brings the gossip keyring and the trusted CAs to the state once the node has caught up after a start
// (until then the state may be older than the keys and CAs it stored before it stopped).
func (n *Node) syncKeys() bool {
	if !n.Ready() {
		return false
	}
	n.installGossipKeys()
	n.refreshTrust()
	return true
}

// installGossipKeys brings the keyring to the state's keys: it adds new ones, sends with the current one, drops
// those whose overlap has ended, stores the current one in the data dir, and comes back when the next retired key
// expires. It runs when a rotation or a snapshot is applied, and on that timer.
func (n *Node) installGossipKeys() {
	g := &n.gossipKeys
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ring == nil || !n.Ready() {
		return // not started, or replaying a state older than the key it last stored (syncKeys catches up)
	}
	now := time.Now()
	var (
		keys [][]byte
		next time.Time
	)
	n.fsm.Read(func(s *raftfsm.State) {
		if s.Mesh == nil {
			return
		}
		keys = s.Mesh.GossipKeys(now)
		next = s.Mesh.GossipKeysChangeAt(now)
	})
	if len(keys) == 0 {
		return
	}
	for _, k := range keys {
		if err := g.ring.AddKey(k); err != nil {
			n.log.Error("gossip key refused by the keyring", "component", "gossip", "err", err)
			return
		}
	}
	if !bytes.Equal(g.ring.GetPrimaryKey(), keys[0]) {
		_ = g.ring.UseKey(keys[0])
		n.log.Info("gossip now sends with the rotated key", "component", "gossip")
		if err := writeAtomic(filepath.Join(n.cfg.DataDir, tlsDir, gossipKeyFile), keys[0], 0o600); err != nil {
			n.log.Warn("store the rotated gossip key", "component", "gossip", "err", err)
		}
	}
	removeGossipKeys(g.ring, func(k []byte) bool {
		keep := slices.ContainsFunc(keys, func(x []byte) bool { return bytes.Equal(x, k) })
		if !keep {
			n.log.Info("gossip no longer accepts a retired key", "component", "gossip")
		}
		return keep
	})
	if g.timer != nil {
		g.timer.Stop()
		g.timer = nil
	}
	if !next.IsZero() {
		g.timer = time.AfterFunc(time.Until(next)+10*time.Millisecond, n.installGossipKeys)
	}
}

func (n *Node) stopGossipKeys() {
	g := &n.gossipKeys
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.timer != nil {
		g.timer.Stop()
	}
	g.ring = nil
}

// RotateGossipKey makes a new random gossip key current; the previous one stays accepted for overlap.
func (n *Node) RotateGossipKey(ctx context.Context, overlap time.Duration) (*Applied, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	return n.Apply(ctx, &raftfsm.GossipKeyRotate{Key: key, At: time.Now().UTC(), Overlap: raftfsm.Duration(overlap)})
}

// rotateAfterDeparture is the leader's level-triggered rule: a departure newer than the gossip key means the
// departed node still holds the key, so the key is rotated (with a short overlap).
func (n *Node) rotateAfterDeparture(log interface{ Warn(string, ...any) }) {
	var last, since time.Time
	n.fsm.Read(func(s *raftfsm.State) {
		if s.Mesh == nil {
			return
		}
		since = s.Mesh.CreatedAt
		if s.Mesh.GossipKeySince.After(since) {
			since = s.Mesh.GossipKeySince
		}
		for _, at := range s.Departed {
			if at.After(last) {
				last = at
			}
		}
	})
	if last.IsZero() || !last.After(since) {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
	defer cancel()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return
	}
	// Covers marks the departure answered even if the departed node's clock ran ahead of this one; the overlap
	// runs on this clock.
	rot := &raftfsm.GossipKeyRotate{Key: key, At: time.Now().UTC(), Overlap: raftfsm.Duration(departureKeyOverlap), Covers: last}
	if _, err := n.Apply(ctx, rot); err != nil {
		log.Warn("could not rotate the gossip key after a departure; retrying", "err", err)
	}
}

// removeGossipKeys drops from ring the keys keep refuses. memberlist's RemoveKey shifts the keys after the one it
// removes inside the slice that GetKeys hands to the packet readers (a data race, and a reader may try a wrong
// key): only the last key of the ring is removed in place, which writes nothing, so keys are taken off from the end
// and the ones kept are added back (AddKey appends past what a reader's slice holds). The primary key is never
// removed.
func removeGossipKeys(ring *memberlist.Keyring, keep func([]byte) bool) {
	keys := slices.Clone(ring.GetKeys())
	if len(keys) < 2 {
		return
	}
	var kept [][]byte
	for _, k := range keys[1:] {
		if keep(k) {
			kept = append(kept, k)
		}
	}
	if len(kept) == len(keys)-1 {
		return
	}
	for i := len(keys) - 1; i >= 1; i-- {
		_ = ring.RemoveKey(keys[i])
	}
	for _, k := range kept {
		_ = ring.AddKey(k)
	}
}
