package builder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

// Why a running build's context was cancelled (context.Cause).
var (
	errCancelRequested = errors.New("cancelled by request")
	errBuildGone       = errors.New("the build's record changed under it (deleted, or taken by another leader term)")
	errLeadershipLost  = errors.New("this node stopped leading")
	errLeaseLost       = errors.New("this build server lost its lease on the build (the leader took it back, or a new leader term began)")
	errServerStopping  = errors.New("this build server is stopping")
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

	// remote: this runner is a build server's, running the builds the leader assigned to this node under a
	// lease (term is then 0: each build carries its own). Otherwise it is the leader's.
	remote bool
	// leases is what the leader last saw of each build server's lease, and when (by its own clock).
	leases map[string]leaseSeen
}

// leaseSeen is one observation of a build server's lease: it is renewed when Renewals moves.
type leaseSeen struct {
	attempt  int
	renewals uint64
	node     string
	at       time.Time
}

// job is one build attempt on this node.
type job struct {
	id     string
	key    string
	ctx    context.Context
	cancel context.CancelCauseFunc
	// attempt is the build's attempt number this job runs (build servers: the lease is for it).
	attempt int
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

	r := s.leaderRunner(ctx, term)
	r.log.Info("running builds as leader", "max_concurrent", s.opts.MaxConcurrent)
	defer r.wg.Wait()
	// Build servers come and go by gossip, and leases expire by the clock: neither changes the FSM.
	tick := time.NewTicker(s.tick())
	defer tick.Stop()
	for {
		changed := s.n.FSM().Changed()
		r.schedule()
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-r.done:
		case <-tick.C:
		}
	}
}

// leaderRunner is the runner of the leader of term; ctx ends with the leadership.
func (s *Service) leaderRunner(ctx context.Context, term uint64) *runner {
	return &runner{s: s, term: term, ctx: ctx, log: s.log.With("term", term),
		jobs: map[string]*job{}, keys: map[string]string{}, done: make(chan struct{}, 1), leases: map[string]leaseSeen{}}
}

// tick is how often the leader looks at build servers and leases without a change of the state.
func (s *Service) tick() time.Duration { return min(s.opts.LeaseTTL/4, 500*time.Millisecond) }

// schedule starts queued builds that fit and cancels running ones whose record asks for it. With build servers
// in the mesh it assigns builds to them instead and takes back those whose lease expired.
func (r *runner) schedule() {
	servers := BuildServers(r.s.n.Members())
	var plan Plan
	queued := map[string]raftfsm.Build{}
	records := map[string]raftfsm.Build{}
	var leased []raftfsm.Build
	r.s.n.FSM().Read(func(st *raftfsm.State) {
		plan = PlanBuilds(st, servers)
		for _, id := range plan.Local {
			queued[id] = *st.Builds[id]
		}
		for _, b := range st.LiveBuilds() {
			if b.State == raftfsm.BuildRunning && b.Remote {
				leased = append(leased, *b)
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

	r.mu.Lock()
	for id, j := range r.jobs {
		b, ok := records[id]
		switch {
		case ok && b.State == raftfsm.BuildRunning && b.CancelRequested:
			j.cancel(errCancelRequested)
		case j.started && (!ok || b.State != raftfsm.BuildRunning || b.Term != r.term):
			j.cancel(errBuildGone)
		}
	}
	// Local holds builds in queue order; a build requeued by a new leader keeps its place at the front.
	for _, id := range plan.Local {
		b := queued[id]
		if len(r.jobs) >= r.s.opts.MaxConcurrent || r.ctx.Err() != nil {
			break
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
			r.run(j, b)
		}()
	}
	r.mu.Unlock()

	for _, as := range plan.Assign {
		if r.ctx.Err() != nil {
			return
		}
		r.assign(as)
	}
	r.expireLeases(leased)
}

// assign gives a queued build to a build server under this term.
func (r *runner) assign(as Assignment) {
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	defer cancel()
	_, err := r.s.n.Apply(ctx, &raftfsm.BuildAssign{ID: as.Build, Term: r.term, Node: as.Node, At: time.Now().UTC()})
	switch {
	case err == nil:
		r.log.Info("build assigned to a build server", "build", as.Build, "server", as.Node)
	case raftfsm.KindOf(err) != "":
		r.log.Debug("not assigning build", "build", as.Build, "reason", err)
	default:
		r.log.Warn("could not assign build; will try again", "build", as.Build, "server", as.Node, "err", err)
	}
}

// expireLeases requeues the builds whose build server has not renewed its lease for LeaseTTL, as this leader's
// clock measures it from when it first saw the lease as it is now. The requeue names the renewals it saw, so a
// renewal that lands meanwhile keeps the build where it is.
func (r *runner) expireLeases(leased []raftfsm.Build) {
	now := time.Now()
	live := map[string]bool{}
	for _, b := range leased {
		live[b.ID] = true
		seen, ok := r.leases[b.ID]
		if !ok || seen.attempt != b.Attempt || seen.renewals != b.Renewals || seen.node != b.Node {
			r.leases[b.ID] = leaseSeen{attempt: b.Attempt, renewals: b.Renewals, node: b.Node, at: now}
			continue
		}
		if now.Sub(seen.at) < r.s.opts.LeaseTTL || r.ctx.Err() != nil {
			continue
		}
		reason := fmt.Sprintf("build server %s did not renew its lease on attempt %d for %s", b.Node, b.Attempt, r.s.opts.LeaseTTL)
		ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
		_, err := r.s.n.Apply(ctx, &raftfsm.BuildRequeue{ID: b.ID, Term: r.term, Attempt: b.Attempt, Renewals: b.Renewals,
			Reason: reason, At: time.Now().UTC()})
		cancel()
		if err != nil {
			r.log.Debug("lease expiry not applied", "build", b.ID, "err", err)
			continue
		}
		r.log.Warn("build taken back from its build server and queued again", "build", b.ID, "server", b.Node, "reason", reason)
		delete(r.leases, b.ID)
	}
	for id := range r.leases {
		if !live[id] {
			delete(r.leases, id)
		}
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
