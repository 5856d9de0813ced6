package node_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

func holds(keys [][]byte, k []byte) bool {
	for _, x := range keys {
		if bytes.Equal(x, k) {
			return true
		}
	}
	return false
}

func currentGossipKey(n *node.Node) []byte {
	var k []byte
	n.FSM().Read(func(s *raftfsm.State) { k = s.Mesh.GossipKey })
	return k
}

// gossipWith tries to join the mesh's gossip at addr with key, as a node holding only that key would.
func gossipWith(t *testing.T, key []byte, addr string) error {
	t.Helper()
	mc := memberlist.DefaultLANConfig()
	mc.Name = fmt.Sprintf("outsider-%d", time.Now().UnixNano())
	mc.BindAddr, mc.BindPort, mc.AdvertisePort = "127.0.0.1", 0, 0
	mc.SecretKey = key
	mc.LogOutput = testWriter{}
	mc.TCPTimeout = time.Second
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	defer ml.Shutdown()
	_, err = ml.Join([]string{addr})
	return err
}

type testWriter struct{}

func (testWriter) Write(p []byte) (int, error) { return len(p), nil }

// A rotation by hand: every member sends with the new key at once, accepts the old one during the overlap only,
// keeps the new one across a restart, and the mesh's gossip keeps working (a node joins after it).
func TestGossipKeyRotation(t *testing.T) {
	c := meshtest.New(t, 3, nil)
	old := currentGossipKey(c.Nodes[0])
	var out map[string]any
	if code := call(t, c.Follower(), c.AdminToken, "POST", "/v1/mesh/gossip-key/rotate", map[string]any{"overlap": "2s"}, &out); code != 200 {
		t.Fatalf("rotate: %d %v", code, out)
	}
	fresh := currentGossipKey(c.Leader())
	if bytes.Equal(fresh, old) {
		t.Fatal("the key did not change")
	}
	c.Eventually(5*time.Second, "every member to send with the new key and still accept the old", func() bool {
		for _, n := range c.Nodes {
			if k := node.RingKeys(n); len(k) == 0 || !bytes.Equal(k[0], fresh) {
				return false
			}
		}
		return true
	})
	c.Eventually(10*time.Second, "every member to drop the old key after the overlap", func() bool {
		for _, n := range c.Nodes {
			if holds(node.RingKeys(n), old) {
				return false
			}
		}
		return true
	})
	if err := gossipWith(t, old, c.Nodes[1].GossipAddr()); err == nil {
		t.Error("gossip accepted the retired key")
	}
	if err := gossipWith(t, fresh, c.Nodes[1].GossipAddr()); err != nil {
		t.Errorf("gossip refused the current key: %v", err)
	}
	for _, n := range c.Nodes {
		b, err := os.ReadFile(filepath.Join(n.DataDir(), node.TLSDir, node.GossipKeyFile))
		if err != nil || !bytes.Equal(b, fresh) {
			t.Errorf("%s stores %x, want the new key (%v)", n.Name(), b, err)
		}
	}
	// A member restarted after the overlap starts with the new key (from its state and its data dir).
	cfg := c.Nodes[1].Config()
	cfg.Registry = nil
	c.Kill(1)
	back, err := node.Open(cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	c.Put(1, back)
	if k := node.RingKeys(back); len(k) != 1 || !bytes.Equal(k[0], fresh) {
		t.Errorf("the restarted member's keyring holds %d keys, want only the new one", len(k))
	}
	n4 := c.Join("n4", nil)
	c.Eventually(20*time.Second, "every member to see the restarted node and the one that joined after the rotation", func() bool {
		for _, n := range c.Nodes {
			seen := 0
			for _, m := range n.Members() {
				if (m.Name == n4.Name() || m.Name == back.Name()) && m.Status == node.StatusAlive {
					seen++
				}
			}
			if seen != 2 {
				return false
			}
		}
		return true
	})
}

// After a departure the leader rotates the gossip key by itself: within about a second, the key the departed node
// holds no longer opens the mesh's gossip.
func TestGossipKeyRotatesAfterDeparture(t *testing.T) {
	c := meshtest.New(t, 4, nil)
	old := currentGossipKey(c.Nodes[0])
	f := c.Follower()
	ctx := t.Context()
	if err := f.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	left := time.Now()
	var rest []*node.Node
	for _, n := range c.Nodes {
		if n != f {
			rest = append(rest, n)
		}
	}
	c.Eventually(10*time.Second, "every member to drop the departed node's gossip key", func() bool {
		for _, n := range rest {
			if holds(node.RingKeys(n), old) {
				return false
			}
		}
		return true
	})
	t.Logf("old gossip key dropped everywhere %v after the departure", time.Since(left).Round(time.Millisecond))
	if err := gossipWith(t, old, rest[0].GossipAddr()); err == nil {
		t.Error("gossip accepted the departed node's key")
	}
	if code := call(t, rest[0], c.AdminToken, "POST", "/v1/tokens", map[string]any{"name": "after", "role": "reader"}, nil); code != 201 {
		t.Fatalf("write after the departure: %d", code)
	}
}

// Retired keys are taken off the ring without shifting keys inside the slice packet readers hold (memberlist's
// RemoveKey does for any key but the last): the reader's slice is unchanged, and the ring ends with the primary
// and the kept keys.
func TestRemoveGossipKeysLeavesReadersSlice(t *testing.T) {
	key := func(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }
	ring, err := memberlist.NewKeyring([][]byte{key(2), key(3), key(4)}, key(1))
	if err != nil {
		t.Fatal(err)
	}
	held := ring.GetKeys()
	before := slices.Clone(held)
	node.RemoveGossipKeys(ring, func(k []byte) bool { return !bytes.Equal(k, key(2)) })
	for i := range held {
		if !bytes.Equal(held[i], before[i]) {
			t.Fatalf("a reader's slice changed at %d", i)
		}
	}
	got := ring.GetKeys()
	if len(got) != 3 || !bytes.Equal(got[0], key(1)) || slices.ContainsFunc(got, func(k []byte) bool { return bytes.Equal(k, key(2)) }) {
		t.Fatalf("ring keys %v", got)
	}
}
