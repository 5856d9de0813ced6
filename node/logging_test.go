package node

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// What every join and a new mesh's first election make raft say is logged at info, not as a warning; a real
// warning keeps its level.
func TestRoutineRaftWarningsAreInfo(t *testing.T) {
	var out bytes.Buffer
	l := hclogFor(slog.New(slog.NewTextHandler(&out, nil)), "raft")
	l.Warn("failed to get previous log", "previous-index", 7, "last-index", 0, "error", "log not found")
	l.Warn("appendEntries rejected, sending older logs", "peer", "{Voter m2 127.0.0.52:7422}", "next", 1)
	// As raft logs it: its address and id types print empty values bare.
	l.Warn("heartbeat timeout reached, starting election", "last-leader-addr", raft.ServerAddress(""), "last-leader-id", raft.ServerID(""))
	l.Warn("heartbeat timeout reached, starting election", "last-leader-addr", raft.ServerAddress("127.0.0.1:7422"), "last-leader-id", raft.ServerID("n1"))
	l.Error("failed to contact quorum of nodes, stepping down")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("want 5 records, got %d:\n%s", len(lines), out.String())
	}
	for i, want := range []string{"level=INFO", "level=INFO", "level=INFO", "level=WARN", "level=ERROR"} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("record %d: want %s in %s", i, want, lines[i])
		}
	}
}
