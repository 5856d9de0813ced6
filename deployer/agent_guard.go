package deployer

import (
	"context"
	"errors"
	"fmt"

	"github.com/shoal-ci/shoal/raftfsm"
)

// supersededError is why a piece of work was interrupted: the replicated state stopped asking for it (its
// deployment was cancelled or ended, this server was failed in it, or another deployment took over).
type supersededError struct{ why string }

func (e *supersededError) Error() string { return "interrupted: " + e.why }

// interrupted returns why ctx's work was cut short by the state or by the agent stopping, or nil when it was not.
func interrupted(ctx context.Context) error {
	cause := context.Cause(ctx)
	var se *supersededError
	if errors.As(cause, &se) || errors.Is(cause, context.Canceled) {
		return cause
	}
	return nil
}

// guard returns a context for the work of target t that ends as soon as the state no longer asks for t, so
// that a cancel or an abort frees this server at once (a running hook is killed, a fetch stops). Call stop
// when the work is done.
func (w *envWorker) guard(t target) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(w.ctx)
	go func() {
		for {
			changed := w.d.n.FSM().Changed()
			if why := w.stale(t); why != "" {
				cancel(&supersededError{why})
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
		}
	}()
	return ctx, func() { cancel(nil) }
}

// stale says why the state no longer asks this server for t ("" while it does).
func (w *envWorker) stale(t target) string {
	me := w.d.n.Name()
	var why string
	w.d.n.FSM().Read(func(s *raftfsm.State) {
		e := s.Envs[w.env]
		if e == nil || e.App != w.app {
			why = fmt.Sprintf("environment %s was deleted", w.env)
			return
		}
		if t.Live {
			d := s.Deploys[t.Dep.ID]
			switch {
			case d == nil:
				why = fmt.Sprintf("deployment %s no longer exists", t.Dep.ID)
				return
			case d.Finished():
				why = fmt.Sprintf("deployment %s %s", d.ID, d.State)
				if d.CancelledBy != "" {
					why += " by " + d.CancelledBy
				}
				return
			case statusOf(d, me) == raftfsm.NodeFailed:
				why = fmt.Sprintf("this server was failed in deployment %s: %s", d.ID, firstLine(d.Nodes[me].Error))
				return
			}
		}
		if now := desiredFor(s, e, me); !now.same(t) {
			why = "the environment now asks for " + now.describe()
		}
	})
	return why
}

// describe names a target for logs.
func (t target) describe() string {
	switch {
	case t.Kind == "":
		return "nothing"
	case t.Kind == kindStopped:
		return "its release stopped"
	case t.Kind != raftfsm.DeployKindDeploy:
		return t.Kind + " in deployment " + t.depID()
	case t.Live:
		return "release " + t.Release + " in deployment " + t.depID()
	}
	return "release " + t.Release
}
