package node_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/node"
)

// A damaged Raft log stops the node at start with one error that names the file and says how to recover, not
// with a bbolt panic in one of Raft's goroutines.
func TestCorruptRaftLogStopsWithOneMessage(t *testing.T) {
	for _, damage := range []struct {
		name string
		do   func(data []byte) []byte
	}{
		{"pages overwritten", func(data []byte) []byte {
			for i := 2 * 4096; i < len(data); i++ {
				data[i] = byte(i*7 + 3)
			}
			return data
		}},
		{"meta pages overwritten", func(data []byte) []byte {
			for i := 0; i < 2*4096 && i < len(data); i++ {
				data[i] = 0xAB
			}
			return data
		}},
		{"truncated", func(data []byte) []byte { return data[:5000] }},
	} {
		t.Run(damage.name, func(t *testing.T) {
			c := meshtest.New(t, 1, nil)
			if _, err := c.Nodes[0].CreateJoinToken(t.Context(), node.DefaultJoinTTL); err != nil {
				t.Fatal(err)
			}
			c.Kill(0)
			path := filepath.Join(c.Dir, "n1", node.RaftDir, "raft.db")
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, damage.do(data), 0o600); err != nil {
				t.Fatal(err)
			}
			n, err := node.Open(meshtest.Config(t, c.Dir, "n1"))
			if err == nil {
				n.Close()
				t.Fatal("the node started from a corrupt raft.db")
			}
			var ce *node.CorruptDataError
			if !errors.As(err, &ce) || ce.File != path {
				t.Fatalf("error %v (%T), want a CorruptDataError for %s", err, err, path)
			}
			for _, want := range []string{path, "corrupt", "node join", "backup"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("the error does not say %q: %v", want, err)
				}
			}
			t.Logf("%v", err)
		})
	}
}

// A node whose every Raft snapshot is damaged stops with the same kind of message, naming the snapshot directory.
func TestCorruptSnapshotsStopWithOneMessage(t *testing.T) {
	c := meshtest.New(t, 1, nil)
	n := c.Nodes[0]
	if _, err := n.CreateJoinToken(t.Context(), node.DefaultJoinTTL); err != nil {
		t.Fatal(err)
	}
	if err := n.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	c.Kill(0)
	dir := filepath.Join(c.Dir, "n1", node.RaftDir, "snapshots")
	states, err := filepath.Glob(filepath.Join(dir, "*", "state.bin"))
	if err != nil || len(states) == 0 {
		t.Fatalf("no snapshot written: %v", err)
	}
	for _, p := range states {
		if err := os.WriteFile(p, []byte("not a snapshot"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n, err = node.Open(meshtest.Config(t, c.Dir, "n1"))
	if err == nil {
		n.Close()
		t.Fatal("the node started from corrupt snapshots")
	}
	var ce *node.CorruptDataError
	if !errors.As(err, &ce) || ce.File != dir || !strings.Contains(err.Error(), "node join") {
		t.Fatalf("error %v (%T), want a CorruptDataError for %s", err, err, dir)
	}
	t.Log(err)
}
