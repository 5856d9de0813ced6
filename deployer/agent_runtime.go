package deployer

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// runtimeInterval is how often the agent looks at what it runs. A report is written only when it differs
// from the one in the state, so this is also the least time between two writes of one environment: a crash
// loop costs a write per restart at most, and the supervisor's back-off spaces the restarts.
const runtimeInterval = time.Second

// runtimeLoop keeps this node's runtime records (what it runs, per environment) equal to what it sees on disk
// and in its supervisors. It is level-triggered like the workers: it compares and writes the difference.
func (d *Deployer) runtimeLoop() {
	defer d.wg.Done()
	t := time.NewTicker(runtimeInterval)
	defer t.Stop()
	r := &runtimeReporter{d: d, m: newRuntimeMetrics(d.opts.Registerer), hasExec: map[string]bool{}, seen: map[string]string{}}
	for {
		// Until the node has replayed its state, "desired" may be an old one: a report would name false drift.
		if d.n.Ready() {
			r.report()
		}
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// envRuntimeView is what the report of one environment needs from the state.
type envRuntimeView struct {
	env     raftfsm.Env
	want    target
	running string // a running deployment of the environment
	old     *raftfsm.Runtime
}

// runtimeMetrics are the report loop's collectors.
type runtimeMetrics struct {
	reports *prometheus.CounterVec // app, env
	drift   *prometheus.GaugeVec   // app, env
}

// newRuntimeMetrics registers the report loop's collectors on reg, or takes the ones a deployer attached to the
// same node before registered.
func newRuntimeMetrics(reg prometheus.Registerer) runtimeMetrics {
	m := runtimeMetrics{
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_runtime_reports_total",
			Help: "Runtime reports (what this node runs for an environment) this node wrote to Raft, by app and environment.",
		}, []string{"app", "env"}),
		drift: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shoal_runtime_drift",
			Help: "1 while this node differs from what it should run for an environment (outside a deployment), else 0.",
		}, []string{"app", "env"}),
	}
	if reg == nil {
		return m
	}
	if err := reg.Register(m.reports); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			m.reports = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	if err := reg.Register(m.drift); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			m.drift = are.ExistingCollector.(*prometheus.GaugeVec)
		}
	}
	return m
}

// runtimeReporter is the state of runtimeLoop between two looks.
type runtimeReporter struct {
	d       *Deployer
	m       runtimeMetrics
	hasExec map[string]bool   // by release digest: does the release's manifest have an Exec section
	seen    map[string]string // by environment: the drift seen at the last look, so one look alone records none
}

func (r *runtimeReporter) report() {
	d, rm := r.d, r.m
	me, tags := d.n.Name(), d.n.Tags()
	var mine []envRuntimeView
	var gone []raftfsm.Runtime
	d.n.FSM().Read(func(s *raftfsm.State) {
		for _, e := range s.Envs {
			old := s.Runtimes[raftfsm.RuntimeKey(e.Name, me)]
			if old != nil {
				c := *old
				old = &c
			}
			if !InEnv(e, me, tags) {
				if old != nil {
					gone = append(gone, *old)
				}
				continue
			}
			v := envRuntimeView{env: *e, want: desiredFor(s, e, me), old: old}
			v.want.Dep = nil
			if dep := runningDeployment(s, e); dep != nil {
				v.running = dep.ID
			}
			mine = append(mine, v)
		}
	})
	for _, v := range mine {
		rt := r.runtimeOf(v)
		drift := 0.0
		if driftOf(v.want, v.running, &rt) != "" {
			drift = 1
		}
		rm.drift.WithLabelValues(v.env.App, v.env.Name).Set(drift)
		if v.old != nil && sameRuntime(*v.old, rt) {
			continue
		}
		if _, err := d.apply(d.ctx, &raftfsm.RuntimeSet{Runtime: rt}); err != nil {
			if d.ctx.Err() == nil {
				d.log.Debug("report runtime; trying again in a second", "env", v.env.Name, "err", err)
			}
			continue
		}
		rm.reports.WithLabelValues(v.env.App, v.env.Name).Inc()
	}
	for _, rt := range gone {
		rm.drift.DeleteLabelValues(rt.App, rt.Env)
		if _, err := d.apply(d.ctx, &raftfsm.RuntimeSet{Runtime: rt, Delete: true}); err != nil && d.ctx.Err() == nil {
			d.log.Debug("remove runtime report of an environment this node left", "env", rt.Env, "err", err)
		}
	}
}

// runningDeployment returns e's running deployment, if any.
func runningDeployment(s *raftfsm.State, e *raftfsm.Env) *raftfsm.Deployment {
	for _, dep := range s.Deploys {
		if dep.Env == e.Name && dep.App == e.App && dep.State == raftfsm.DeployRunning {
			return dep
		}
	}
	return nil
}

// runtimeOf builds this node's report for one environment from its disk and its supervisor.
func (r *runtimeReporter) runtimeOf(v envRuntimeView) raftfsm.Runtime {
	d, hasExec := r.d, r.hasExec
	e := &v.env
	dir := d.EnvDir(e.App, e.Name)
	minHealthy := d.minHealthyFor(e)
	rt := raftfsm.Runtime{Env: e.Name, App: e.App, Node: d.n.Name(), MinHealthy: raftfsm.Duration(minHealthy),
		Procs: []raftfsm.Proc{}, UpdatedAt: time.Now().UTC()}
	rec, err := loadRecord(dir)
	if err != nil {
		rec = nil
	}
	cur := currentBase(dir)
	if rec != nil {
		rt.Installed = rec.Release
	}
	switch {
	case cur == "":
	case rec != nil && rec.Dir == cur:
		rt.Release = rec.Release
	default:
		rt.Release = releaseOfDir(cur)
	}
	// Processes are reported whatever the record says: a process that runs is a fact.
	d.supMu.Lock()
	sup := d.sups[dir]
	d.supMu.Unlock()
	var st ExecStatus
	if sup != nil {
		st = sup.Status()
	}
	for _, p := range st.Procs {
		rt.Procs = append(rt.Procs, raftfsm.Proc{Slot: p.Slot, PID: p.PID, StartedAt: p.StartedAt.UTC()})
	}
	rt.Restarts = st.Restarts
	if n := len(st.Exits); n > 0 {
		x := st.Exits[n-1]
		rt.LastExit = &raftfsm.Exit{Slot: x.Slot, PID: x.PID, Status: x.Status, Ran: raftfsm.Duration(roundRan(x.Ran)), At: x.At.UTC()}
	}
	exec := true
	if rec != nil {
		known, ok := hasExec[rec.Digest]
		if !ok {
			if m, err := rec.parse(); err == nil {
				known = HooksOf(m).has(PhaseExec)
				hasExec[rec.Digest] = known
			} else {
				known = true
			}
		}
		exec = known
	}
	switch {
	case rt.Release == "" && len(rt.Procs) == 0:
		rt.Health, rt.Detail = raftfsm.RuntimeNone, "no release is installed"
	case rec != nil && rec.Terminated && len(rt.Procs) == 0:
		rt.Health, rt.Detail = raftfsm.RuntimeStopped, "terminated"
	case !exec && len(rt.Procs) == 0:
		rt.Health = raftfsm.RuntimeNoExec
	default:
		j := judgeExec(st, minHealthy, time.Now())
		rt.Health, rt.Detail = j.Health, j.Detail
	}
	rt.LastDrift, rt.LastDriftAt = "", time.Time{}
	if v.old != nil {
		rt.LastDrift, rt.LastDriftAt = v.old.LastDrift, v.old.LastDriftAt
	}
	if n, ok := d.repairs.Load(e.Name); ok && n.(driftNote).at.After(rt.LastDriftAt) {
		rt.LastDrift, rt.LastDriftAt = n.(driftNote).reason, n.(driftNote).at
	}
	// A drift is recorded once two looks a second apart see it: an install between its flip and its record, or a
	// state a moment behind the leader, is not one.
	drift := driftOf(v.want, v.running, &rt)
	if drift != "" && drift == r.seen[e.Name] && drift != rt.LastDrift {
		rt.LastDrift, rt.LastDriftAt = drift, time.Now().UTC()
		d.log.Warn("drift: this server differs from its environment's desired state", "app", e.App, "env", e.Name, "drift", drift)
	}
	r.seen[e.Name] = drift
	return rt
}

// driftNote is a drift a worker set out to repair, and when.
type driftNote struct {
	reason string
	at     time.Time
}

// noteRepair records that a worker outside any deployment installs release because this server differs from
// it: the next report carries it as its last drift, even when the repair ends before the report loop looks.
func (d *Deployer) noteRepair(env string, rec *installRecord, cur, release string) {
	var reason string
	switch {
	case cur == "":
		reason = fmt.Sprintf("runs nothing; should run %s", release)
	case rec != nil && rec.Release == release && rec.Dir != cur:
		reason = fmt.Sprintf("current points to %s but the agent installed %s", releaseOfDir(cur), rec.Release)
	case rec != nil && rec.Dir == cur:
		reason = fmt.Sprintf("runs %s; should run %s", rec.Release, release)
	default:
		reason = fmt.Sprintf("runs %s; should run %s", releaseOfDir(cur), release)
	}
	d.repairs.Store(env, driftNote{reason: reason, at: time.Now().UTC()})
	d.log.Warn("repairing drift: installing the release this server should run", "env", env, "drift", reason)
}

// releaseOfDir is the release a directory under releases/ holds: its name, without the "~1" of a second copy.
func releaseOfDir(dir string) string {
	if i := strings.LastIndex(dir, "~"); i > 0 {
		return dir[:i]
	}
	return dir
}

// sameRuntime reports whether two reports say the same, apart from when they were made.
func sameRuntime(a, b raftfsm.Runtime) bool {
	a.UpdatedAt, b.UpdatedAt = time.Time{}, time.Time{}
	a.Meta, b.Meta = raftfsm.Meta{}, raftfsm.Meta{}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// driftOf says how a server's report differs from what it should run now (want, from desiredFor), or "" when it
// does not. While a deployment of the environment runs, servers differ on purpose and nothing is drift.
func driftOf(want target, running string, rt *raftfsm.Runtime) string {
	if running != "" || want.Kind != raftfsm.DeployKindDeploy {
		return ""
	}
	if rt == nil {
		return fmt.Sprintf("no report from this server; it should run %s", want.Release)
	}
	switch {
	case rt.Release == "":
		return fmt.Sprintf("runs nothing; should run %s", want.Release)
	case rt.Release != want.Release:
		return fmt.Sprintf("runs %s; should run %s", rt.Release, want.Release)
	case rt.Installed != "" && rt.Installed != rt.Release:
		return fmt.Sprintf("current points to %s but the agent installed %s", rt.Release, rt.Installed)
	case rt.Health == raftfsm.RuntimeStopped:
		return fmt.Sprintf("stopped; should run %s", want.Release)
	case rt.Health == raftfsm.RuntimeCrashLoop:
		return "Exec is crash-looping: " + rt.Detail
	case rt.Health == raftfsm.RuntimeDown:
		return "Exec processes are down: " + rt.Detail
	}
	return ""
}

// ServerRuntime is one server of an environment as GET /v1/envs/{env} shows it under "runtime": what it
// reports it runs, whether gossip sees it up, and how it differs from what it should run.
type ServerRuntime struct {
	Node string `json:"node"`
	// Up is the server's gossip status (alive, suspect, dead, left) or "unknown".
	Up string `json:"up"`
	// Report is the server's own report (absent until it sent one).
	Report *raftfsm.Runtime `json:"report,omitempty"`
	// Drift says how the server differs from the environment's desired state ("" when it does not).
	Drift string `json:"drift,omitempty"`
	// Deploying names the running deployment of the environment: servers differ from desired on purpose.
	Deploying string `json:"deploying,omitempty"`
}

// envRuntime lists the servers of e with their reports and drift, for the environment's API view.
func envRuntime(s *raftfsm.State, e *raftfsm.Env, members []node.Member) []ServerRuntime {
	up := map[string]string{}
	names := slices.Clone(e.Servers)
	for _, m := range members {
		up[m.Name] = m.Status
		if m.Status != node.StatusLeft && InEnv(e, m.Name, m.Tags) {
			names = append(names, m.Name)
		}
	}
	rts := s.RuntimesOf(e.Name)
	for name := range rts {
		names = append(names, name)
	}
	sort.Strings(names)
	names = slices.Compact(names)
	dep := runningDeployment(s, e)
	out := make([]ServerRuntime, 0, len(names))
	for _, name := range names {
		sr := ServerRuntime{Node: name, Up: up[name]}
		if sr.Up == "" {
			sr.Up = "unknown"
		}
		if rt := rts[name]; rt != nil {
			c := *rt
			sr.Report = &c
		}
		if dep != nil {
			sr.Deploying = dep.ID
		}
		want := desiredFor(s, e, name)
		switch {
		case sr.Up == "unknown" && want.Kind == raftfsm.DeployKindDeploy && dep == nil:
			sr.Drift = fmt.Sprintf("gossip does not see this server; it should run %s", want.Release)
		case sr.Up != node.StatusAlive && sr.Up != node.StatusSuspect && want.Kind == raftfsm.DeployKindDeploy && dep == nil:
			sr.Drift = fmt.Sprintf("server is %s; it should run %s", sr.Up, want.Release)
		default:
			sr.Drift = driftOf(want, sr.Deploying, sr.Report)
		}
		out = append(out, sr)
	}
	return out
}
