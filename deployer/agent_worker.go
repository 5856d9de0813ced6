package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/shoal-ci/shoal/manifest"
	"github.com/shoal-ci/shoal/raftfsm"
)

// envWorker makes this node's installation of one environment match what the replicated state asks for.
// It is the only writer of its environment directory, so lifecycles of one environment never overlap.
type envWorker struct {
	d        *Deployer
	app, env string
	dir      string
	sup      *Supervisor
	log      *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	// Retry state for installs that no running deployment decides on.
	failKey  string
	failures int
	nextTry  time.Time
}

func (d *Deployer) newWorker(app, env string) *envWorker {
	w := &envWorker{d: d, app: app, env: env, dir: d.EnvDir(app, env), sup: d.supervisor(app, env),
		log: d.log.With("app", app, "env", env), done: make(chan struct{})}
	w.ctx, w.cancel = context.WithCancel(d.ctx)
	return w
}

func (w *envWorker) stop() {
	w.cancel()
	<-w.done
}

func (w *envWorker) run() {
	defer w.d.wg.Done()
	defer close(w.done)
	for {
		changed := w.d.n.FSM().Changed()
		again := w.step()
		if again <= 0 {
			again = resyncInterval
		}
		t := time.NewTimer(again)
		select {
		case <-w.ctx.Done():
			t.Stop()
			return
		case <-changed:
			settle(w.ctx)
		case <-t.C:
		}
		t.Stop()
	}
}

// settleTime is how long a loop woken by a change of the state waits before it reads the state again. Every
// node applies every write, and during a deployment to N servers there are several writes per server: a loop
// that read the state at each one did O(N) reads per deployment on each of N nodes. Waiting a moment turns a
// burst of writes into one read, at the cost of that moment of latency per step.
const settleTime = 50 * time.Millisecond

// settle waits settleTime, or until ctx ends.
func settle(ctx context.Context) {
	t := time.NewTimer(settleTime)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// view is what one step needs from the replicated state, copied out under the read lock.
type view struct {
	found    bool
	t        target
	env      raftfsm.Env
	rel      *raftfsm.Release
	manifest string // the app's manifest path
}

func (w *envWorker) read() view {
	me := w.d.n.Name()
	var v view
	w.d.n.FSM().Read(func(s *raftfsm.State) {
		e := s.Envs[w.env]
		if e == nil || e.App != w.app {
			return
		}
		v.found = true
		v.env = *e
		v.env.Vars = maps.Clone(e.Vars)
		v.t = desiredFor(s, e, me)
		if d := v.t.Dep; d != nil {
			c := *d
			c.Batches = nil
			c.Nodes = map[string]*raftfsm.NodeStatus{}
			if st := d.Nodes[me]; st != nil {
				cp := *st
				c.Nodes[me] = &cp
			}
			v.t.Dep = &c
		}
		if v.t.Release != "" {
			if r := s.Releases[raftfsm.ReleaseKey(e.App, v.t.Release)]; r != nil {
				c := *r
				c.Pieces = slices.Clone(r.Pieces)
				c.Holders = slices.Clone(r.Holders)
				v.rel = &c
			}
		}
		if a := s.Apps[e.App]; a != nil {
			v.manifest = a.Manifest
		}
	})
	return v
}

// step does at most one piece of work and returns how soon it wants to look again without a change. Work
// that takes time runs under guard, so it ends as soon as the state stops asking for it.
func (w *envWorker) step() time.Duration {
	v := w.read()
	if !v.found || v.t.Kind == "" {
		return 0
	}
	rec, cur, todo := w.plan(v)
	t := v.t

	switch todo {
	case workNone:
		return 0
	case workRunOp:
		w.guarded(t, func(ctx context.Context) { w.runOp(ctx, t, v, rec, cur) })
		return 0
	case workEnsureRunning:
		w.ensureRunning(v, rec)
		return 0
	case workCheck:
		// Installed earlier (an agent restart, or this release was already here): it only has to prove healthy.
		w.guarded(t, func(ctx context.Context) { w.check(ctx, t, v, rec) })
		return 0
	case workInstall:
		w.guarded(t, func(ctx context.Context) { _ = w.install(ctx, t, v, cur) })
		return 0
	}
	// workConverge: the environment's release, outside any deployment, with back-off after a failure.
	key := t.Release
	if now := time.Now(); key == w.failKey && now.Before(w.nextTry) {
		return w.nextTry.Sub(now)
	}
	w.d.noteRepair(w.env, rec, cur, t.Release) // so the report shows the drift even if the repair is quick
	var err2 error
	w.guarded(t, func(ctx context.Context) {
		err2 = w.install(ctx, t, v, cur)
		if err2 != nil && interrupted(ctx) != nil {
			err2 = nil // the state moved on: look again at once, with no back-off
		}
	})
	if err2 != nil {
		if key != w.failKey {
			w.failKey, w.failures = key, 0
		}
		w.failures++
		backoff := w.d.opts.RetryBackoff << min(w.failures-1, 16)
		backoff = min(backoff, w.d.opts.MaxRetryBackoff)
		w.nextTry = time.Now().Add(backoff)
		w.log.Warn("install failed; retrying later", "release", key, "retry_in", backoff, "err", err2)
		return backoff
	}
	w.failKey, w.failures = "", 0
	return 0
}

// work is what one step of a worker does (decide).
type work int

const (
	workNone          work = iota // nothing: all is done, or the orchestrator decides what follows a failure
	workRunOp                     // the target's restart or terminate lifecycle once (for kindStopped: terminate)
	workEnsureRunning             // the release is installed: only make sure its Exec is supervised
	workCheck                     // installed for a running deployment: prove it healthy without installing again
	workInstall                   // install the release for a running deployment, reporting to it
	workConverge                  // install the environment's release outside any deployment, with back-off
)

// decide is what a worker does for target t, given this server's install record (nil: none), the release
// directory `current` points to ("" none) and this server's status in t's deployment (st). It is the whole
// decision of step, from the state and the disk alone.
func decide(t target, rec *installRecord, cur, st string) work {
	switch t.Kind {
	case "":
		return workNone
	case kindStopped:
		if rec != nil && !rec.Terminated && rec.Dir == cur && cur != "" {
			return workRunOp
		}
		return workNone
	case raftfsm.DeployKindRestart, raftfsm.DeployKindTerminate:
		if st == raftfsm.NodeHealthy || st == raftfsm.NodeFailed {
			return workNone
		}
		return workRunOp
	}
	installed := rec != nil && rec.Release == t.Release && rec.Dir == cur && !rec.Terminated
	if installed && t.Live && t.Dep.Force && rec.Deployment != t.Dep.ID {
		installed = false
	}
	switch {
	case t.Live && st == raftfsm.NodeFailed:
		return workNone // the orchestrator decides what follows a failure
	case t.Live && installed && st == raftfsm.NodeHealthy:
		return workEnsureRunning
	case t.Live && installed:
		return workCheck
	case t.Live:
		return workInstall
	case installed:
		return workEnsureRunning
	}
	return workConverge
}

// plan reads this server's install record and `current` link, and decides what to do for v.
func (w *envWorker) plan(v view) (rec *installRecord, cur string, todo work) {
	rec, err := loadRecord(w.dir)
	if err != nil {
		w.log.Error("read install record; installing again", "err", err)
	}
	cur = currentBase(w.dir)
	return rec, cur, decide(v.t, rec, cur, statusOf(v.t.Dep, w.d.n.Name()))
}

// guarded runs fn under a guard of t.
func (w *envWorker) guarded(t target, fn func(ctx context.Context)) {
	ctx, stop := w.guard(t)
	defer stop()
	fn(ctx)
}

// envVars is the environment's variables as KEY=value, sorted for a stable Exec spec hash.
func envVars(e *raftfsm.Env) []string {
	keys := slices.Sorted(maps.Keys(e.Vars))
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+e.Vars[k].Value)
	}
	return out
}

// lifecycle builds the runner of one release of this environment.
func (w *envWorker) lifecycle(e *raftfsm.Env, rel releaseInfo, m *manifest.Manifest, installDir, deployment string) *Lifecycle {
	return &Lifecycle{
		App: w.app, Env: w.env, Release: rel.Version, Build: rel.Build, Commit: rel.Commit, Branch: rel.Branch,
		Node: w.d.n.Name(), Deployment: deployment,
		EnvDir: w.dir, InstallDir: installDir,
		Vars: envVars(e), BaseEnv: w.d.opts.BaseEnv, Hooks: HooksOf(m),
		OpenArchive: func() (io.ReadCloser, error) { return w.d.opts.Fetcher.Open(rel.Digest) },
		Supervisor:  w.sup, Exec: w.d.opts.Exec, Logger: w.log,
	}
}

// install fetches, installs, starts and health-checks the target release, reporting each state to the
// target's deployment (when there is one).
func (w *envWorker) install(ctx context.Context, t target, v view, cur string) (err error) {
	start := time.Now()
	depID := t.depID()
	rep := w.reporter(depID, t.Release, t.Servers)
	defer rep.Close()
	dlog := w.openLog(depID, t.Release)
	defer dlog.Close()
	defer func() {
		result := "ok"
		if cause := interrupted(ctx); err != nil && cause != nil {
			result = "interrupted"
			dlog.Notef("%v (during: %v)", cause, err)
			w.log.Info("install interrupted", "release", t.Release, "deployment", depID, "why", cause)
		} else if err != nil {
			result = "failed"
			dlog.Notef("FAILED: %v", err)
			rep.Set(raftfsm.NodeStatus{State: raftfsm.NodeFailed, Error: trimErr(err)})
		} else {
			w.d.m.installTime.WithLabelValues(w.app, w.env).Observe(time.Since(start).Seconds())
		}
		w.d.m.installs.WithLabelValues(w.app, w.env, result).Inc()
	}()
	if v.rel == nil {
		return fmt.Errorf("release %s of app %s is not in the mesh's records (deleted?)", t.Release, w.app)
	}
	rel := releaseOf(v.rel)
	dlog.Notef("deploying %s release %s (archive %.12s, %d bytes) on %s", w.app, rel.Version, rel.Digest, v.rel.Size, w.d.n.Name())

	rep.Set(raftfsm.NodeStatus{State: raftfsm.NodeDownloading, Phase: "Fetch"})
	var lastReport time.Time
	progress := func(done, total int64) {
		if now := time.Now(); now.Sub(lastReport) >= w.d.opts.ProgressInterval || done == total {
			lastReport = now
			p := 1.0
			if total > 0 {
				p = float64(done) / float64(total)
			}
			rep.Set(raftfsm.NodeStatus{State: raftfsm.NodeDownloading, Phase: "Fetch", Progress: p})
		}
	}
	if err := w.fetch(ctx, t, v.rel, rep, dlog, progress); err != nil {
		return fmt.Errorf("fetch release %s: %w", rel.Version, err)
	}
	dlog.Notef("fetched in %s", time.Since(start).Round(time.Millisecond))
	name, data, m, err := w.manifestOf(rel.Digest, v.manifest)
	if err != nil {
		return err
	}
	rep.Set(raftfsm.NodeStatus{State: raftfsm.NodeInstalling, Progress: 1})
	installDir := installDirFor(w.dir, rel.Version, cur)
	l := w.lifecycle(&v.env, rel, m, installDir, depID)
	l.OnPhase = func(phase string) {
		dlog.Phase(phase, l)
		rep.Set(raftfsm.NodeStatus{State: stateOfPhase(phase), Phase: phase, Progress: 1})
	}
	err = l.Deploy(ctx)
	dlog.EndPhase(l)
	if err != nil {
		return err
	}
	rec := &installRecord{Release: rel.Version, Dir: baseName(installDir), Deployment: depID, Digest: rel.Digest,
		Build: rel.Build, Commit: rel.Commit, Branch: rel.Branch, ManifestName: name, Manifest: string(data)}
	if err := saveRecord(w.dir, rec); err != nil {
		return err
	}
	if err := pruneReleases(w.dir, w.d.opts.Keep); err != nil {
		w.log.Warn("remove old releases", "err", err)
	}
	rep.Set(raftfsm.NodeStatus{State: raftfsm.NodeStarting, Phase: PhaseHealth, Progress: 1})
	if err := w.waitHealthy(ctx, &v.env, l, m, dlog); err != nil {
		return err
	}
	dlog.Notef("healthy after %s", time.Since(start).Round(time.Millisecond))
	rep.Set(raftfsm.NodeStatus{State: raftfsm.NodeHealthy, Progress: 1})
	return nil
}

// waitHealthy runs the manifest's health check; a release without one is healthy once started.
func (w *envWorker) waitHealthy(ctx context.Context, e *raftfsm.Env, l *Lifecycle, m *manifest.Manifest, dlog *deployLog) error {
	spec := HealthOf(m)
	if spec == nil {
		return w.waitExecStable(ctx, e, l, dlog)
	}
	dlog.Notef("=== Health: %s", firstLine(strings.TrimSpace(spec.URL+spec.Command)))
	err := w.watchCrashLoop(ctx, e, l, func(ctx context.Context) error { return WaitHealthy(ctx, l.HealthSpec(*spec)) })
	var he *HealthError
	if errors.As(err, &he) && spec.Command != "" {
		he.Check = "`" + firstLine(spec.Command) + "`" // not the environment preamble HealthSpec added
	}
	result := "healthy"
	if err != nil {
		result = "failed"
	}
	w.d.m.healthChecks.WithLabelValues(w.app, w.env, result).Inc()
	if err != nil && !isCrashLoop(err) {
		return fmt.Errorf("release %s started but is not healthy: %w", l.Release, err)
	}
	return err
}

// check proves an installed release healthy for a running deployment, without installing it again.
func (w *envWorker) check(ctx context.Context, t target, v view, rec *installRecord) {
	rep := w.reporter(t.Dep.ID, t.Release, t.Servers)
	defer rep.Close()
	dlog := w.openLog(t.Dep.ID, t.Release)
	defer dlog.Close()
	dlog.Notef("release %s is already installed on %s; checking its health", rec.Release, w.d.n.Name())
	rep.Set(raftfsm.NodeStatus{State: raftfsm.NodeStarting, Phase: PhaseHealth, Progress: 1})
	m, err := rec.parse()
	if err == nil {
		l := w.lifecycle(&v.env, rec.info(), m, "", t.Dep.ID)
		if err = l.useCurrent(); err == nil {
			if err = w.ensureRunningWith(l); err == nil {
				err = w.waitHealthy(ctx, &v.env, l, m, dlog)
			}
		}
	}
	if cause := interrupted(ctx); err != nil && cause != nil {
		dlog.Notef("%v (during: %v)", cause, err)
		return
	}
	if err != nil {
		dlog.Notef("FAILED: %v", err)
		rep.Set(raftfsm.NodeStatus{State: raftfsm.NodeFailed, Progress: 1, Error: trimErr(err)})
		return
	}
	rep.Set(raftfsm.NodeStatus{State: raftfsm.NodeHealthy, Progress: 1})
}

// ensureRunning starts supervising the installed release's Exec again when nothing supervises it: an agent
// killed between stopping the old process and starting the new one, for example.
func (w *envWorker) ensureRunning(v view, rec *installRecord) {
	if w.sup.Running() {
		return
	}
	m, err := rec.parse()
	if err != nil {
		w.log.Error("read the installed release's manifest", "err", err)
		return
	}
	l := w.lifecycle(&v.env, rec.info(), m, "", rec.Deployment)
	if err := l.useCurrent(); err != nil {
		return
	}
	if err := w.ensureRunningWith(l); err != nil {
		w.log.Error("start the installed release's exec", "release", rec.Release, "err", err)
	}
}

func (w *envWorker) ensureRunningWith(l *Lifecycle) error {
	if !l.Hooks.has(PhaseExec) || w.sup.Running() {
		return nil
	}
	w.log.Info("exec of the installed release is not supervised; starting it", "release", l.Release)
	return w.sup.Start(l.ExecSpec())
}

// runOp runs a restart or terminate deployment's lifecycle once on this node.
// Without a deployment (kindStopped: the environment was terminated while this server was away) it terminates
// the installed release, logging to the converge log.
func (w *envWorker) runOp(ctx context.Context, t target, v view, rec *installRecord, cur string) {
	depID := t.depID()
	kind := t.Kind
	if kind == kindStopped {
		kind = raftfsm.DeployKindTerminate
	}
	rep := w.reporter(depID, "", t.Servers)
	if rec != nil {
		rep.release = rec.Release
	}
	defer rep.Close()
	dlog := w.openLog(depID, "stopped")
	defer dlog.Close()
	if rec == nil || cur == "" || rec.Dir != cur {
		if kind == raftfsm.DeployKindTerminate {
			dlog.Notef("no release is installed on %s: nothing to terminate", w.d.n.Name())
			rep.Set(raftfsm.NodeStatus{State: raftfsm.NodeHealthy, Progress: 1})
			return
		}
		err := errors.New("no release is installed on this server: deploy one before restarting")
		dlog.Notef("FAILED: %v", err)
		rep.Set(raftfsm.NodeStatus{State: raftfsm.NodeFailed, Error: err.Error()})
		return
	}
	dlog.Notef("%s of %s release %s on %s", kind, w.app, rec.Release, w.d.n.Name())
	rep.Set(raftfsm.NodeStatus{State: raftfsm.NodeStarting})
	err := func() error {
		m, err := rec.parse()
		if err != nil {
			return err
		}
		l := w.lifecycle(&v.env, rec.info(), m, "", depID)
		l.OnPhase = func(phase string) {
			dlog.Phase(phase, l)
			rep.Set(raftfsm.NodeStatus{State: raftfsm.NodeStarting, Phase: phase})
		}
		if kind == raftfsm.DeployKindTerminate {
			err = l.Terminate(ctx)
			dlog.EndPhase(l)
			if err != nil {
				return err
			}
			rec.Terminated = true
			return saveRecord(w.dir, rec)
		}
		err = l.Restart(ctx)
		dlog.EndPhase(l)
		if err != nil {
			return err
		}
		if rec.Terminated {
			rec.Terminated = false
			if err := saveRecord(w.dir, rec); err != nil {
				return err
			}
		}
		return w.waitHealthy(ctx, &v.env, l, m, dlog)
	}()
	if cause := interrupted(ctx); err != nil && cause != nil {
		dlog.Notef("%v (during: %v)", cause, err)
		return
	}
	if err != nil {
		dlog.Notef("FAILED: %v", err)
		rep.Set(raftfsm.NodeStatus{State: raftfsm.NodeFailed, Error: trimErr(err)})
		return
	}
	dlog.Notef("done")
	rep.Set(raftfsm.NodeStatus{State: raftfsm.NodeHealthy, Progress: 1})
}

// manifestOf reads and parses the manifest inside a release's archive.
func (w *envWorker) manifestOf(digest, path string) (string, []byte, *manifest.Manifest, error) {
	rc, err := w.d.opts.Fetcher.Open(digest)
	if err != nil {
		return "", nil, nil, fmt.Errorf("open release archive: %w", err)
	}
	defer rc.Close()
	name, data, err := ReadManifest(rc, path)
	if err != nil {
		return "", nil, nil, err
	}
	m, err := manifest.Parse(name, data)
	if err != nil {
		return "", nil, nil, fmt.Errorf("the release's manifest: %w", err)
	}
	return name, data, m, nil
}

// PhaseHealth is the health check after a start, as statuses and logs name it.
const PhaseHealth = "Health"

// stateOfPhase is the node state a deploy is in while a phase runs: installing until the release is on
// disk, starting from the stop of the old process on.
func stateOfPhase(phase string) string {
	switch phase {
	case PhaseEnv, PhasePreInstall, PhaseInstall, PhaseExtract, PhasePostInstall:
		return raftfsm.NodeInstalling
	}
	return raftfsm.NodeStarting
}

// trimErr keeps an error short enough for the replicated record; the full text is in the node's log.
func trimErr(err error) string {
	s := err.Error()
	if len(s) > 2048 {
		s = s[:2048] + "…"
	}
	return s
}

// sortedKeys is for deterministic output.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
