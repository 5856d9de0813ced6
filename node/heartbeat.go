package node

import (
	"bytes"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// quietTransport is raft's NetworkTransport without the heartbeats that say nothing new.
//
// hashicorp/raft sends every follower a heartbeat every HeartbeatTimeout/10 (40–80 ms with the LAN timing) on top
// of the AppendEntries it sends at least every CommitTimeout (50–100 ms) while it leads. Either one resets the
// follower's election timer, so while a follower answers AppendEntries the heartbeats repeat what it just said.
// On a mesh of 17 nodes they were half of the leader's idle packets, its CPU and about 0.5 Mbit/s of its upload,
// and the leader is usually the builder, whose upload seeds every release (see docs/benchmarks.md).
//
// A heartbeat to a peer that answered a real AppendEntries (sent in full, answered without a newer term) within
// the window is answered here, as that peer answered, without going out. Anything else goes out as before: a peer
// that stops answering stops being spared within the window, so the leader's lease counts it lost at most one
// window later than raft alone would; and while a read is verifying leadership (VerifyLeader, which asks every
// peer through a heartbeat), nothing is spared.
type quietTransport struct {
	*raft.NetworkTransport
	gate *heartbeatGate
}

func (t *quietTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if isHeartbeat(args) && t.gate.spare(id, args, resp) {
		return nil
	}
	start := time.Now()
	err := t.NetworkTransport.AppendEntries(id, target, args, resp)
	if err == nil {
		t.gate.answered(id, start, args, resp)
	}
	return err
}

func (t *quietTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := t.NetworkTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	q := &quietPipeline{AppendPipeline: p, gate: t.gate, id: id, out: make(chan raft.AppendFuture, 128), stop: make(chan struct{})}
	go q.relay()
	return q, nil
}

// quietPipeline notes the answers of pipelined AppendEntries on their way to raft.
type quietPipeline struct {
	raft.AppendPipeline
	gate      *heartbeatGate
	id        raft.ServerID
	out       chan raft.AppendFuture
	stop      chan struct{}
	closeOnce sync.Once
}

func (q *quietPipeline) relay() {
	in := q.AppendPipeline.Consumer()
	for {
		select {
		case f := <-in:
			if f.Error() == nil {
				q.gate.answered(q.id, f.Start(), f.Request(), f.Response())
			}
			select {
			case q.out <- f:
			case <-q.stop:
				return
			}
		case <-q.stop:
			return
		}
	}
}

func (q *quietPipeline) Consumer() <-chan raft.AppendFuture { return q.out }

func (q *quietPipeline) Close() error {
	q.closeOnce.Do(func() { close(q.stop) })
	return q.AppendPipeline.Close()
}

// isHeartbeat recognises raft's heartbeat: an AppendEntries with only the term and the leader set.
func isHeartbeat(args *raft.AppendEntriesRequest) bool {
	return len(args.Entries) == 0 && args.PrevLogEntry == 0 && args.PrevLogTerm == 0 && args.LeaderCommitIndex == 0
}

// heartbeatGate decides which heartbeats go out, and knows which peers have acknowledged this leader lately.
type heartbeatGate struct {
	window    time.Duration
	verifying atomic.Int32 // VerifyLeader calls in progress
	spared    atomic.Uint64

	mu    sync.Mutex
	peers map[raft.ServerID]*peerAnswers
}

// peerAnswers is what a peer last answered in the term of the request it answered.
type peerAnswers struct {
	acked    time.Time // when the latest request it answered (heartbeats included) was sent
	replSent time.Time // when the latest real AppendEntries it answered was sent
	replTerm uint64
	repl     raft.AppendEntriesResponse
}

func newHeartbeatGate(window time.Duration) *heartbeatGate {
	return &heartbeatGate{window: window, peers: map[raft.ServerID]*peerAnswers{}}
}

// answered records that id answered a request sent at start. Only answers that accept the request's term (the
// leader's) count: a peer that knows a newer term must be heard, never spared.
func (g *heartbeatGate) answered(id raft.ServerID, start time.Time, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) {
	if args == nil || resp == nil || resp.Term != args.Term {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	a := g.peers[id]
	if a == nil {
		a = &peerAnswers{}
		g.peers[id] = a
	}
	if start.After(a.acked) {
		a.acked = start
	}
	if !isHeartbeat(args) && start.After(a.replSent) {
		a.replSent, a.replTerm, a.repl = start, args.Term, *resp
		a.repl.RPCHeader = cloneHeader(resp.RPCHeader)
	}
}

// cloneHeader copies a header's byte slices. raft decodes each answer into a response it reuses, and msgpack
// decodes into the capacity of the slices already there: a header shared between the replication and heartbeat
// goroutines' responses was written by both at once (the race detector caught it during a CA rotation's
// reconnects).
func cloneHeader(h raft.RPCHeader) raft.RPCHeader {
	h.ID, h.Addr = bytes.Clone(h.ID), bytes.Clone(h.Addr)
	return h
}

// votersAckedSince reports whether a majority of the voters in servers, counting self, have acknowledged this
// leader with a request sent at or after since. hashicorp/raft's VerifyLeader counts the answers of non-voters
// too, so on a mesh with many non-voters a leader cut off from the other voters could still verify; a read
// confirms with this as well.
func (g *heartbeatGate) votersAckedSince(servers []raft.Server, self raft.ServerID, since time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	voters, acks := 0, 0
	for _, s := range servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if a := g.peers[s.ID]; s.ID == self || a != nil && !a.acked.Before(since) {
			acks++
		}
	}
	return voters > 0 && acks >= voters/2+1
}

// spare answers a heartbeat to id in resp and reports true when id answered a real AppendEntries of the same
// term within the window and no leadership check is in progress.
func (g *heartbeatGate) spare(id raft.ServerID, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) bool {
	if g.window <= 0 || g.verifying.Load() > 0 {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	a := g.peers[id]
	if a == nil || a.replSent.IsZero() || a.replTerm != args.Term || time.Since(a.replSent) > g.window {
		return false
	}
	*resp = raft.AppendEntriesResponse{
		RPCHeader: cloneHeader(a.repl.RPCHeader),
		Term:      args.Term,
		LastLog:   a.repl.LastLog,
		Success:   true,
	}
	g.spared.Add(1)
	return true
}

// verify runs a leadership check with every heartbeat going out.
func (g *heartbeatGate) verify(f func() error) error {
	g.verifying.Add(1)
	defer g.verifying.Add(-1)
	return f()
}
