package deployer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

// DefaultMinHealthyTime is how long a release's Exec processes must stay up, when the release has no health
// check, before a server counts as healthy (Nomad's min_healthy_time). Env.MinHealthyTime overrides it.
const DefaultMinHealthyTime = 10 * time.Second

// crashLoopExits is how many exits, each before the process was up for the minimum healthy time, name a crash
// loop: one exit can be a fluke that the restart heals, three in a row are not.
const crashLoopExits = 3

// minHealthyFor is environment e's minimum healthy time on this deployer.
func (d *Deployer) minHealthyFor(e *raftfsm.Env) time.Duration {
	if e != nil && e.MinHealthyTime > 0 {
		return time.Duration(e.MinHealthyTime)
	}
	if d.opts.MinHealthyTime > 0 {
		return d.opts.MinHealthyTime
	}
	return DefaultMinHealthyTime
}

// execJudgement is how a supervisor's processes are doing, by the minimum healthy time.
type execJudgement struct {
	Health string // raftfsm.RuntimeHealthy, RuntimeStarting, RuntimeCrashLoop or RuntimeDown
	Detail string // in words, stable while nothing changes (it is written to Raft only when it changes)
	// HealthyAt is when the processes up now will have been up for the minimum healthy time.
	HealthyAt time.Time
	// ShortExits counts the latest exits in a row that came before the minimum healthy time.
	ShortExits int
}

// judgeExec says how the processes of st are doing at now.
func judgeExec(st ExecStatus, minHealthy time.Duration, now time.Time) execJudgement {
	var j execJudgement
	for i := len(st.Exits) - 1; i >= 0 && st.Exits[i].Ran < minHealthy; i-- {
		j.ShortExits++
	}
	if !st.Running {
		j.Health, j.Detail = raftfsm.RuntimeDown, "the Exec processes are not supervised"
		if len(st.Exits) > 0 {
			j.Detail += "; last exit: " + exitText(st.Exits[len(st.Exits)-1], st.Restarts)
		}
		return j
	}
	var youngest time.Time
	for _, p := range st.Procs {
		if p.StartedAt.After(youngest) {
			youngest = p.StartedAt
		}
	}
	j.HealthyAt = youngest.Add(minHealthy)
	switch {
	case len(st.Procs) == st.Count && !now.Before(j.HealthyAt):
		j.Health = raftfsm.RuntimeHealthy
	case j.ShortExits >= crashLoopExits:
		j.Health, j.Detail = raftfsm.RuntimeCrashLoop, exitText(st.Exits[len(st.Exits)-1], st.Restarts)
	case len(st.Procs) < st.Count:
		j.Health = raftfsm.RuntimeDown
		j.Detail = fmt.Sprintf("%d of %d Exec processes up", len(st.Procs), st.Count)
		if len(st.Exits) > 0 {
			j.Detail += "; last exit: " + exitText(st.Exits[len(st.Exits)-1], st.Restarts)
		}
	default:
		j.Health = raftfsm.RuntimeStarting
		j.Detail = fmt.Sprintf("up for less than the minimum healthy time %s", minHealthy)
	}
	return j
}

// exitText is an exit in words: "exit status 1 after 2ms, 5 restarts".
func exitText(e ExecExit, restarts uint64) string {
	return fmt.Sprintf("%s after %s, %d restart%s", e.Status, roundRan(e.Ran), restarts, plural(restarts))
}

func plural(n uint64) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// roundRan keeps a duration readable: 2ms, 340ms, 3.1s, 2m5s.
func roundRan(d time.Duration) time.Duration {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond)
	case d < time.Minute:
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}

// CrashLoopError is a release whose Exec processes kept exiting before they were up for the minimum healthy time.
type CrashLoopError struct {
	Release    string
	Last       ExecExit
	Restarts   uint64
	MinHealthy time.Duration
}

func (e *CrashLoopError) Error() string {
	return fmt.Sprintf("release %s: Exec is crash-looping: %s (each run shorter than the minimum healthy time %s); its output is in the server's exec.log",
		e.Release, exitText(e.Last, e.Restarts), e.MinHealthy)
}

// waitExecStable waits until every Exec process of sup has been up for minHealthy (nil). It fails when they crash
// in a loop (crashLoopExits exits in a row, each before minHealthy, the last since the wait began), when
// supervision stops, or when deadline passes first.
func waitExecStable(ctx context.Context, sup *Supervisor, release string, minHealthy, deadline time.Duration) error {
	start := time.Now()
	end := start.Add(deadline)
	for {
		changed := sup.Changed()
		st := sup.Status()
		now := time.Now()
		j := judgeExec(st, minHealthy, now)
		if j.Health == raftfsm.RuntimeHealthy {
			return nil
		}
		if err := crashLoopSince(st, release, minHealthy, start); err != nil {
			return err
		}
		if !st.Running {
			return fmt.Errorf("release %s: its Exec processes stopped being supervised while it proved healthy", release)
		}
		if !now.Before(end) {
			return fmt.Errorf("release %s: its Exec processes did not stay up for the minimum healthy time %s within %s: %s",
				release, minHealthy, deadline, j.Detail)
		}
		wait := end.Sub(now)
		if j.Health == raftfsm.RuntimeStarting {
			wait = min(wait, j.HealthyAt.Sub(now)+time.Millisecond)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("release %s: waiting for its Exec processes to stay up: %w", release, context.Cause(ctx))
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// crashLoopSince returns a *CrashLoopError when the latest crashLoopExits exits of st came each before minHealthy
// and the last of them after start. Exits from before start count (a spec that was crash-looping before a
// restart or a re-check is the same loop, and its back-off may be a minute by now), but a new one must confirm it.
func crashLoopSince(st ExecStatus, release string, minHealthy time.Duration, start time.Time) error {
	n := 0
	for i := len(st.Exits) - 1; i >= 0 && st.Exits[i].Ran < minHealthy; i-- {
		n++
	}
	if n < crashLoopExits || st.Exits[len(st.Exits)-1].At.Before(start) {
		return nil
	}
	return &CrashLoopError{Release: release, Last: st.Exits[len(st.Exits)-1], Restarts: st.Restarts, MinHealthy: minHealthy}
}

// watchCrashLoop runs check (a health check) while watching sup: a crash loop ends the check at once and is the
// answer, since "connection refused" from the check would hide why; a failed check carries the last exit.
func watchCrashLoop(ctx context.Context, sup *Supervisor, release string, minHealthy time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	start := time.Now()
	crash := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			changed := sup.Changed()
			if err := crashLoopSince(sup.Status(), release, minHealthy, start); err != nil {
				crash <- err
				cancel(err)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
		}
	}()
	err := check(ctx)
	cancel(nil)
	<-done
	select {
	case cerr := <-crash:
		return cerr
	default:
	}
	if err != nil {
		if st := sup.Status(); len(st.Exits) > 0 && !st.Exits[len(st.Exits)-1].At.Before(start) {
			return fmt.Errorf("%w; the Exec process exited meanwhile: %s", err, exitText(st.Exits[len(st.Exits)-1], st.Restarts))
		}
	}
	return err
}

// isCrashLoop reports whether err names a crash loop.
func isCrashLoop(err error) bool {
	var ce *CrashLoopError
	return errors.As(err, &ce)
}

// waitExecStable is the health of a release without a health check: its Exec processes (if it has any) stay up
// for the environment's minimum healthy time.
func (w *envWorker) waitExecStable(ctx context.Context, e *raftfsm.Env, l *Lifecycle, dlog *deployLog) error {
	if !l.Hooks.has(PhaseExec) {
		return nil
	}
	minHealthy := w.d.minHealthyFor(e)
	dlog.Notef("=== Health: the Exec processes stay up for %s (the minimum healthy time)", minHealthy)
	err := waitExecStable(ctx, w.sup, l.Release, minHealthy, max(DefaultHealthDeadline, 3*minHealthy))
	result := "healthy"
	if err != nil {
		result = "failed"
	}
	w.d.m.healthChecks.WithLabelValues(w.app, w.env, result).Inc()
	return err
}

// watchCrashLoop runs a release's health check while watching its Exec processes for a crash loop.
func (w *envWorker) watchCrashLoop(ctx context.Context, e *raftfsm.Env, l *Lifecycle, check func(context.Context) error) error {
	if !l.Hooks.has(PhaseExec) {
		return check(ctx)
	}
	return watchCrashLoop(ctx, w.sup, l.Release, w.d.minHealthyFor(e), check)
}
