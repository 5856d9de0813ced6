package node

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestHeartbeatGate(t *testing.T) {
	g := newHeartbeatGate(time.Hour)
	hb := &raft.AppendEntriesRequest{Term: 3}
	real := &raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 10, PrevLogTerm: 3, LeaderCommitIndex: 10}
	if !isHeartbeat(hb) || isHeartbeat(real) {
		t.Fatal("isHeartbeat does not tell raft's heartbeat from a replication request")
	}
	var resp raft.AppendEntriesResponse
	if g.spare("a", hb, &resp) {
		t.Fatal("spared a heartbeat to a peer that never answered")
	}
	g.answered("a", time.Now(), real, &raft.AppendEntriesResponse{Term: 3, LastLog: 10, Success: false})
	if !g.spare("a", hb, &resp) || !resp.Success || resp.Term != 3 || resp.LastLog != 10 {
		t.Fatalf("not spared after a recent answer, or answered %+v", resp)
	}
	if g.spare("b", hb, &resp) {
		t.Fatal("spared a heartbeat to another peer")
	}
	if g.spare("a", &raft.AppendEntriesRequest{Term: 4}, &resp) {
		t.Fatal("spared a heartbeat of a newer term on an answer of an older one")
	}
	// A peer that answered with a newer term is never spared: the leader must hear it.
	g.answered("c", time.Now(), real, &raft.AppendEntriesResponse{Term: 5})
	if g.spare("c", hb, &resp) {
		t.Fatal("spared a heartbeat to a peer that knows a newer term")
	}
	// While a leadership check runs, every heartbeat goes out.
	spared := true
	_ = g.verify(func() error { spared = g.spare("a", hb, &resp); return nil })
	if spared {
		t.Fatal("spared a heartbeat during VerifyLeader")
	}
	// An older answer arriving late does not make the record younger.
	old := time.Now().Add(-2 * time.Hour)
	g.answered("a", old, real, &raft.AppendEntriesResponse{Term: 3})
	if !g.spare("a", hb, &resp) {
		t.Fatal("a late old answer replaced a recent one")
	}
	// Past the window, the heartbeat goes out.
	g2 := newHeartbeatGate(50 * time.Millisecond)
	g2.answered("a", time.Now().Add(-time.Second), real, &raft.AppendEntriesResponse{Term: 3})
	if g2.spare("a", hb, &resp) {
		t.Fatal("spared a heartbeat to a peer whose last answer is older than the window")
	}
	if g.spared.Load() != 2 {
		t.Fatalf("spared counter %d, want 2", g.spared.Load())
	}
}

// TestVotersAckedSince: a read confirms leadership only with a majority of the voters answering after it began;
// non-voters' answers, which hashicorp/raft's VerifyLeader counts, do not make one.
func TestVotersAckedSince(t *testing.T) {
	g := newHeartbeatGate(time.Second)
	servers := []raft.Server{
		{ID: "leader", Suffrage: raft.Voter}, {ID: "v2", Suffrage: raft.Voter}, {ID: "v3", Suffrage: raft.Voter},
		{ID: "n1", Suffrage: raft.Nonvoter}, {ID: "n2", Suffrage: raft.Nonvoter},
	}
	hb := &raft.AppendEntriesRequest{Term: 7}
	before := time.Now().Add(-time.Second)
	start := time.Now()
	g.answered("v2", before, hb, &raft.AppendEntriesResponse{Term: 7, Success: true})
	g.answered("n1", start, hb, &raft.AppendEntriesResponse{Term: 7, Success: true})
	g.answered("n2", start, hb, &raft.AppendEntriesResponse{Term: 7, Success: true})
	if g.votersAckedSince(servers, "leader", start) {
		t.Fatal("confirmed with non-voters and a voter's answer from before the read")
	}
	g.answered("v3", start, hb, &raft.AppendEntriesResponse{Term: 8})
	if g.votersAckedSince(servers, "leader", start) {
		t.Fatal("confirmed with a voter that answered with a newer term")
	}
	g.answered("v3", start.Add(time.Millisecond), hb, &raft.AppendEntriesResponse{Term: 7})
	if !g.votersAckedSince(servers, "leader", start) {
		t.Fatal("not confirmed with the leader and one of two other voters answering after the read began")
	}
	// A single-voter mesh confirms with itself.
	if !g.votersAckedSince([]raft.Server{{ID: "leader", Suffrage: raft.Voter}}, "leader", time.Now()) {
		t.Fatal("a lone voter could not confirm its own leadership")
	}
}
