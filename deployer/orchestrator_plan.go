package deployer

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// EnvServers lists the servers of environment e that gossip shows up now (alive or suspect): those named
// by e.Servers and those whose tags match e.Tags, sorted by name. A deployment's batches are made of them;
// a server that is down now converges by itself when it comes back.
func EnvServers(e *raftfsm.Env, members []node.Member) []string {
	var out []string
	for _, m := range members {
		if m.Status != node.StatusAlive && m.Status != node.StatusSuspect {
			continue
		}
		if InEnv(e, m.Name, m.Tags) {
			out = append(out, m.Name)
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// Batches splits servers into the batches of a strategy: one batch for "all"; for "rolling", batches of
// BatchSize servers, or of BatchPercent of them (rounded up). A batch is never so large that fewer than
// MinHealthy servers stay out of it, and never empty.
func Batches(servers []string, st raftfsm.Strategy) [][]string {
	n := len(servers)
	if n == 0 {
		return nil
	}
	size := n
	if st.Kind == "rolling" {
		switch {
		case st.BatchSize > 0:
			size = st.BatchSize
		case st.BatchPercent > 0:
			size = (n*st.BatchPercent + 99) / 100
		default:
			size = 1
		}
	}
	if st.MinHealthy > 0 && n-size < st.MinHealthy {
		size = n - st.MinHealthy
	}
	size = max(1, min(size, n))
	var out [][]string
	for i := 0; i < n; i += size {
		out = append(out, slices.Clone(servers[i:min(i+size, n)]))
	}
	return out
}

// NewDeploymentID returns a unique, time-ordered, readable id: <env>-<UTC time>-<random>.
func NewDeploymentID(env string, now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%s-%s", env, now.UTC().Format("20060102-150405"), hex.EncodeToString(b[:]))
}

// NewDeployment describes a deployment of release (or a restart or terminate) to e's servers alive now,
// in batches of strategy (nil: the environment's own).
func NewDeployment(e *raftfsm.Env, members []node.Member, kind, release, by string, force bool, strategy *raftfsm.Strategy, now time.Time) raftfsm.Deployment {
	st := e.Strategy
	if strategy != nil {
		st = *strategy
	}
	if st.Kind == "" {
		st.Kind = "all"
	}
	if kind == "" {
		kind = raftfsm.DeployKindDeploy
	}
	return raftfsm.Deployment{
		ID: NewDeploymentID(e.Name, now), Kind: kind, App: e.App, Env: e.Name, Release: release, By: by, Force: force,
		Strategy: st, State: raftfsm.DeployPending, Batches: Batches(EnvServers(e, members), st),
		Nodes: map[string]*raftfsm.NodeStatus{}, CreatedAt: now.UTC(),
	}
}

// memberView is what the orchestrator knows of a server from gossip.
type memberView struct {
	up    bool
	since time.Time
}

func memberViews(ms []node.Member) map[string]memberView {
	out := make(map[string]memberView, len(ms))
	for _, m := range ms {
		out[m.Name] = memberView{up: m.Status == node.StatusAlive || m.Status == node.StatusSuspect, since: m.Since}
	}
	return out
}

// action is one write the orchestrator decided on, with what to count once it is applied.
type action struct {
	cmd  raftfsm.Command
	why  string
	done func()
}

// planner decides the orchestrator's writes from the replicated state, gossip and the clock. It is pure,
// so the rules can be tested without a cluster; the orchestrator applies its actions in order.
type planner struct {
	members   map[string]memberView
	all       []node.Member
	now       time.Time
	deadAfter time.Duration
	m         *metrics
}

// plan returns the writes that move the state forward, for every unfinished deployment first (in
// creation order), then auto deploys and promotions.
func (p *planner) plan(s *raftfsm.State) []action {
	var open []*raftfsm.Deployment
	busy := map[string]bool{}           // environments with an unfinished deployment
	for _, d := range s.OpenDeploys() { // oldest first
		open = append(open, d)
		busy[d.Env] = true
	}
	var out []action
	for _, d := range open {
		e := s.Envs[d.Env]
		if e == nil || e.App != d.App {
			continue // the environment was deleted: the deployment stays as it was, as history
		}
		out = append(out, p.advance(s, e, d)...)
	}
	out = append(out, p.autoDeploys(s, busy)...)
	out = append(out, p.promotions(s, busy)...)
	return out
}

// advance decides the next step of one unfinished deployment.
func (p *planner) advance(s *raftfsm.State, e *raftfsm.Env, d *raftfsm.Deployment) []action {
	switch d.State {
	case raftfsm.DeployPending:
		if len(d.Batches) == 0 {
			return p.finish(e, d, raftfsm.DeploySucceeded, "", "no server of the environment was up: servers converge when they come up")
		}
		return []action{{cmd: &raftfsm.DeployUpdate{ID: d.ID, State: raftfsm.DeployRunning, Batch: 0, At: p.now,
			From: []string{raftfsm.DeployPending}}, why: "start batch 1"}}
	case raftfsm.DeployRunning:
	default:
		return nil // waiting for approval
	}
	if d.Batch < 0 || d.Batch >= len(d.Batches) {
		return p.finish(e, d, raftfsm.DeployFailed, fmt.Sprintf("batch %d does not exist (%d batches)", d.Batch, len(d.Batches)), "")
	}
	var out []action
	var failed []string
	var total int
	reasons := map[string]string{} // failures decided in this plan, not yet in d.Nodes
	for i := 0; i <= d.Batch; i++ {
		for _, name := range d.Batches[i] {
			total++
			st := d.Nodes[name]
			if st != nil && st.State == raftfsm.NodeFailed {
				failed = append(failed, name)
				continue
			}
			if st != nil && st.State == raftfsm.NodeHealthy {
				continue
			}
			// A server of a started batch that stays down would hold the deployment forever.
			mv, known := p.members[name]
			since := d.CreatedAt
			if known {
				since = mv.since
			}
			if (!known || !mv.up) && p.now.Sub(since) >= p.deadAfter {
				failed = append(failed, name)
				reasons[name] = fmt.Sprintf("the server has been down for %s (gossip)", p.now.Sub(since).Round(time.Second))
				out = append(out, action{cmd: &raftfsm.NodeStatusSet{ID: d.ID, Node: name, Status: raftfsm.NodeStatus{
					State: raftfsm.NodeFailed, Error: reasons[name], UpdatedAt: p.now}}, why: "server down"})
				continue
			}
			if why := p.noProgress(s, e, d, name); why != "" {
				failed = append(failed, name)
				reasons[name] = why
				fail := raftfsm.NodeStatus{State: raftfsm.NodeFailed, Error: why, UpdatedAt: p.now}
				if st != nil {
					fail.Phase, fail.Release, fail.Progress = st.Phase, st.Release, st.Progress
				}
				out = append(out, action{cmd: &raftfsm.NodeStatusSet{ID: d.ID, Node: name, Status: fail}, why: "no progress: " + why})
			}
		}
	}
	if len(failed) > d.Strategy.AbortAfter {
		return append(out, p.abort(s, e, d, failed, reasons, total)...)
	}
	for _, name := range d.Batches[d.Batch] {
		st := d.Nodes[name]
		if (st == nil || st.State != raftfsm.NodeHealthy) && !slices.Contains(failed, name) {
			return out // the batch is still working
		}
	}
	if d.Batch+1 < len(d.Batches) {
		if d.Strategy.MinHealthy > 0 {
			healthy := 0
			for i := 0; i <= d.Batch; i++ {
				for _, name := range d.Batches[i] {
					if st := d.Nodes[name]; st != nil && st.State == raftfsm.NodeHealthy {
						healthy++
					}
				}
			}
			for _, b := range d.Batches[d.Batch+2:] {
				for _, name := range b {
					if mv := p.members[name]; mv.up {
						healthy++
					}
				}
			}
			if healthy < d.Strategy.MinHealthy {
				return append(out, p.finish(e, d, raftfsm.DeployFailed, fmt.Sprintf(
					"starting batch %d would leave %d servers healthy, fewer than min_healthy %d", d.Batch+2, healthy, d.Strategy.MinHealthy), "")...)
			}
		}
		return append(out, action{cmd: &raftfsm.DeployUpdate{ID: d.ID, State: raftfsm.DeployRunning, Batch: d.Batch + 1, At: p.now,
			From: []string{raftfsm.DeployRunning}},
			why: fmt.Sprintf("batch %d healthy; start batch %d", d.Batch+1, d.Batch+2)})
	}
	note := ""
	if len(failed) > 0 {
		note = fmt.Sprintf("%d server(s) failed, within abort_after %d: %s", len(failed), d.Strategy.AbortAfter, strings.Join(failed, ", "))
	}
	return append(out, p.finish(e, d, raftfsm.DeploySucceeded, "", note)...)
}

// abort ends a deployment that had too many failures, rolling back when the strategy says so.
func (p *planner) abort(s *raftfsm.State, e *raftfsm.Env, d *raftfsm.Deployment, failed []string, reasons map[string]string, total int) []action {
	var why []string
	for _, name := range failed {
		msg := "failed"
		if st := d.Nodes[name]; st != nil && st.Error != "" {
			msg = st.Error
		} else if r := reasons[name]; r != "" {
			msg = r
		}
		why = append(why, name+": "+firstLine(msg))
	}
	errText := fmt.Sprintf("%d of %d servers failed (abort_after %d): %s", len(failed), total, d.Strategy.AbortAfter, strings.Join(why, "; "))
	if d.Kind != raftfsm.DeployKindDeploy || !d.Strategy.AutoRollback {
		return p.finish(e, d, raftfsm.DeployFailed, errText, "")
	}
	if e.Stable == "" || e.Stable == d.Release {
		return p.finish(e, d, raftfsm.DeployFailed, errText+"; no earlier stable release to roll back to", "")
	}
	if _, ok := s.Releases[raftfsm.ReleaseKey(e.App, e.Stable)]; !ok {
		return p.finish(e, d, raftfsm.DeployFailed, errText+"; the stable release "+e.Stable+" no longer exists", "")
	}
	reason := fmt.Sprintf("automatic rollback to %s after deployment %s of %s failed", e.Stable, d.ID, d.Release)
	out := []action{{cmd: &raftfsm.EnvPin{Name: e.Name, Pinned: true, Reason: reason}, why: "pin after a failed deployment"}}
	// The rollback deployment is created in the entry that ends this one: no leader can end a deployment
	// rolled_back and die before its rollback exists, and the record names it (`--wait` follows it).
	rb := NewDeployment(e, p.all, raftfsm.DeployKindDeploy, e.Stable, "auto-rollback of "+d.ID, false,
		&raftfsm.Strategy{Kind: "all", AbortAfter: 1 << 20}, p.now)
	end := p.finish(e, d, raftfsm.DeployRolledBack, errText+"; rolling back to "+e.Stable+" in deployment "+rb.ID, "")
	end[0].cmd.(*raftfsm.DeployUpdate).Rollback = &rb
	end[0].why = reason
	app, env, counted := e.App, e.Name, end[0].done
	end[0].done = func() {
		counted()
		if p.m != nil {
			p.m.rollbacks.WithLabelValues(app, env).Inc()
		}
	}
	return append(out, end...)
}

// DefaultProgressDeadline is how long a server of a started batch may go without progress when its
// environment does not say (raftfsm.Env.ProgressDeadline), as Nomad's progress_deadline.
const DefaultProgressDeadline = 10 * time.Minute

// ProgressDeadline is environment e's progress deadline.
func ProgressDeadline(e *raftfsm.Env) time.Duration {
	if e.ProgressDeadline > 0 {
		return time.Duration(e.ProgressDeadline)
	}
	return DefaultProgressDeadline
}

// noProgress says, in words, why server name has made no progress in deployment d for longer than its
// environment's progress deadline: app, release, phase and cause. It returns "" while the server is in time.
func (p *planner) noProgress(s *raftfsm.State, e *raftfsm.Env, d *raftfsm.Deployment, name string) string {
	limit := ProgressDeadline(e)
	since := d.BatchStartedAt
	if since.IsZero() {
		since = d.CreatedAt
	}
	st := d.Nodes[name]
	if st != nil && st.UpdatedAt.After(since) {
		since = st.UpdatedAt
	}
	if p.now.Sub(since) < limit {
		return ""
	}
	what := d.Kind + " of " + d.App
	if d.Release != "" {
		what = d.App + " release " + d.Release
	}
	head := fmt.Sprintf("%s on %s: no progress for %s (progress deadline %s)", what, name, p.now.Sub(since).Round(time.Second), limit)
	if st == nil {
		return head + ": the server's agent reported nothing since its batch started (is it running and caught up with the leader?)"
	}
	phase := st.Phase
	if phase == "" {
		phase = st.State
	}
	var cause string
	switch phase {
	case "Fetch":
		cause = fmt.Sprintf("the download stalled at %.0f%%", st.Progress*100)
		if r := s.Releases[raftfsm.ReleaseKey(d.App, d.Release)]; r != nil {
			var up []string
			for _, h := range r.Holders {
				if mv, ok := p.members[h]; ok && mv.up && h != name {
					up = append(up, h)
				}
			}
			if len(up) == 0 {
				cause += fmt.Sprintf(": no server that is up holds the archive (holders: %s); push the release again or deploy another", strings.Join(r.Holders, ", "))
			}
		}
	case PhaseHealth:
		cause = "the health check has not passed"
		// What the server reports its Exec processes do says why, when they keep exiting (a crash loop whose
		// restarts back off past the deadline is named here rather than by the agent's own crash-loop check).
		if rt := s.Runtimes[raftfsm.RuntimeKey(d.Env, name)]; rt != nil && rt.Release == d.Release &&
			(rt.Health == raftfsm.RuntimeCrashLoop || rt.Health == raftfsm.RuntimeDown) && rt.Detail != "" {
			cause += ": " + rt.Detail
		}
	case PhaseExtract, PhaseStop, PhaseFlip:
		cause = "the " + phase + " step has not finished"
	case PhaseExec:
		cause = "the Exec process has not started"
	default:
		cause = fmt.Sprintf("the %s hook has not finished (`node deployment log %s %s` shows its output)", phase, d.ID, name)
	}
	return fmt.Sprintf("%s in phase %s (%s): %s", head, phase, st.State, cause)
}

// finish ends a deployment; a deploy that succeeded makes its release the environment's desired and stable.
func (p *planner) finish(e *raftfsm.Env, d *raftfsm.Deployment, state, errText, note string) []action {
	// From: a deployment cancelled (or approved) meanwhile is not ended over.
	u := &raftfsm.DeployUpdate{ID: d.ID, State: state, Batch: max(d.Batch, 0), Error: errText, At: p.now, From: []string{d.State}}
	if errText == "" && note != "" {
		u.Error = note
	}
	if state == raftfsm.DeploySucceeded && d.Kind == raftfsm.DeployKindDeploy {
		u.SetDesired = d.Release
	}
	app, env, kind, created := d.App, d.Env, d.Kind, d.CreatedAt
	now := p.now
	return []action{{cmd: u, why: "deployment " + state, done: func() {
		if p.m == nil {
			return
		}
		p.m.deployments.WithLabelValues(app, env, state).Inc()
		if !created.IsZero() {
			p.m.duration.WithLabelValues(app, env, kind).Observe(now.Sub(created).Seconds())
		}
	}}}
}

// autoDeploys creates a deployment for each environment that asks for auto deploy, is not pinned, is
// idle, is not fed by a pipeline, and has not yet seen the newest release of its app's branch.
func (p *planner) autoDeploys(s *raftfsm.State, busy map[string]bool) []action {
	fed := map[string]bool{}
	for app := range s.Pipelines {
		for i, st := range pipelineStages(s, app) {
			if i > 0 {
				fed[st.Env] = true
			}
		}
	}
	var out []action
	for _, name := range sortedKeys(s.Envs) {
		e := s.Envs[name]
		if !e.AutoDeploy || e.Pinned || busy[e.Name] || fed[e.Name] {
			continue
		}
		r := latestRelease(s, e.App)
		if r == nil || r.Version == e.Desired || deployedTo(s, e.Name, r.Version) {
			continue
		}
		d := NewDeployment(e, p.all, raftfsm.DeployKindDeploy, r.Version, "auto-deploy", false, nil, p.now)
		app, env := e.App, e.Name
		out = append(out, action{cmd: &raftfsm.DeployCreate{Deployment: d}, why: "auto deploy of " + r.Version, done: func() {
			if p.m != nil {
				p.m.autoDeploys.WithLabelValues(app, env, "auto_deploy").Inc()
			}
		}})
		busy[e.Name] = true
	}
	return out
}

// latestRelease is the newest release of app built from its branch.
func latestRelease(s *raftfsm.State, app string) *raftfsm.Release {
	a := s.Apps[app]
	if a == nil {
		return nil
	}
	var best *raftfsm.Release
	for _, r := range s.AppReleases(app) {
		// A pull request's release is never picked automatically.
		if r.PullRequest > 0 || (r.Branch != "" && a.Branch != "" && r.Branch != a.Branch) {
			continue
		}
		if best == nil || r.CreateIndex > best.CreateIndex {
			best = r
		}
	}
	return best
}

// deployedTo reports whether any deployment (of any outcome) ever sent version to env.
func deployedTo(s *raftfsm.State, env, version string) bool {
	for _, d := range s.EnvDeploys(env) {
		if d.Kind == raftfsm.DeployKindDeploy && d.Release == version {
			return true
		}
	}
	return false
}

// promotions moves releases along pipelines: the latest release that succeeded in a stage goes to the next
// stage, at once or as a deployment waiting for approval.
//
// A promotion still waiting for approval when a newer release succeeds in the stage before is superseded: it is
// cancelled with a reason naming the newer release, and the newer release waits for approval in its place, so an
// approval never deploys a release older than the one the stage before runs.
func (p *planner) promotions(s *raftfsm.State, busy map[string]bool) []action {
	var out []action
	open := map[string][]*raftfsm.Deployment{} // unfinished deployments by environment
	for _, d := range s.Deploys {
		if !d.Finished() {
			open[d.Env] = append(open[d.Env], d)
		}
	}
	for _, app := range sortedKeys(s.Pipelines) {
		stages := pipelineStages(s, app)
		for i := 1; i < len(stages); i++ {
			prev, next := s.Envs[stages[i-1].Env], s.Envs[stages[i].Env]
			if prev == nil || next == nil || next.Pinned {
				continue
			}
			var waiting *raftfsm.Deployment
			if o := open[next.Name]; len(o) == 1 && o[0].State == raftfsm.DeployWaiting {
				waiting = o[0]
			}
			if busy[next.Name] && waiting == nil {
				continue
			}
			var last *raftfsm.Deployment
			for _, d := range s.EnvDeploys(prev.Name) {
				if d.Kind == raftfsm.DeployKindDeploy && d.State == raftfsm.DeploySucceeded &&
					(last == nil || d.CreateIndex > last.CreateIndex) {
					last = d
				}
			}
			if last == nil || last.Release != prev.Desired || last.Release == next.Desired || deployedTo(s, next.Name, last.Release) {
				continue
			}
			if waiting != nil {
				if waiting.Kind != raftfsm.DeployKindDeploy || s.Releases[raftfsm.ReleaseKey(app, waiting.Release)] == nil ||
					!newerRelease(s, app, last.Release, waiting.Release) {
					continue
				}
				out = append(out, action{cmd: &raftfsm.DeployUpdate{ID: waiting.ID, State: raftfsm.DeployCancelled, At: p.now,
					From: []string{raftfsm.DeployWaiting}, By: "superseded by " + last.Release,
					Error: fmt.Sprintf("superseded: release %s succeeded in %s after this deployment of %s began to wait for approval; %s waits in its place",
						last.Release, prev.Name, waiting.Release, last.Release)},
					why: "supersede " + waiting.Release + " waiting for " + next.Name + " with " + last.Release})
			}
			d := NewDeployment(next, p.all, raftfsm.DeployKindDeploy, last.Release, "promotion from "+prev.Name+" ("+last.ID+")", false, nil, p.now)
			if stages[i].Approval {
				d.State = raftfsm.DeployWaiting
			}
			envName := next.Name
			out = append(out, action{cmd: &raftfsm.DeployCreate{Deployment: d}, why: "promote " + last.Release + " to " + next.Name, done: func() {
				if p.m != nil {
					p.m.autoDeploys.WithLabelValues(app, envName, "promotion").Inc()
				}
			}})
			busy[next.Name] = true
		}
	}
	return out
}

// newerRelease reports whether release a of app was created after release b.
func newerRelease(s *raftfsm.State, app, a, b string) bool {
	ra, rb := s.Releases[raftfsm.ReleaseKey(app, a)], s.Releases[raftfsm.ReleaseKey(app, b)]
	return ra != nil && rb != nil && ra.CreateIndex > rb.CreateIndex
}

// nodesOnRelease counts, per environment, the servers by the release of the latest deployment each
// reported healthy in, among the deployments that succeeded or still run: after a failed, cancelled or rolled
// back one its servers went back to the stable release.
func nodesOnRelease(s *raftfsm.State) map[[3]string]int {
	type best struct {
		idx uint64
		rel string
	}
	per := map[[2]string]best{} // env, node
	app := map[string]string{}
	for _, d := range s.Deploys {
		if d.Kind != raftfsm.DeployKindDeploy || (d.State != raftfsm.DeploySucceeded && d.State != raftfsm.DeployRunning) {
			continue
		}
		app[d.Env] = d.App
		for name, st := range d.Nodes {
			if st.State != raftfsm.NodeHealthy {
				continue
			}
			k := [2]string{d.Env, name}
			if b, ok := per[k]; !ok || d.CreateIndex > b.idx {
				per[k] = best{d.CreateIndex, d.Release}
			}
		}
	}
	out := map[[3]string]int{}
	for k, b := range per {
		if _, ok := s.Envs[k[0]]; !ok {
			continue
		}
		out[[3]string{app[k[0]], k[0], b.rel}]++
	}
	return out
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
