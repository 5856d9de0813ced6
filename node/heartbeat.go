package node

import (
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
		t.gate.acknowledged(id, start, args, resp)
		if !isHeartbeat(args) {
			t.gate.answered(id, start, args, resp)
		}
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
				q.gate.acknowledged(q.id, f.Start(), f.Request(), f.Response())
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

// heartbeatGate decides which heartbeats go out.
type heartbeatGate struct {
	window    time.Duration
	verifying atomic.Int32 // VerifyLeader calls in progress
	spared    atomic.Uint64

	mu   sync.Mutex
	last map[raft.ServerID]answer
	// acked is, per peer, when the latest request it answered as a follower of the request's term was sent.
	acked map[raft.ServerID]time.Time
}

type answer struct {
	sent time.Time // when the request that was answered left
	term uint64
	resp raft.AppendEntriesResponse
}

func newHeartbeatGate(window time.Duration) *heartbeatGate {
	return &heartbeatGate{window: window, last: map[raft.ServerID]answer{}, acked: map[raft.ServerID]time.Time{}}
}

// acknowledged records that id answered a request sent at start and accepted its term (the leader's).
func (g *heartbeatGate) acknowledged(id raft.ServerID, start time.Time, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) {
	if args == nil || resp == nil || resp.Term != args.Term {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if start.After(g.acked[id]) {
		g.acked[id] = start
	}
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
		if s.ID == self || !g.acked[s.ID].Before(since) {
			acks++
		}
	}
	return voters > 0 && acks >= voters/2+1
}

// answered records that id answered a real AppendEntries sent at start.
func (g *heartbeatGate) answered(id raft.ServerID, start time.Time, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) {
	if args == nil || resp == nil || resp.Term > args.Term {
		return // a peer that knows a newer term must hear every heartbeat's answer from itself
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if a, ok := g.last[id]; ok && a.sent.After(start) {
		return
	}
	g.last[id] = answer{sent: start, term: args.Term, resp: *resp}
}

// spare answers a heartbeat to id in resp and reports true when id answered a real AppendEntries of the same
// term within the window and no leadership check is in progress.
func (g *heartbeatGate) spare(id raft.ServerID, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) bool {
	if g.window <= 0 || g.verifying.Load() > 0 {
		return false
	}
	g.mu.Lock()
	a, ok := g.last[id]
	g.mu.Unlock()
	if !ok || a.term != args.Term || time.Since(a.sent) > g.window {
		return false
	}
	*resp = raft.AppendEntriesResponse{
		RPCHeader: a.resp.RPCHeader,
		Term:      args.Term,
		LastLog:   a.resp.LastLog,
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
