package deployer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-ci/shoal/internal/fsutil"
	"github.com/shoal-ci/shoal/internal/proc"
)

// Supervision defaults, after Distelli's: a process that ran less than five minutes is restarted with
// back-off doubling from one second to a minute.
const (
	DefaultMinStable      = 5 * time.Minute
	DefaultInitialBackoff = time.Second
	DefaultMaxBackoff     = time.Minute
	DefaultStopGrace      = 10 * time.Second
)

// ErrSupervisorClosed is returned by a Supervisor after Close.
var ErrSupervisorClosed = errors.New("exec supervisor is closed")

// ExecSpec is what one (app, environment) runs under supervision: Count copies of `bash -e Script`.
type ExecSpec struct {
	Script  string   // the Exec script, run as `bash -e Script`
	Dir     string   // working directory (the app home)
	Env     []string // the complete environment; nothing is inherited from the agent
	Count   int      // ProcessCount; 0 means 1
	LogPath string   // stdout and stderr of every copy are appended here

	MinStable      time.Duration // a run shorter than this is restarted with back-off; 0 means DefaultMinStable
	InitialBackoff time.Duration // 0 means DefaultInitialBackoff
	MaxBackoff     time.Duration // 0 means DefaultMaxBackoff
	StopGrace      time.Duration // SIGTERM to SIGKILL; 0 means DefaultStopGrace
}

func (s ExecSpec) withDefaults() ExecSpec {
	if s.Count <= 0 {
		s.Count = 1
	}
	if s.MinStable <= 0 {
		s.MinStable = DefaultMinStable
	}
	if s.InitialBackoff <= 0 {
		s.InitialBackoff = DefaultInitialBackoff
	}
	if s.MaxBackoff <= 0 {
		s.MaxBackoff = DefaultMaxBackoff
	}
	if s.MaxBackoff < s.InitialBackoff {
		s.MaxBackoff = s.InitialBackoff
	}
	if s.StopGrace <= 0 {
		s.StopGrace = DefaultStopGrace
	}
	return s
}

// hash names what a process runs: the script's path and content, its directory, environment and log.
// A process recorded under another hash belongs to another release and is never adopted.
func (s ExecSpec) hash() (string, error) {
	script, err := os.ReadFile(s.Script)
	if err != nil {
		return "", fmt.Errorf("read exec script: %w", err)
	}
	h := sha256.New()
	for _, part := range append([]string{s.Script, string(script), s.Dir, s.LogPath}, s.Env...) {
		fmt.Fprintf(h, "%d:%s\n", len(part), part)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// instanceRecord is one supervised process as written to the state file.
type instanceRecord struct {
	Slot       int       `json:"slot"`
	PID        int       `json:"pid"`
	StartTicks uint64    `json:"start_ticks"` // /proc/<pid>/stat field 22, so a reused pid is not taken for ours
	SpecHash   string    `json:"spec_hash"`
	StartedAt  time.Time `json:"started_at"`
}

type supervisorState struct {
	// Spec is what was last started and not stopped since, so a restarted agent can Resume it.
	Spec        *ExecSpec        `json:"spec,omitempty"`
	StopGraceNS int64            `json:"stop_grace_ns"`
	Instances   []instanceRecord `json:"instances"`
	History     execHistory      `json:"history"`
}

const stateFileName = "exec-state.json"

// markerVar is set in every supervised process's environment. It finds a process that was started but
// not yet recorded when the agent died (the state file is written just after the fork).
const markerVar = "SHOAL_EXEC_INSTANCE"

// marker is markerVar=<supervisor id>/<spec hash>/<slot>.
func (s *Supervisor) marker(hash string, slot int) string {
	return fmt.Sprintf("%s=%s/%s/%d", markerVar, s.id, hash, slot)
}

// knownLocked returns the recorded processes plus any session leader carrying this supervisor's
// marker that the state file missed.
func (s *Supervisor) knownLocked() []instanceRecord {
	recs := make([]instanceRecord, 0, len(s.instances))
	seen := map[int]bool{}
	for _, r := range s.instances {
		recs = append(recs, r)
		seen[r.PID] = true
	}
	for _, m := range findMarked(markerVar + "=" + s.id + "/") {
		if seen[m.pid] {
			continue
		}
		hash, slotText, ok := strings.Cut(m.value, "/")
		slot, err := strconv.Atoi(slotText)
		if !ok || err != nil {
			continue
		}
		s.log.Warn("found an unrecorded exec process (the agent died as it started it)", "pid", m.pid, "slot", slot)
		recs = append(recs, instanceRecord{Slot: slot, PID: m.pid, StartTicks: m.startTicks, SpecHash: hash, StartedAt: time.Now()})
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].StartedAt.Before(recs[j].StartedAt) })
	return recs
}

// Supervisor runs and watches the Exec processes of one (app, environment). The processes live in
// their own sessions and write to a log file, not to the agent, so they outlive it; the state file in
// stateDir lets the next agent find them again (Start adopts them) instead of starting new copies.
type Supervisor struct {
	stateDir string
	id       string // names this supervisor's processes in their environment (markerVar)
	log      *slog.Logger
	restarts atomic.Uint64

	mu        sync.Mutex
	closed    bool
	onRestart func(slot int, delay time.Duration)
	run       *execRun               // nil when nothing is supervised
	instances map[int]instanceRecord // by slot, mirrors the state file; nil until loaded
	stopGrace time.Duration          // of the last spec, for Stop without Start
	spec      *ExecSpec              // last started and not stopped, for Resume
	hist      execHistory            // restarts and exits of the spec last started (supervise_status.go)
	changed   chan struct{}          // closed at the next change, for Status watchers
}

// execRun is one Start..Stop span: the slot goroutines and what ends them.
type execRun struct {
	spec ExecSpec
	hash string
	bash string

	quit         chan struct{}
	wakeR, wakeW int // wakeW is closed with quit so watchers blocked in poll(2) return
	cancelOnce   sync.Once
	wg           sync.WaitGroup
}

func (r *execRun) cancel() {
	r.cancelOnce.Do(func() {
		close(r.quit)
		unix.Close(r.wakeW)
	})
}

func (r *execRun) stopped() bool {
	select {
	case <-r.quit:
		return true
	default:
		return false
	}
}

// sleep waits d unless the run is cancelled first; it reports whether the full time passed.
func (r *execRun) sleep(d time.Duration) bool {
	if d <= 0 {
		return !r.stopped()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.quit:
		return false
	}
}

// NewSupervisor returns a supervisor whose state lives in stateDir (one directory per app and
// environment). It does nothing until Start or Stop.
func NewSupervisor(stateDir string, logger *slog.Logger) *Supervisor {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		abs = stateDir
	}
	sum := sha256.Sum256([]byte(abs))
	return &Supervisor{stateDir: stateDir, id: hex.EncodeToString(sum[:8]), log: logger}
}

// OnRestart registers fn to be called each time a process that exited is started again, with its slot
// and the back-off waited before, for shoal_exec_restarts_total. Call it before Start; fn must not block.
func (s *Supervisor) OnRestart(fn func(slot int, delay time.Duration)) {
	s.mu.Lock()
	s.onRestart = fn
	s.mu.Unlock()
}

// Restarts counts the restarts of exited processes since this Supervisor was created.
func (s *Supervisor) Restarts() uint64 { return s.restarts.Load() }

// Running reports whether the supervisor is supervising a spec (started or resumed, and not stopped).
func (s *Supervisor) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.run != nil
}

// PIDs returns the pids of the supervised processes, by slot.
func (s *Supervisor) PIDs() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.run == nil {
		return nil
	}
	slots := make([]int, 0, len(s.instances))
	for slot := range s.instances {
		slots = append(slots, slot)
	}
	sort.Ints(slots)
	pids := make([]int, 0, len(slots))
	for _, slot := range slots {
		pids = append(pids, s.instances[slot].PID)
	}
	return pids
}

// Start makes the running processes match spec: processes recorded in the state file that still run
// the same spec (same pid and start time, same hash) are adopted without a restart, missing copies are
// started, and recorded processes of another spec (or beyond Count) are stopped first. Calling Start
// again with the same spec is a no-op; a different spec needs Stop first.
func (s *Supervisor) Start(spec ExecSpec) error {
	spec = spec.withDefaults()
	if spec.Script == "" || spec.Dir == "" || spec.LogPath == "" {
		return errors.New("start exec: Script, Dir and LogPath are required")
	}
	if fi, err := os.Stat(spec.Dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("start exec: working directory %s is not a directory", spec.Dir)
	}
	hash, err := spec.hash()
	if err != nil {
		return fmt.Errorf("start exec: %w", err)
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		return fmt.Errorf("start exec: bash is required on the server: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(spec.LogPath), 0o755); err != nil {
		return fmt.Errorf("start exec: create log directory: %w", err)
	}
	if err := os.MkdirAll(s.stateDir, 0o700); err != nil {
		return fmt.Errorf("start exec: create state directory: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrSupervisorClosed
	}
	if s.run != nil {
		if s.run.hash == hash && s.run.spec.Count == spec.Count {
			return nil
		}
		return errors.New("start exec: already supervising another spec; Stop it first")
	}
	if err := s.loadLocked(); err != nil {
		return fmt.Errorf("start exec: %w", err)
	}

	adopted := map[int]instanceRecord{}
	var stale []instanceRecord
	for _, rec := range s.knownLocked() {
		_, taken := adopted[rec.Slot]
		switch {
		case !running(rec.PID, rec.StartTicks):
			reap(rec.PID)
		case rec.SpecHash == hash && rec.Slot >= 0 && rec.Slot < spec.Count && !taken:
			adopted[rec.Slot] = rec
		default:
			stale = append(stale, rec)
		}
	}
	if len(stale) > 0 {
		s.log.Info("stopping exec processes of a previous spec", "count", len(stale))
		deadline := time.After(s.graceLocked())
		if left := terminate(stale, deadline, nil); len(left) > 0 {
			return fmt.Errorf("start exec: old processes %v did not exit after SIGKILL", left)
		}
	}
	s.instances = adopted
	s.stopGrace = spec.StopGrace
	s.spec = &spec
	s.historyForLocked(hash)

	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("start exec: %w", err)
	}
	run := &execRun{spec: spec, hash: hash, bash: bash, quit: make(chan struct{}), wakeR: p[0], wakeW: p[1]}
	s.run = run
	for slot := 0; slot < spec.Count; slot++ {
		rec, ok := adopted[slot]
		if ok {
			s.log.Info("adopted running exec process", "slot", slot, "pid", rec.PID, "started_at", rec.StartedAt)
		} else if rec, err = s.spawnLocked(run, slot); err != nil {
			// The slot's loop retries with back-off; a fork failure is rarely permanent.
			s.log.Error("start exec process", "slot", slot, "err", err)
		} else {
			ok = true
		}
		var first *instanceRecord
		if ok {
			first = &rec
		}
		run.wg.Add(1)
		go s.superviseSlot(run, slot, first)
	}
	if err := s.saveLocked(); err != nil {
		s.log.Error("save exec state", "err", err)
	}
	return nil
}

// Resume starts supervising again what the state directory says was running: the spec last started
// and not stopped. Its live processes are adopted, missing ones started. It does nothing (and reports
// false) when there is no such spec, e.g. after Stop. A restarting agent calls it for every environment.
func (s *Supervisor) Resume() (bool, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false, ErrSupervisorClosed
	}
	if err := s.loadLocked(); err != nil {
		s.mu.Unlock()
		return false, fmt.Errorf("resume exec: %w", err)
	}
	spec := s.spec
	s.mu.Unlock()
	if spec == nil {
		return false, nil
	}
	return true, s.Start(*spec)
}

// superviseSlot keeps one copy running until the run is cancelled.
func (s *Supervisor) superviseSlot(run *execRun, slot int, inst *instanceRecord) {
	defer run.wg.Done()
	backoff := run.spec.InitialBackoff
	for {
		if inst == nil {
			s.mu.Lock()
			rec, err := s.spawnLocked(run, slot)
			s.mu.Unlock()
			if errors.Is(err, errRunStopped) {
				return
			}
			if err != nil {
				s.log.Error("start exec process", "slot", slot, "err", err, "retry_in", backoff)
				if !run.sleep(backoff) {
					return
				}
				backoff = min(2*backoff, run.spec.MaxBackoff)
				continue
			}
			inst = &rec
		}
		status, exited := waitExit(run, *inst)
		if !exited {
			return // cancelled: Stop kills, Close leaves the process running
		}
		lived := time.Since(inst.StartedAt)
		var delay time.Duration
		if lived < run.spec.MinStable {
			delay = backoff
			backoff = min(2*backoff, run.spec.MaxBackoff)
		} else {
			backoff = run.spec.InitialBackoff
		}
		s.log.Warn("exec process exited; restarting", "slot", slot, "pid", inst.PID, "status", status,
			"ran", lived.Round(time.Millisecond), "backoff", delay)
		appendLogNote(run.spec.LogPath, fmt.Sprintf("exec copy %d (pid %d) ended: %s after %s; restarting in %s",
			slot, inst.PID, status, lived.Round(time.Millisecond), delay))
		s.mu.Lock()
		s.noteExitLocked(ExecExit{Slot: slot, PID: inst.PID, Status: status, Ran: lived, At: time.Now()})
		if cur, ok := s.instances[slot]; ok && cur.PID == inst.PID {
			delete(s.instances, slot)
			if err := s.saveLocked(); err != nil {
				s.log.Error("save exec state", "err", err)
			}
		}
		s.mu.Unlock()
		if !run.sleep(delay) {
			return
		}
		s.restarts.Add(1)
		s.noteRestart()
		s.mu.Lock()
		fn := s.onRestart
		s.mu.Unlock()
		if fn != nil {
			fn(slot, delay)
		}
		inst = nil
	}
}

var errRunStopped = errors.New("exec run stopped")

// spawnLocked starts one copy in its own session with stdout and stderr appended to the log file. The
// child holds its own descriptor for the log, so the agent dying never touches its output.
func (s *Supervisor) spawnLocked(run *execRun, slot int) (instanceRecord, error) {
	if run.stopped() {
		return instanceRecord{}, errRunStopped
	}
	logf, err := os.OpenFile(run.spec.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return instanceRecord{}, fmt.Errorf("open exec log: %w", err)
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return instanceRecord{}, err
	}
	defer devnull.Close()
	fmt.Fprintf(logf, "--- shoal: starting exec copy %d at %s\n", slot, time.Now().UTC().Format(time.RFC3339))
	pid, err := syscall.ForkExec(run.bash, []string{"bash", "-e", run.spec.Script}, &syscall.ProcAttr{
		Dir:   run.spec.Dir,
		Env:   append(run.spec.Env[:len(run.spec.Env):len(run.spec.Env)], s.marker(run.hash, slot)),
		Files: []uintptr{devnull.Fd(), logf.Fd(), logf.Fd()},
		// A new session: the agent's death (or its terminal's) sends the process no signal, and the
		// process group is what Stop signals.
		Sys: &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		return instanceRecord{}, fmt.Errorf("fork bash -e %s: %w", run.spec.Script, err)
	}
	// The child is ours and unreaped, so its pid cannot be reused before this read.
	st, err := proc.ReadStat(pid)
	if err != nil {
		return instanceRecord{}, fmt.Errorf("read start time of pid %d: %w", pid, err)
	}
	rec := instanceRecord{Slot: slot, PID: pid, StartTicks: st.StartTicks, SpecHash: run.hash, StartedAt: time.Now()}
	s.instances[slot] = rec
	s.notifyLocked()
	if err := s.saveLocked(); err != nil {
		s.log.Error("save exec state", "err", err)
	}
	s.log.Info("started exec process", "slot", slot, "pid", pid)
	return rec, nil
}

// waitExit blocks until the process ends (true) or the run is cancelled (false). It watches a pidfd,
// which works for processes adopted from a previous agent as well as for our children, and falls back
// to polling /proc on kernels without pidfd_open.
func waitExit(run *execRun, inst instanceRecord) (string, bool) {
	pidfd, err := unix.PidfdOpen(inst.PID, 0)
	if err == nil {
		defer unix.Close(pidfd)
		// Opened after the pid may have been reused: check it is still the same process.
		if running(inst.PID, inst.StartTicks) {
			fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}, {Fd: int32(run.wakeR), Events: unix.POLLIN}}
			for {
				_, err := unix.Poll(fds, -1)
				if errors.Is(err, unix.EINTR) {
					continue
				}
				if err != nil || fds[0].Revents != 0 {
					break
				}
				if fds[1].Revents != 0 {
					return "", false
				}
			}
		}
	} else {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for running(inst.PID, inst.StartTicks) {
			select {
			case <-run.quit:
				return "", false
			case <-tick.C:
			}
		}
	}
	if run.stopped() {
		// Stop may be killing it right now; Stop reaps and reports.
		return "", false
	}
	// Kill what the process left behind in its group before collecting it: while it is an unreaped
	// zombie its pid, and so the group id, cannot name anyone else.
	if st, err := proc.ReadStat(inst.PID); err == nil && st.PPid == os.Getpid() && st.StartTicks == inst.StartTicks {
		_ = unix.Kill(-inst.PID, unix.SIGKILL)
	}
	status, _ := reap(inst.PID)
	return status, true
}

// terminate stops the process groups of recs: SIGTERM, then SIGKILL once deadline fires or done closes.
// It returns the groups that survived even SIGKILL (for a few seconds).
func terminate(recs []instanceRecord, deadline <-chan time.Time, done <-chan struct{}) []int {
	var groups []int
	for _, r := range recs {
		if running(r.PID, r.StartTicks) {
			groups = append(groups, r.PID)
		}
	}
	for _, g := range groups {
		_ = unix.Kill(-g, unix.SIGTERM)
	}
	left := waitGroupsGone(groups, deadline, done)
	if len(left) == 0 {
		return nil
	}
	for _, g := range left {
		_ = unix.Kill(-g, unix.SIGKILL)
	}
	return waitGroupsGone(left, time.After(5*time.Second), nil)
}

// Stop stops supervising and kills the processes: SIGTERM to each process group, SIGKILL after the
// spec's StopGrace (or when ctx ends), then waits for them to be gone. It works on a fresh Supervisor
// too, from the state file, so a restarted agent can stop what its predecessor started.
func (s *Supervisor) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrSupervisorClosed
	}
	run := s.run
	s.run = nil
	s.mu.Unlock()
	if run != nil {
		run.cancel()
		run.wg.Wait()
		unix.Close(run.wakeR)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.loadLocked(); err != nil {
		return fmt.Errorf("stop exec: %w", err)
	}
	recs := s.knownLocked()
	grace := time.NewTimer(s.graceLocked())
	defer grace.Stop()
	left := terminate(recs, grace.C, ctx.Done())
	for _, r := range recs {
		reap(r.PID)
	}
	if len(left) > 0 {
		return fmt.Errorf("stop exec: process groups %v survived SIGKILL (stuck in the kernel?); check them with ps", left)
	}
	s.instances = map[int]instanceRecord{}
	s.spec = nil
	s.notifyLocked()
	if err := s.saveLocked(); err != nil {
		return fmt.Errorf("stop exec: %w", err)
	}
	if len(recs) > 0 {
		s.log.Info("stopped exec processes", "count", len(recs))
	}
	return nil
}

// Close stops supervising without touching the processes, as an agent shutting down does: they keep
// running and the next Supervisor over the same state directory adopts them.
func (s *Supervisor) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	run := s.run
	s.run = nil
	s.mu.Unlock()
	if run != nil {
		run.cancel()
		run.wg.Wait()
		unix.Close(run.wakeR)
	}
}

func (s *Supervisor) graceLocked() time.Duration {
	if s.stopGrace > 0 {
		return s.stopGrace
	}
	return DefaultStopGrace
}

// loadLocked reads the state file once; afterwards s.instances is the truth and the file its copy.
func (s *Supervisor) loadLocked() error {
	if s.instances != nil {
		return nil
	}
	s.instances = map[int]instanceRecord{}
	b, err := os.ReadFile(filepath.Join(s.stateDir, stateFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read exec state: %w", err)
	}
	var st supervisorState
	if err := json.Unmarshal(b, &st); err != nil {
		// A corrupt file cannot name live processes; starting fresh is the only way forward, and the
		// processes it named (if any) are found by nobody. Say so loudly.
		s.log.Error("exec state file is corrupt; its processes will not be adopted", "path",
			filepath.Join(s.stateDir, stateFileName), "err", err)
		return nil
	}
	for _, r := range st.Instances {
		s.instances[r.Slot] = r
	}
	s.stopGrace = time.Duration(st.StopGraceNS)
	s.spec = st.Spec
	s.hist = st.History
	return nil
}

// saveLocked writes the state file atomically: a temporary file, fsync, rename, fsync of the directory.
func (s *Supervisor) saveLocked() error {
	st := supervisorState{Spec: s.spec, StopGraceNS: int64(s.stopGrace), Instances: []instanceRecord{}, History: s.hist}
	for _, r := range s.instances {
		st.Instances = append(st.Instances, r)
	}
	sort.Slice(st.Instances, func(i, j int) bool { return st.Instances[i].Slot < st.Instances[j].Slot })
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.stateDir, 0o700); err != nil {
		return fmt.Errorf("create exec state directory: %w", err)
	}
	return fsutil.WriteAtomic(filepath.Join(s.stateDir, stateFileName), b, 0o600)
}

// appendLogNote adds a line of the supervisor's own to an exec log, so the log shows why a process
// restarted. Best effort: the log is for people.
func appendLogNote(path, note string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "--- shoal: %s\n", note)
}
