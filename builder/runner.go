package builder

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

// Why a running build's context was cancelled (context.Cause).
var (
	errCancelRequested = errors.New("cancelled by request")
	errBuildGone       = errors.New("the build's record changed under it (deleted, or taken by another leader term)")
	errLeadershipLost  = errors.New("this node stopped leading")
)

// runner runs queued builds for one leader term. It is level-triggered: on every change of the replicated
// state it compares the queued builds with the ones it runs and starts what fits, so a missed change heals at
// the next one.
type runner struct {
	s    *Service
	term uint64
	ctx  context.Context
	log  *slog.Logger

	mu   sync.Mutex
	jobs map[string]*job   // build id → job
	keys map[string]string // app and branch → the build id running for them
	done chan struct{}     // a job ended: its slot is free
	wg   sync.WaitGroup
}

// job is one build attempt on this node.
type job struct {
	id     string
	key    string
	ctx    context.Context
	cancel context.CancelCauseFunc
	// started is set once BuildStart is committed: from then on the FSM record must show the build running
	// under this term, or the job is cancelled.
	started bool
}

// lead is the leader hook: it runs builds until leadership (or the Service) ends, then waits for its builds to
// stop. Builds interrupted here are requeued by the next leader's epoch.
func (s *Service) lead(leaderCtx context.Context, term uint64) {
	if !s.enter() {
		return
	}
	defer s.wg.Done()
	// The context is not derived from leaderCtx so that its cause names why builds stop.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(errLeadershipLost)
	for _, parent := range []context.Context{leaderCtx, s.ctx} {
		stop := context.AfterFunc(parent, func() { cancel(errLeadershipLost) })
		defer stop()
	}

	r := &runner{s: s, term: term, ctx: ctx, log: s.log.With("term", term),
		jobs: map[string]*job{}, keys: map[string]string{}, done: make(chan struct{}, 1)}
	r.log.Info("running builds as leader", "max_concurrent", s.opts.MaxConcurrent)
	defer r.wg.Wait()
	for {
		changed := s.n.FSM().Changed()
		r.schedule()
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-r.done:
		}
	}
}

// schedule starts queued builds that fit and cancels running ones whose record asks for it.
func (r *runner) schedule() {
	var queued []*raftfsm.Build
	records := map[string]raftfsm.Build{}
	r.s.n.FSM().Read(func(st *raftfsm.State) {
		for _, b := range st.LiveBuilds() {
			if b.State == raftfsm.BuildQueued {
				c := *b
				queued = append(queued, &c)
			}
		}
		r.mu.Lock()
		for id := range r.jobs {
			if b := st.Builds[id]; b != nil {
				records[id] = *b
			}
		}
		r.mu.Unlock()
	})
	// The log order is the queue order; a build requeued by a new leader keeps its place at the front.
	sort.Slice(queued, func(i, j int) bool { return queued[i].CreateIndex < queued[j].CreateIndex })

	r.mu.Lock()
	defer r.mu.Unlock()
	for id, j := range r.jobs {
		b, ok := records[id]
		switch {
		case ok && b.State == raftfsm.BuildRunning && b.CancelRequested:
			j.cancel(errCancelRequested)
		case j.started && (!ok || b.State != raftfsm.BuildRunning || b.Term != r.term):
			j.cancel(errBuildGone)
		}
	}
	for _, b := range queued {
		if len(r.jobs) >= r.s.opts.MaxConcurrent || r.ctx.Err() != nil {
			return
		}
		key := b.App + "\x00" + b.Branch
		if r.jobs[b.ID] != nil || r.keys[key] != "" {
			continue
		}
		ctx, cancel := context.WithCancelCause(r.ctx)
		j := &job{id: b.ID, key: key, ctx: ctx, cancel: cancel}
		r.jobs[b.ID], r.keys[key] = j, b.ID
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer r.release(j)
			r.run(j, *b)
		}()
	}
}

func (r *runner) release(j *job) {
	j.cancel(nil)
	r.mu.Lock()
	delete(r.jobs, j.id)
	if r.keys[j.key] == j.id {
		delete(r.keys, j.key)
	}
	r.mu.Unlock()
	select {
	case r.done <- struct{}{}:
	default:
	}
}

// begin commits BuildStart for the build under this term. false means the build is not this job's to run
// (another term owns it, it was cancelled, or the write failed); the queue loop looks at it again later.
func (r *runner) begin(j *job, b *raftfsm.Build) bool {
	ctx, cancel := context.WithTimeout(j.ctx, 15*time.Second)
	defer cancel()
	res, err := r.s.n.Apply(ctx, &raftfsm.BuildStart{ID: b.ID, Term: r.term, Node: r.s.n.Name(), At: time.Now().UTC()})
	if err == nil {
		if jerr := json.Unmarshal(res.Value, b); jerr != nil {
			r.log.Warn("build start: unexpected answer", "build", b.ID, "err", jerr)
		}
		return true
	}
	if raftfsm.KindOf(err) != "" {
		r.log.Debug("not starting build", "build", b.ID, "reason", err)
		return false
	}
	// The write may have been applied even though its answer was lost: the record says.
	if cur, ok := r.s.build(b.ID); ok && cur.State == raftfsm.BuildRunning && cur.Term == r.term && cur.Node == r.s.n.Name() {
		*b = cur
		return true
	}
	r.log.Warn("could not start build; will try again", "build", b.ID, "err", err)
	// Pace the retry: the slot is freed when this returns and the loop would otherwise try again at once.
	t := time.NewTimer(500 * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-j.ctx.Done():
	}
	return false
}
