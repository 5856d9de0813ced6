package deployer

import (
	"time"
)

// ExecExit is how one supervised process ended.
type ExecExit struct {
	Slot   int           `json:"slot"`
	PID    int           `json:"pid"`
	Status string        `json:"status"` // "exit status 1", "killed by signal killed"
	Ran    time.Duration `json:"ran"`
	At     time.Time     `json:"at"`
}

// ExecProc is one supervised process that runs now.
type ExecProc struct {
	Slot      int
	PID       int
	StartedAt time.Time
}

// ExecStatus is what a Supervisor runs now and how its processes ended, for reports and health.
type ExecStatus struct {
	// Running is true while a spec is supervised (started or resumed and not stopped).
	Running bool
	// Count is the number of copies the spec asks for.
	Count int
	// Procs are the copies up now, by slot.
	Procs []ExecProc
	// Restarts counts the restarts of exited copies of this spec (kept across agent restarts).
	Restarts uint64
	// Exits are the latest exits of this spec's copies, oldest first (at most maxExecExits).
	Exits []ExecExit
}

// maxExecExits bounds the exits a Supervisor remembers.
const maxExecExits = 10

// execHistory is the part of the state file that outlives an agent: how this spec's copies ended.
type execHistory struct {
	Hash     string     `json:"hash,omitempty"` // the spec the counts are about
	Restarts uint64     `json:"restarts"`
	Exits    []ExecExit `json:"exits,omitempty"`
}

// Status returns what the supervisor runs now and the latest exits of its spec.
func (s *Supervisor) Status() ExecStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := ExecStatus{Restarts: s.hist.Restarts, Exits: append([]ExecExit(nil), s.hist.Exits...)}
	if s.run == nil {
		return st
	}
	st.Running, st.Count = true, s.run.spec.Count
	for slot := 0; slot < st.Count; slot++ {
		if in, ok := s.instances[slot]; ok {
			st.Procs = append(st.Procs, ExecProc{Slot: slot, PID: in.PID, StartedAt: in.StartedAt})
		}
	}
	return st
}

// Changed returns a channel closed at the supervisor's next change: a process started, exited or stopped.
func (s *Supervisor) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.changed
}

// notifyLocked wakes the watchers of Changed.
func (s *Supervisor) notifyLocked() {
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

// historyForLocked starts a fresh history when the supervised spec changes (a new release, new variables).
func (s *Supervisor) historyForLocked(hash string) {
	if s.hist.Hash != hash {
		s.hist = execHistory{Hash: hash}
	}
	s.notifyLocked()
}

// noteExitLocked records an exit of the running spec.
func (s *Supervisor) noteExitLocked(e ExecExit) {
	s.hist.Exits = append(s.hist.Exits, e)
	if n := len(s.hist.Exits); n > maxExecExits {
		s.hist.Exits = append([]ExecExit(nil), s.hist.Exits[n-maxExecExits:]...)
	}
	s.notifyLocked()
}

// noteRestart counts a restart of an exited copy.
func (s *Supervisor) noteRestart() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hist.Restarts++
	if err := s.saveLocked(); err != nil {
		s.log.Error("save exec state", "err", err)
	}
}
