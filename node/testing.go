package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/testutil"
)

// TestConfig returns a config for an in-process test node: loopback, kernel-chosen ports, fast timings, a
// data dir under dir. Logs go to the test log when SHOAL_TEST_LOG is set, and nowhere otherwise.
func TestConfig(t testing.TB, dir, name string) Config {
	var w io.Writer = io.Discard
	if os.Getenv("SHOAL_TEST_LOG") != "" {
		w = os.Stderr
	}
	return Config{
		Name: name, DataDir: filepath.Join(dir, name), BindIP: "127.0.0.1",
		HTTPPort: -1, GossipPort: -1, QUICPort: -1,
		Timing: TestTiming(), LeaderWait: 3 * time.Second, DeadGrace: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo})).With("test", t.Name()),
	}
}

// TestCluster is a mesh of in-process nodes built with the same constructors as the binary.
type TestCluster struct {
	T          testing.TB
	Dir        string
	Nodes      []*Node
	AdminToken string
	JoinToken  string
}

// NewTestCluster starts size nodes: the first runs Init, the others Join through it. It waits until every node
// is in Raft (voters up to 3) and sees the same applied state. Nodes are closed when the test ends.
func NewTestCluster(t testing.TB, size int, tweak func(*Config)) *TestCluster {
	t.Helper()
	c := &TestCluster{T: t, Dir: t.TempDir()}
	cfg := TestConfig(t, c.Dir, "n1")
	if tweak != nil {
		tweak(&cfg)
	}
	n1, res, err := Init(cfg, "test", time.Hour)
	if err != nil {
		t.Fatalf("init: %v", err)
	}
	c.Nodes = append(c.Nodes, n1)
	c.AdminToken, c.JoinToken = res.AdminToken, res.JoinToken
	t.Cleanup(c.Close)
	for i := 2; i <= size; i++ {
		c.Join(fmt.Sprintf("n%d", i), tweak)
	}
	c.WaitRaftMembers(size)
	c.WaitReady()
	return c
}

// WaitReady waits until every node has the mesh's state (Ready).
func (c *TestCluster) WaitReady() {
	c.T.Helper()
	c.Eventually(20*time.Second, "every node to have the mesh's state", func() bool {
		for _, n := range c.Nodes {
			if n != nil && !n.Ready() {
				return false
			}
		}
		return true
	})
}

// Join adds a node named name through the first live node.
func (c *TestCluster) Join(name string, tweak func(*Config)) *Node {
	c.T.Helper()
	cfg := TestConfig(c.T, c.Dir, name)
	if tweak != nil {
		tweak(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var via *Node
	for _, n := range c.Nodes {
		if n != nil {
			via = n
			break
		}
	}
	n, err := Join(ctx, cfg, via.RaftAddr(), c.JoinToken)
	if err != nil {
		c.T.Fatalf("join %s: %v", name, err)
	}
	c.Nodes = append(c.Nodes, n)
	return n
}

// Leader returns the node that leads now, waiting for one.
func (c *TestCluster) Leader() *Node {
	c.T.Helper()
	var leader *Node
	c.Eventually(10*time.Second, "a leader", func() bool {
		for _, n := range c.Nodes {
			if n != nil && n.IsLeader() {
				leader = n
				return true
			}
		}
		return false
	})
	return leader
}

// WaitRaftMembers waits until the leader's Raft configuration has want servers.
func (c *TestCluster) WaitRaftMembers(want int) {
	c.T.Helper()
	c.Eventually(20*time.Second, fmt.Sprintf("%d raft servers", want), func() bool {
		l := c.Leader()
		f := l.raft.GetConfiguration()
		return f.Error() == nil && len(f.Configuration().Servers) == want
	})
}

// RaftServers returns the leader's Raft configuration as name → "voter"/"nonvoter".
func (c *TestCluster) RaftServers() map[string]string {
	out := map[string]string{}
	f := c.Leader().raft.GetConfiguration()
	if f.Error() != nil {
		return out
	}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == 0 {
			out[string(s.ID)] = "voter"
		} else {
			out[string(s.ID)] = "nonvoter"
		}
	}
	return out
}

// Kill stops node i abruptly (no leave) and forgets it.
func (c *TestCluster) Kill(i int) {
	c.Nodes[i].Close()
	c.Nodes[i] = nil
}

// Close stops every node.
func (c *TestCluster) Close() {
	for _, n := range c.Nodes {
		if n != nil {
			n.Close()
		}
	}
}

// Eventually polls cond until it holds or the timeout passes.
func (c *TestCluster) Eventually(timeout time.Duration, what string, cond func() bool) {
	c.T.Helper()
	testutil.Until(c.T, timeout, what, cond)
}
