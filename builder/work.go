package builder

import (
	"context"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

// work runs on a build server (a node tagged `build`) for the Service's life: it runs the builds the leader
// assigned to this node, each under the lease it renews, and stops a build whose lease is lost or whose
// record asks for a cancel. What it leaves unfinished (the node stops) the leader requeues when the lease
// expires.
func (s *Service) work() {
	defer s.wg.Done()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(errServerStopping)
	stop := context.AfterFunc(s.ctx, func() { cancel(errServerStopping) })
	defer stop()

	r := s.serverRunner(ctx)
	r.log.Info("accepting builds as a build server", "capabilities", s.n.Tags()[TagBuild], "slots", slotsOf(s.n.Tags()))
	defer r.wg.Wait()
	for {
		changed := s.n.FSM().Changed()
		r.scheduleRemote()
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-r.done:
		}
	}
}

// serverRunner is the runner of this node as a build server; ctx ends with the Service.
func (s *Service) serverRunner(ctx context.Context) *runner {
	return &runner{s: s, ctx: ctx, log: s.log.With("role", "build server"), remote: true,
		jobs: map[string]*job{}, keys: map[string]string{}, done: make(chan struct{}, 1)}
}

// scheduleRemote starts the builds assigned to this node that it does not run yet and stops those it no longer
// holds. The leader enforces this server's slots when it assigns.
func (r *runner) scheduleRemote() {
	me := r.s.n.Name()
	mine := map[string]raftfsm.Build{}
	r.s.n.FSM().Read(func(st *raftfsm.State) {
		for _, b := range st.LiveBuilds() {
			if b.State == raftfsm.BuildRunning && b.Remote && b.Node == me {
				mine[b.ID] = *b
			}
		}
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, j := range r.jobs {
		b, ok := mine[id]
		switch {
		case !ok || b.Attempt != j.attempt:
			j.cancel(errLeaseLost)
		case b.CancelRequested:
			j.cancel(errCancelRequested)
		}
	}
	for id, b := range mine {
		if r.jobs[id] != nil || r.ctx.Err() != nil {
			continue // a job of an earlier attempt still stopping: the next pass starts this one
		}
		ctx, cancel := context.WithCancelCause(r.ctx)
		j := &job{id: id, key: id, ctx: ctx, cancel: cancel, attempt: b.Attempt, started: true}
		r.jobs[id] = j
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer r.release(j)
			renewed := make(chan struct{})
			go func() {
				defer close(renewed)
				r.renew(j)
			}()
			r.run(j, b)
			j.cancel(nil)
			<-renewed
		}()
	}
}

// renew keeps the lease on a job's build until the job ends. A refused renewal means the lease is lost: the
// job stops. A renewal that cannot reach the leader is tried again at the next period; if none succeeds for
// a lease's length, the leader takes the build back and the next renewal is refused.
func (r *runner) renew(j *job) {
	every := r.s.opts.LeaseTTL / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-j.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(j.ctx, every)
		_, err := r.s.n.Apply(ctx, &raftfsm.BuildLease{ID: j.id, Node: r.s.n.Name(), Attempt: j.attempt})
		cancel()
		if err != nil && raftfsm.KindOf(err) != "" {
			r.log.Warn("lease on a build lost; stopping it", "build", j.id, "attempt", j.attempt, "err", err)
			j.cancel(errLeaseLost)
			return
		}
		if err != nil && j.ctx.Err() == nil {
			r.log.Warn("could not renew a build's lease; will try again", "build", j.id, "err", err)
		}
	}
}
