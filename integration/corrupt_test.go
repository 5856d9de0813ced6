package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A server whose raft.db was damaged (kill -9 on a failing disk, a bad restore) stops at start with one message
// that names the file and says how to bring the server back, not with a bbolt panic and a goroutine dump.
func TestCorruptRaftLogMessage(t *testing.T) {
	needProcesses(t)
	m := newPmesh(t, 1)
	n := m.nodes[0]
	m.init(n)
	m.waitHealthy(n)
	n.proc.Kill()
	path := filepath.Join(n.dir, "raft", "raft.db")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 2 * 4096; i < len(data); i++ {
		data[i] = byte(i*7 + 3)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	m.restart(n)
	code, exited := n.proc.Wait(30 * time.Second)
	if !exited {
		t.Fatal("the node kept running on a corrupt raft.db")
	}
	out := n.proc.Stderr()
	if code == 0 {
		t.Fatalf("exit code 0; stderr:\n%s", out)
	}
	for _, want := range []string{path + " is corrupt", "node join", "backup"} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr does not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "goroutine ") || strings.Contains(out, "panic") {
		t.Fatalf("stderr holds a panic or a goroutine dump:\n%s", out)
	}
	t.Logf("exit %d: %s", code, strings.TrimSpace(out[max(0, strings.LastIndex(strings.TrimSpace(out), "\n")):]))
}
