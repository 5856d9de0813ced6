package deployer

import (
	"sync"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

// statusSender writes this node's status in one deployment to Raft from its own goroutine, so lifecycle
// callbacks never wait for a commit. Only the latest status matters: one set while a write is under way
// replaces any other waiting, and Close sends the last one before it returns.
type statusSender struct {
	w       *envWorker
	id      string
	release string
	mu      sync.Mutex
	last    raftfsm.NodeStatus // the latest status Set, without its time
	next    *raftfsm.NodeStatus
	gap     time.Duration // the least time between two intermediate statuses (statusGapFor)
	wake    chan struct{}
	quit    chan struct{}
	done    chan struct{}
}

// reporter returns a sender for deployment id about release, a deployment to servers servers; with no
// deployment, statuses go nowhere.
func (w *envWorker) reporter(id, release string, servers int) *statusSender {
	s := &statusSender{w: w, id: id, release: release, gap: statusGapFor(servers), wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	if id == "" {
		close(s.done)
		return s
	}
	go s.loop()
	return s
}

// Set queues st as the latest status.
func (s *statusSender) Set(st raftfsm.NodeStatus) {
	if s.id == "" {
		return
	}
	if st.Release == "" {
		st.Release = s.release
	}
	s.mu.Lock()
	if st == s.last {
		// Nothing moved: a repeat is not progress, and the progress deadline must see that.
		s.mu.Unlock()
		return
	}
	s.last = st
	st.UpdatedAt = time.Now().UTC()
	s.next = &st
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Close sends the status still waiting, if any, and stops the goroutine.
func (s *statusSender) Close() {
	if s.id == "" {
		return
	}
	close(s.quit)
	<-s.done
}

func (s *statusSender) loop() {
	defer close(s.done)
	for {
		quitting := false
		select {
		case <-s.wake:
		case <-s.quit:
			quitting = true
		}
		s.mu.Lock()
		st := s.next
		s.next = nil
		s.mu.Unlock()
		if st != nil {
			s.send(*st)
			if !quitting && !final(*st) {
				// Intermediate states are for people watching: at most a few a second per server keeps
				// the Raft log (and every node's wake-ups) small on large meshes. Close flushes at once.
				select {
				case <-s.quit:
					quitting = true
				case <-time.After(s.gap):
				}
			}
		}
		if quitting {
			s.mu.Lock()
			st := s.next
			s.mu.Unlock()
			if st != nil {
				s.send(*st)
			}
			return
		}
	}
}

// statusGap is the least time between two intermediate statuses of one server in one deployment of a few
// servers; meshRate bounds the intermediate statuses a whole deployment writes per second. Every server of a
// deployment reports at once, so with a fixed gap the mesh's status writes grow with the deployment: 200
// servers every 250 ms are 800 writes a second, more than a leader commits (450–680 a second measured on the
// test machine), and the slower the install the more of them. Final statuses (healthy, failed) go at once.
const (
	statusGap = 250 * time.Millisecond
	meshRate  = 100
)

// statusGapFor is the least time between two intermediate statuses of one server in a deployment to servers
// servers: statusGap, longer past meshRate/4 servers (2 s at 200 servers).
func statusGapFor(servers int) time.Duration {
	return max(statusGap, time.Duration(servers)*time.Second/meshRate)
}

func final(st raftfsm.NodeStatus) bool {
	return st.State == raftfsm.NodeHealthy || st.State == raftfsm.NodeFailed
}

// send writes one status, retrying a few times: a final state that never reaches Raft would leave the
// orchestrator waiting. It runs on the deployer's context, not the worker's, so a worker stopped right
// after its last report still delivers it.
func (s *statusSender) send(st raftfsm.NodeStatus) {
	cmd := &raftfsm.NodeStatusSet{ID: s.id, Node: s.w.d.n.Name(), Status: st}
	for attempt := 0; ; attempt++ {
		_, err := s.w.d.apply(s.w.d.ctx, cmd)
		if err == nil || raftfsm.KindOf(err) != "" {
			if err != nil {
				// Refused: the deployment ended or failed this server meanwhile, and its record stands.
				s.w.log.Info("status not recorded", "deployment", s.id, "state", st.State, "why", err)
			}
			return
		}
		if !final(st) || attempt >= 5 || s.w.d.ctx.Err() != nil {
			s.w.log.Warn("report status", "deployment", s.id, "state", st.State, "err", err)
			return
		}
		select {
		case <-s.w.d.ctx.Done():
			return
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		}
	}
}
