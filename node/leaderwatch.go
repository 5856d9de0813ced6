package node

import (
	"sync"

	"github.com/hashicorp/raft"
)

// leaderWatch broadcasts Raft's leader and state changes to the writes and reads waiting out an election
// (untilLeaderWait, watchLeader). They polled Raft every 5–10 ms each before: on a large mesh without a leader,
// hundreds of waiting writes polling took the CPU the election needed, and at 120 in-process nodes on 2 cores the
// three voters stayed candidates for minutes (docs/scale.md).
type leaderWatch struct {
	mu sync.Mutex
	ch chan struct{} // closed and replaced at each change
}

func newLeaderWatch() *leaderWatch { return &leaderWatch{ch: make(chan struct{})} }

// changed returns a channel closed at the next change.
func (w *leaderWatch) changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ch
}

func (w *leaderWatch) fire() {
	w.mu.Lock()
	close(w.ch)
	w.ch = make(chan struct{})
	w.mu.Unlock()
}

// observe registers w with r: every leader change and every change of r's own state (follower, candidate,
// leader) fires it. It runs in Raft's goroutine, so it only closes a channel.
func (w *leaderWatch) observe(r *raft.Raft) {
	r.RegisterObserver(raft.NewObserver(nil, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.RaftState:
			w.fire()
		}
		return false
	}))
}
