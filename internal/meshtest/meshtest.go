// Package meshtest starts in-process meshes for tests: nodes built with the same constructors as the binary,
// each with its HTTP API server, on loopback with kernel-chosen ports and tightened timings.
package meshtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/node"
)

// Config returns a config for an in-process test node: loopback, kernel-chosen ports, fast timings, a
// data dir under dir. Logs go to the test log when SHOAL_TEST_LOG is set, and nowhere otherwise.
func Config(t testing.TB, dir, name string) node.Config {
	var w io.Writer = io.Discard
	if os.Getenv("SHOAL_TEST_LOG") != "" {
		w = os.Stderr
	}
	return node.Config{
		Name: name, DataDir: filepath.Join(dir, name), BindIP: "127.0.0.1",
		HTTPPort: -1, GossipPort: -1, QUICPort: -1,
		Timing: node.TestTiming(), LeaderWait: 3 * time.Second, DeadGrace: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo})).With("test", t.Name()),
	}
}

// Cluster is a mesh of in-process nodes built with the same constructors as the binary. APIs[i] serves the
// HTTP API of Nodes[i]; both are nil for a node the test killed.
type Cluster struct {
	T          testing.TB
	Dir        string
	Nodes      []*node.Node
	APIs       []*api.Server
	AdminToken string
	JoinToken  string

	apiCfg api.Config
}

// Option adjusts a Cluster.
type Option func(*Cluster)

// WithAPI gives every node's API server these settings.
func WithAPI(cfg api.Config) Option { return func(c *Cluster) { c.apiCfg = cfg } }

// New starts size nodes: the first runs Init, the others Join through it. It waits until every node is in Raft
// (voters up to 3) and sees the same applied state. Nodes and their API servers are closed when the test ends.
func New(t testing.TB, size int, tweak func(*node.Config), opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{T: t, Dir: t.TempDir()}
	for _, o := range opts {
		o(c)
	}
	cfg := Config(t, c.Dir, "n1")
	if tweak != nil {
		tweak(&cfg)
	}
	n1, res, err := node.Init(cfg, "test", time.Hour)
	if err != nil {
		t.Fatalf("init: %v", err)
	}
	c.add(n1)
	c.AdminToken, c.JoinToken = res.AdminToken, res.JoinToken
	t.Cleanup(c.Close)
	for i := 2; i <= size; i++ {
		c.Join(fmt.Sprintf("n%d", i), tweak)
	}
	c.WaitRaftMembers(size)
	c.WaitReady()
	return c
}

// Serve starts the HTTP API of n, a node the test opened itself, with the cluster's API settings; the server
// is closed when the test ends, before n if n is closed in a cleanup registered earlier.
func Serve(t testing.TB, n *node.Node, cfg api.Config) *api.Server {
	t.Helper()
	srv, err := api.New(n, cfg)
	if err != nil {
		t.Fatalf("serve the API of %s: %v", n.Name(), err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// Add makes n, a node the test opened itself, a member of the cluster: it serves its API and closes both when
// the cluster closes. It returns n's index.
func (c *Cluster) Add(n *node.Node) int {
	c.T.Helper()
	c.add(n)
	return len(c.Nodes) - 1
}

func (c *Cluster) add(n *node.Node) {
	c.T.Helper()
	srv, err := api.New(n, c.apiCfg)
	if err != nil {
		n.Close()
		c.T.Fatalf("serve the API of %s: %v", n.Name(), err)
	}
	c.Nodes = append(c.Nodes, n)
	c.APIs = append(c.APIs, srv)
}

// Put makes n, a node the test opened itself, the cluster's node i (a restart of node i after Kill(i)), and
// serves its API.
func (c *Cluster) Put(i int, n *node.Node) {
	c.T.Helper()
	srv, err := api.New(n, c.apiCfg)
	if err != nil {
		n.Close()
		c.T.Fatalf("serve the API of %s: %v", n.Name(), err)
	}
	c.Nodes[i], c.APIs[i] = n, srv
}

// API returns the API server of n, a node of the cluster (nil if n is not one).
func (c *Cluster) API(n *node.Node) *api.Server {
	for i, m := range c.Nodes {
		if m == n && m != nil {
			return c.APIs[i]
		}
	}
	return nil
}

// WaitReady waits until every node has the mesh's state (Ready).
func (c *Cluster) WaitReady() {
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

// Join adds a node named name through the first live node, and serves its API.
func (c *Cluster) Join(name string, tweak func(*node.Config)) *node.Node {
	c.T.Helper()
	cfg := Config(c.T, c.Dir, name)
	if tweak != nil {
		tweak(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var via *node.Node
	for _, n := range c.Nodes {
		if n != nil {
			via = n
			break
		}
	}
	n, err := node.Join(ctx, cfg, via.RaftAddr(), c.JoinToken)
	if err != nil {
		c.T.Fatalf("join %s: %v", name, err)
	}
	c.add(n)
	return n
}

// Leader returns the node that leads now, waiting for one.
func (c *Cluster) Leader() *node.Node {
	c.T.Helper()
	var leader *node.Node
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

// Follower returns a live node that does not lead.
func (c *Cluster) Follower() *node.Node {
	c.T.Helper()
	leader := c.Leader()
	for _, n := range c.Nodes {
		if n != nil && n != leader {
			return n
		}
	}
	c.T.Fatal("no follower")
	return nil
}

// WaitRaftMembers waits until the leader's Raft configuration has want servers.
func (c *Cluster) WaitRaftMembers(want int) {
	c.T.Helper()
	c.Eventually(20*time.Second, fmt.Sprintf("%d raft servers", want), func() bool {
		return len(c.Leader().RaftServers()) == want
	})
}

// RaftServers returns the leader's Raft configuration as name → "voter"/"nonvoter".
func (c *Cluster) RaftServers() map[string]string {
	return c.Leader().RaftServers()
}

// Kill stops node i abruptly (no leave), its API first, and forgets both.
func (c *Cluster) Kill(i int) {
	if c.APIs[i] != nil {
		c.APIs[i].Close()
	}
	c.Nodes[i].Close()
	c.Nodes[i], c.APIs[i] = nil, nil
}

// Close stops every node, each after its API server.
func (c *Cluster) Close() {
	for i, n := range c.Nodes {
		if c.APIs[i] != nil {
			c.APIs[i].Close()
		}
		if n != nil {
			n.Close()
		}
	}
}

// Eventually polls cond until it holds or the timeout passes.
func (c *Cluster) Eventually(timeout time.Duration, what string, cond func() bool) {
	c.T.Helper()
	testutil.Until(c.T, timeout, what, cond)
}
