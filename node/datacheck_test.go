package node

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
			c := NewTestCluster(t, 1, nil)
			if _, err := c.Nodes[0].CreateJoinToken(t.Context(), DefaultJoinTTL); err != nil {
				t.Fatal(err)
			}
			c.Kill(0)
			path := filepath.Join(c.Dir, "n1", raftDir, "raft.db")
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, damage.do(data), 0o600); err != nil {
				t.Fatal(err)
			}
			n, err := Open(TestConfig(t, c.Dir, "n1"))
			if err == nil {
				n.Close()
				t.Fatal("the node started from a corrupt raft.db")
			}
			var ce *CorruptDataError
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
