package raftfsm

import (
	"bytes"
	"time"
)

// GossipKeyRotate makes Key the gossip key every node sends with. The previous key stays accepted for Overlap
// after At, so members that apply the rotation a moment later are still understood; then it is dropped and a
// node that only knows it (one that left or was removed) can neither read nor inject gossip. The leader writes
// it on `node gossip-key rotate` and after every departure.
type GossipKeyRotate struct {
	Key     []byte    `json:"Key"`
	At      time.Time `json:"At"`
	Overlap Duration  `json:"Overlap"`
	// Covers is the latest departure this rotation answers (the leader's rotation after a departure): the key
	// counts as newer than it even if the departed node's clock ran ahead of the leader's.
	Covers time.Time `json:",omitzero"`
}

func (*GossipKeyRotate) Type() CommandType { return CmdGossipKeyRotate }

func applyGossipKeyRotate(s *State, c *GossipKeyRotate) *Error {
	if s.Mesh == nil {
		return badRequest("the mesh is not initialised")
	}
	if n := len(c.Key); n != 16 && n != 24 && n != 32 {
		return badRequest("a gossip key is 16, 24 or 32 bytes, not %d", n)
	}
	if c.At.IsZero() || c.Overlap < 0 {
		return badRequest("a gossip key rotation needs a time and a non-negative overlap")
	}
	if bytes.Equal(c.Key, s.Mesh.GossipKey) {
		return conflict("that gossip key is already in use")
	}
	m := *s.Mesh
	var kept []RetiredKey
	for _, r := range m.RetiredGossipKeys {
		if r.Until.After(c.At) && !bytes.Equal(r.Key, c.Key) {
			kept = append(kept, r)
		}
	}
	m.RetiredGossipKeys = append(kept, RetiredKey{Key: m.GossipKey, Until: c.At.Add(time.Duration(c.Overlap))})
	m.GossipKey = c.Key
	m.GossipSendAt = c.At.Add(time.Duration(c.Overlap) / 2)
	m.GossipKeySince = c.At
	if c.Covers.After(c.At) {
		m.GossipKeySince = c.Covers
	}
	s.Mesh = &m
	return nil
}

// GossipKeys are the keys a node should accept at now, the one to send with first: the current key (or, during
// the first half of a rotation's overlap, the previous one), then the others whose overlap has not ended.
func (m *Mesh) GossipKeys(now time.Time) [][]byte {
	keys := [][]byte{m.GossipKey}
	for _, r := range m.RetiredGossipKeys {
		if r.Until.After(now) {
			keys = append(keys, r.Key)
		}
	}
	if n := len(m.RetiredGossipKeys); n > 0 && now.Before(m.GossipSendAt) {
		prev := m.RetiredGossipKeys[n-1].Key // the key this rotation replaced
		for i, k := range keys {
			if bytes.Equal(k, prev) {
				keys[0], keys[i] = keys[i], keys[0]
				break
			}
		}
	}
	return keys
}

// GossipKeysChangeAt is the next moment GossipKeys(now) changes after now (zero: not before another rotation).
func (m *Mesh) GossipKeysChangeAt(now time.Time) time.Time {
	var next time.Time
	consider := func(t time.Time) {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	consider(m.GossipSendAt)
	for _, r := range m.RetiredGossipKeys {
		consider(r.Until)
	}
	return next
}
