package deployer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/errs"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// CreateRequest is the body of POST /v1/envs/{env}/deployments.
type CreateRequest struct {
	// Release is the version to deploy; required for kind deploy, ignored by restart and terminate.
	Release string `json:"release"`
	// Kind is deploy (default), restart or terminate.
	Kind string `json:"kind"`
	// Force deploys even when Release is already the environment's release, installing it again.
	Force bool `json:"force"`
	// Strategy overrides the environment's strategy for this deployment.
	Strategy *raftfsm.Strategy `json:"strategy,omitempty"`
}

// CreateResult answers a request that may start a deployment: the deployment, or Noop and why not.
type CreateResult struct {
	Deployment *raftfsm.Deployment `json:"deployment,omitempty"`
	Noop       bool                `json:"noop,omitempty"`
	Message    string              `json:"message,omitempty"`
}

// RollbackRequest is the body of POST /v1/envs/{env}/rollback.
type RollbackRequest struct {
	// To is the version to go back to; empty means the release before the current one.
	To string `json:"to"`
}

// PromoteRequest is the body of POST /v1/apps/{app}/promote.
type PromoteRequest struct {
	Release string `json:"release"`
	From    string `json:"from"`
	// To is the environment to promote to; empty means the stage after From in the app's pipeline.
	To string `json:"to"`
}

// PinRequest is the body of POST /v1/envs/{env}/pin.
type PinRequest struct {
	Reason string `json:"reason"`
}

// LogResponse is a node's log of one deployment, as GET /v1/deployments/{id}/nodes/{node}/log answers.
type LogResponse struct {
	Node       string `json:"node"`
	Deployment string `json:"deployment"`
	Log        string `json:"log"`
	// Truncated means the log was longer and only its end is shown.
	Truncated bool `json:"truncated,omitempty"`
}

// maxLogBytes bounds the log one answer carries (its end is kept).
const maxLogBytes = 1 << 20

// registerAPI serves the deploy routes and RPCs of the node with d, through a route group that Close takes away;
// a deployer attached again to the same node replaces the handlers.
func (d *Deployer) registerAPI() {
	// h returns an unnamed func type, which converts to the route group's handler type wherever that lives.
	h := func(fn func(*Deployer, http.ResponseWriter, *http.Request) error) func(http.ResponseWriter, *http.Request) error {
		return func(w http.ResponseWriter, r *http.Request) error { return fn(d, w, r) }
	}
	n := d.n
	api := d.http.RouteGroup()
	d.api = api
	api.Handle("POST /v1/envs/{env}/deployments", raftfsm.RoleDeployer, h((*Deployer).postDeployment))
	api.Handle("GET /v1/envs/{env}/deployments", raftfsm.RoleReader, h((*Deployer).listDeployments))
	api.Handle("GET /v1/deployments/{id}", raftfsm.RoleReader, h((*Deployer).getDeployment))
	api.Handle("POST /v1/deployments/{id}/approve", raftfsm.RoleDeployer, h((*Deployer).approve))
	api.Handle("POST /v1/deployments/{id}/cancel", raftfsm.RoleDeployer, h((*Deployer).cancelDeployment))
	api.Handle("GET /v1/deployments/{id}/nodes/{node}/log", raftfsm.RoleReader, h((*Deployer).getLog))
	api.Handle("POST /v1/envs/{env}/rollback", raftfsm.RoleDeployer, h((*Deployer).rollback))
	api.Handle("POST /v1/envs/{env}/pin", raftfsm.RoleDeployer, h(func(d *Deployer, w http.ResponseWriter, r *http.Request) error { return d.pin(w, r, true) }))
	api.Handle("POST /v1/envs/{env}/unpin", raftfsm.RoleDeployer, h(func(d *Deployer, w http.ResponseWriter, r *http.Request) error { return d.pin(w, r, false) }))
	api.Handle("GET /v1/apps/{app}/pipeline", raftfsm.RoleReader, h((*Deployer).getPipeline))
	api.Handle("PUT /v1/apps/{app}/pipeline", raftfsm.RoleAdmin, h((*Deployer).putPipeline))
	api.Handle("POST /v1/apps/{app}/promote", raftfsm.RoleDeployer, h((*Deployer).promote))
	api.Handle("GET /v1/envs/{env}/logs", raftfsm.RoleReader, h((*Deployer).getExecLogs))
	n.Endpoint().HandleRPC(execLogRPC, d.serveExecLogRPC)
	n.Endpoint().HandleRPC(logRPC, d.serveLogRPC)
	d.http.SetEnvRuntime(func(s *raftfsm.State, e *raftfsm.Env, members []node.Member) any {
		return envRuntime(s, e, members)
	})
}

// unregisterAPI takes the routes and RPCs away from the node: they answer 503 until a deployer is attached again.
func (d *Deployer) unregisterAPI() {
	n := d.n
	d.api.Close()
	stopped := func(context.Context, string, json.RawMessage) (any, error) {
		return nil, errs.New(errs.Unavailable, "the deployer is not running on node %s", n.Name())
	}
	n.Endpoint().HandleRPC(execLogRPC, stopped)
	n.Endpoint().HandleRPC(logRPC, stopped)
	d.http.SetEnvRuntime(nil)
}

// who names the caller in the records it starts.
func who(r *http.Request) string {
	if t := api.TokenOf(r); t != nil {
		return t.Name
	}
	return "api"
}

// readLatest makes this node's state include every write the leader had committed when it was called
// (node.ConsistentRead waits for the state machine's own index, so membership entries do not hold it up).
func (d *Deployer) readLatest(r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	return d.n.ConsistentRead(ctx)
}

// envOf copies an environment out of the state after catching up with the leader: what a write is
// decided on (is this release already the desired one? which deployment is running?) must not be stale.
func (d *Deployer) envOf(r *http.Request, name string) (raftfsm.Env, error) {
	if err := d.readLatest(r); err != nil {
		return raftfsm.Env{}, err
	}
	var e raftfsm.Env
	var ok bool
	d.n.FSM().Read(func(s *raftfsm.State) {
		if cur := s.Envs[name]; cur != nil {
			e, ok = *cur, true
		}
	})
	if !ok {
		return raftfsm.Env{}, errs.New(errs.NotFound, "environment %q does not exist: `node env list` shows them", name)
	}
	return e, nil
}

// create writes a new deployment and answers with it.
func (d *Deployer) create(w http.ResponseWriter, r *http.Request, dep raftfsm.Deployment) error {
	res, err := d.n.Apply(r.Context(), &raftfsm.DeployCreate{Deployment: dep}, api.ForRequest(r))
	if err != nil {
		return err
	}
	var out raftfsm.Deployment
	if err := json.Unmarshal(res.Value, &out); err != nil {
		return fmt.Errorf("read the created deployment: %w", err)
	}
	d.http.WriteJSON(w, http.StatusCreated, CreateResult{Deployment: &out})
	return nil
}

func (d *Deployer) postDeployment(w http.ResponseWriter, r *http.Request) error {
	var in CreateRequest
	if err := api.Decode(r, &in); err != nil {
		return err
	}
	e, err := d.envOf(r, r.PathValue("env"))
	if err != nil {
		return err
	}
	switch in.Kind {
	case "", raftfsm.DeployKindDeploy:
		in.Kind = raftfsm.DeployKindDeploy
		if in.Release == "" {
			return errs.New(errs.BadRequest, "a deploy needs a release: `node releases %s` lists them", e.App)
		}
		if in.Release == e.Desired && !in.Force {
			d.http.WriteJSON(w, http.StatusOK, CreateResult{Noop: true,
				Message: fmt.Sprintf("%s is already the release of %s: nothing to do (use --force to install it again)", in.Release, e.Name)})
			return nil
		}
		if err := d.fetchable(e.App, in.Release); err != nil {
			return err
		}
	case raftfsm.DeployKindRestart, raftfsm.DeployKindTerminate:
		in.Release = e.Desired
	default:
		return errs.New(errs.BadRequest, "kind %q is not one of deploy, restart, terminate", in.Kind)
	}
	dep := NewDeployment(&e, d.n.Members(), in.Kind, in.Release, who(r), in.Force, in.Strategy, time.Now())
	return d.create(w, r, dep)
}

func (d *Deployer) listDeployments(w http.ResponseWriter, r *http.Request) error {
	if err := d.http.BeginRead(r); err != nil {
		return err
	}
	env := r.PathValue("env")
	limit, cursor, err := api.PageParams(r, 20)
	if err != nil {
		return err
	}
	after, err := api.IndexCursor(cursor)
	if err != nil {
		return err
	}
	out := []raftfsm.Deployment{}
	exists := false
	d.n.FSM().Read(func(s *raftfsm.State) {
		_, exists = s.Envs[env]
		ds := s.EnvDeploys(env) // the environment's own deployments, oldest first
		for i := len(ds) - 1; i >= 0; i-- {
			out = append(out, copyDeployment(ds[i]))
		}
	})
	if !exists && len(out) == 0 {
		return errs.New(errs.NotFound, "environment %q does not exist", env)
	}
	out, next := api.PageNewest(out, func(d raftfsm.Deployment) uint64 { return d.CreateIndex }, after, limit)
	api.SetNextCursor(w, next)
	d.http.WriteJSON(w, http.StatusOK, out)
	return nil
}

func copyDeployment(d *raftfsm.Deployment) raftfsm.Deployment {
	c := *d
	c.Batches = make([][]string, len(d.Batches))
	for i, b := range d.Batches {
		c.Batches[i] = append([]string(nil), b...)
	}
	c.Nodes = make(map[string]*raftfsm.NodeStatus, len(d.Nodes))
	for k, v := range d.Nodes {
		st := *v
		c.Nodes[k] = &st
	}
	return c
}

// deployment copies one deployment out of the state.
func (d *Deployer) deployment(id string) (raftfsm.Deployment, bool) {
	var out raftfsm.Deployment
	var ok bool
	d.n.FSM().Read(func(s *raftfsm.State) {
		if dep := s.Deploys[id]; dep != nil {
			out, ok = copyDeployment(dep), true
		}
	})
	return out, ok
}

func (d *Deployer) getDeployment(w http.ResponseWriter, r *http.Request) error {
	if err := d.http.BeginRead(r); err != nil {
		return err
	}
	dep, ok := d.deployment(r.PathValue("id"))
	if !ok {
		return errs.New(errs.NotFound, "deployment %q does not exist: `node deployments ENV` lists them", r.PathValue("id"))
	}
	d.http.WriteJSON(w, http.StatusOK, dep)
	return nil
}

// update moves a deployment from one of the states from to state to. The write carries from, so a
// deployment that moved meanwhile (the orchestrator started or ended it) is refused, not overwritten.
func (d *Deployer) update(w http.ResponseWriter, r *http.Request, from []string, to, verb string) error {
	id := r.PathValue("id")
	if err := d.readLatest(r); err != nil {
		return err
	}
	dep, ok := d.deployment(id)
	if !ok {
		return errs.New(errs.NotFound, "deployment %q does not exist", id)
	}
	if !slices.Contains(from, dep.State) {
		return errs.New(errs.Conflict, "deployment %s is %s: only a deployment that is %s can be %s", id, dep.State, strings.Join(from, " or "), verb)
	}
	u := &raftfsm.DeployUpdate{ID: id, State: to, Batch: dep.Batch, Error: dep.Error, At: time.Now().UTC(), By: who(r), From: []string{dep.State}}
	if to == raftfsm.DeployCancelled {
		u.Error = "cancelled by " + who(r)
		if dep.State != raftfsm.DeployRunning {
			// It never started: batch -1 tells the agents that no server is in a started batch.
			u.Batch = -1
		}
	}
	if _, err := d.n.Apply(r.Context(), u, api.ForRequest(r)); err != nil {
		return err
	}
	out, _ := d.deployment(id)
	d.http.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (d *Deployer) approve(w http.ResponseWriter, r *http.Request) error {
	return d.update(w, r, []string{raftfsm.DeployWaiting}, raftfsm.DeployPending, "approved")
}

func (d *Deployer) cancelDeployment(w http.ResponseWriter, r *http.Request) error {
	return d.update(w, r, []string{raftfsm.DeployPending, raftfsm.DeployRunning, raftfsm.DeployWaiting}, raftfsm.DeployCancelled, "cancelled")
}

// rollback deploys an earlier release to an environment and pins it, so auto deploy does not undo it.
// Without a version it undoes the last deployment: one still running is cancelled, and one that failed or
// was cancelled part way is taken back to the environment's release; otherwise the environment goes back to
// the release it ran before its current one.
func (d *Deployer) rollback(w http.ResponseWriter, r *http.Request) error {
	var in RollbackRequest
	if r.ContentLength != 0 {
		if err := api.Decode(r, &in); err != nil {
			return err
		}
	}
	e, err := d.envOf(r, r.PathValue("env"))
	if err != nil {
		return err
	}
	var plan rollbackPlan
	d.n.FSM().Read(func(s *raftfsm.State) { plan = planRollback(s, &e, in.To) })
	if plan.to == "" {
		return errs.New(errs.Conflict, "environment %s has no earlier release to roll back to: name one with --to", e.Name)
	}
	if plan.to == e.Desired && !plan.partial && plan.cancel == nil {
		d.http.WriteJSON(w, http.StatusOK, CreateResult{Noop: true, Message: fmt.Sprintf("%s is already the release of %s", plan.to, e.Name)})
		return nil
	}
	if err := d.fetchable(e.App, plan.to); err != nil {
		return err // before the cancel and the pin: a refused rollback changes nothing
	}
	if c := plan.cancel; c != nil {
		u := &raftfsm.DeployUpdate{ID: c.ID, State: raftfsm.DeployCancelled, Batch: c.Batch, Error: "cancelled by a rollback by " + who(r),
			At: time.Now().UTC(), By: who(r), From: []string{c.State}}
		if c.State != raftfsm.DeployRunning {
			u.Batch = -1
		}
		if _, err := d.n.Apply(r.Context(), u, api.ForRequest(r)); err != nil {
			return err
		}
	}
	reason := fmt.Sprintf("rolled back to %s by %s", plan.to, who(r))
	if _, err := d.n.Apply(r.Context(), &raftfsm.EnvPin{Name: e.Name, Pinned: true, Reason: reason}, api.ForRequest(r)); err != nil {
		return err
	}
	d.m.rollbacks.WithLabelValues(e.App, e.Name).Inc()
	dep := NewDeployment(&e, d.n.Members(), raftfsm.DeployKindDeploy, plan.to, "rollback by "+who(r), false, nil, time.Now())
	return d.create(w, r, dep)
}

// fetchable refuses at once (409, nothing written) a deploy of a release that no server can fetch: its
// archive was collected everywhere, or every server holding it is down. Without the check the deployment
// would sit at "downloading" until its deadline, and the environment's later deployments behind it.
func (d *Deployer) fetchable(app, version string) error {
	f, ok := d.opts.Fetcher.(Fetchable)
	if !ok {
		return nil
	}
	var rel *raftfsm.Release
	d.n.FSM().Read(func(s *raftfsm.State) {
		if r := s.Releases[raftfsm.ReleaseKey(app, version)]; r != nil {
			c := *r
			c.Holders = slices.Clone(r.Holders)
			rel = &c
		}
	})
	if rel == nil {
		return errs.New(errs.NotFound, "app %s has no release %q: `node releases %s` lists them", app, version, app)
	}
	if err := f.Fetchable(rel); err != nil {
		return errs.New(errs.Conflict, "refused, nothing changed: %v", err)
	}
	return nil
}

// rollbackPlan is what a rollback does.
type rollbackPlan struct {
	to      string
	partial bool                // the last deployment left some servers on another release
	cancel  *raftfsm.Deployment // a running deployment to cancel first
}

func planRollback(s *raftfsm.State, e *raftfsm.Env, to string) rollbackPlan {
	var last *raftfsm.Deployment
	for _, d := range s.Deploys {
		if d.Env == e.Name && d.Kind == raftfsm.DeployKindDeploy && d.State != raftfsm.DeployPending && d.State != raftfsm.DeployWaiting &&
			(last == nil || d.CreateIndex > last.CreateIndex) {
			last = d
		}
	}
	var p rollbackPlan
	for _, d := range s.Deploys {
		if d.Env == e.Name && !d.Finished() {
			c := *d
			p.cancel = &c
		}
	}
	if last != nil && last.Release != e.Desired &&
		(last.State == raftfsm.DeployFailed || last.State == raftfsm.DeployCancelled || last.State == raftfsm.DeployRunning) {
		p.partial = true
		if to == "" {
			to = e.Desired
		}
	}
	if to == "" {
		to = previousRelease(s, e)
	}
	p.to = to
	return p
}

func (d *Deployer) pin(w http.ResponseWriter, r *http.Request, pinned bool) error {
	var in PinRequest
	if r.ContentLength != 0 {
		if err := api.Decode(r, &in); err != nil {
			return err
		}
	}
	reason := in.Reason
	if pinned && reason == "" {
		reason = "pinned by " + who(r)
	}
	return d.http.Write(w, r, http.StatusOK, &raftfsm.EnvPin{Name: r.PathValue("env"), Pinned: pinned, Reason: reason})
}

// PipelineRequest is the body of PUT /v1/apps/{app}/pipeline: the stages in order (none removes the
// pipeline), and optionally the index the pipeline was read at (its modify_index), to refuse a lost update.
type PipelineRequest struct {
	Stages []raftfsm.PipelineStage `json:"stages"`
	CAS    uint64                  `json:"cas,omitempty"`
}

func (d *Deployer) getPipeline(w http.ResponseWriter, r *http.Request) error {
	if err := d.http.BeginRead(r); err != nil {
		return err
	}
	app := r.PathValue("app")
	var p raftfsm.Pipeline
	found := false
	d.n.FSM().Read(func(s *raftfsm.State) {
		_, found = s.Apps[app]
		if cur := s.Pipelines[app]; cur != nil {
			p = *cur
			p.Stages = append([]raftfsm.PipelineStage(nil), cur.Stages...)
		}
	})
	if !found {
		return errs.New(errs.NotFound, "app %q does not exist", app)
	}
	p.App = app
	if p.Stages == nil {
		p.Stages = []raftfsm.PipelineStage{}
	}
	d.http.WriteJSON(w, http.StatusOK, p)
	return nil
}

func (d *Deployer) putPipeline(w http.ResponseWriter, r *http.Request) error {
	var in PipelineRequest
	if err := api.Decode(r, &in); err != nil {
		return err
	}
	return d.writePipeline(w, r, r.PathValue("app"), in.Stages, in.CAS)
}

// promote deploys a release that runs in one environment to the next (by the pipeline, or To).
func (d *Deployer) promote(w http.ResponseWriter, r *http.Request) error {
	var in PromoteRequest
	if err := api.Decode(r, &in); err != nil {
		return err
	}
	app := r.PathValue("app")
	if in.From == "" {
		return errs.New(errs.BadRequest, "promote needs the environment the release comes from (--from)")
	}
	from, err := d.envOf(r, in.From)
	if err != nil {
		return err
	}
	if from.App != app {
		return errs.New(errs.BadRequest, "environment %s belongs to app %s, not %s", from.Name, from.App, app)
	}
	if in.Release == "" {
		in.Release = from.Desired
	}
	if in.Release == "" || in.Release != from.Desired {
		return errs.New(errs.Conflict, "%s is not the release of %s (it runs %q): only a release that deployed there can be promoted",
			in.Release, from.Name, from.Desired)
	}
	to := in.To
	if to == "" {
		d.n.FSM().Read(func(s *raftfsm.State) {
			stages := pipelineStages(s, app)
			for i := 0; i+1 < len(stages); i++ {
				if stages[i].Env == from.Name {
					to = stages[i+1].Env
				}
			}
		})
		if to == "" {
			return errs.New(errs.BadRequest, "%s is not followed by another stage in app %s's pipeline: name the target with --to", from.Name, app)
		}
	}
	e, err := d.envOf(r, to)
	if err != nil {
		return err
	}
	if e.App != app {
		return errs.New(errs.BadRequest, "environment %s belongs to app %s, not %s", e.Name, e.App, app)
	}
	if e.Desired == in.Release {
		d.http.WriteJSON(w, http.StatusOK, CreateResult{Noop: true, Message: fmt.Sprintf("%s already runs %s", e.Name, in.Release)})
		return nil
	}
	if err := d.fetchable(app, in.Release); err != nil {
		return err
	}
	dep := NewDeployment(&e, d.n.Members(), raftfsm.DeployKindDeploy, in.Release, "promotion from "+from.Name+" by "+who(r), false, nil, time.Now())
	return d.create(w, r, dep)
}

// logRPC is the node-to-node method that returns a node's log of a deployment.
const logRPC = "deploy_log"

type logRequest struct {
	Deployment string `json:"deployment"`
}

func (d *Deployer) getLog(w http.ResponseWriter, r *http.Request) error {
	id, name := r.PathValue("id"), r.PathValue("node")
	if _, ok := d.deployment(id); !ok {
		return errs.New(errs.NotFound, "deployment %q does not exist", id)
	}
	if name == d.n.Name() {
		out, err := d.readLog(id)
		if err != nil {
			return err
		}
		d.http.WriteJSON(w, http.StatusOK, out)
		return nil
	}
	addr, member := "", false
	for _, m := range d.n.Members() {
		if m.Name != name {
			continue
		}
		member = true
		if m.Status == node.StatusAlive || m.Status == node.StatusSuspect {
			addr = m.Addr
		}
	}
	if !member {
		return errs.New(errs.NotFound, "server %q is not a member of this mesh: `node members` lists the servers", name)
	}
	if addr == "" {
		return errs.New(errs.Unavailable, "server %s is not up, and its log of a deployment lives on it: retry when it is back", name)
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	var out LogResponse
	if err := d.n.Endpoint().Call(ctx, addr, logRPC, logRequest{Deployment: id}, &out); err != nil {
		return errs.New(errs.BadGateway, "read the log from %s: %v", name, err)
	}
	d.http.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (d *Deployer) serveLogRPC(_ context.Context, _ string, body json.RawMessage) (any, error) {
	var req logRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	return d.readLog(req.Deployment)
}

// readLog reads this node's log of a deployment (its end, when it is long).
func (d *Deployer) readLog(id string) (*LogResponse, error) {
	dep, ok := d.deployment(id)
	if !ok {
		return nil, errs.New(errs.NotFound, "deployment %q does not exist", id)
	}
	path, err := d.DeploymentLogPath(dep.App, dep.Env, id)
	if err != nil {
		return nil, errs.New(errs.BadRequest, "%v", err)
	}
	out := &LogResponse{Node: d.n.Name(), Deployment: id}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil // this server did no work in the deployment (yet)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(fi.Size()-maxLogBytes, 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, maxLogBytes))
	if err != nil {
		return nil, err
	}
	out.Log, out.Truncated = string(b), off > 0
	return out, nil
}

// previousRelease is the release an environment ran before its current one (raftfsm decides, so the cleanup
// keeps exactly what a rollback needs).
func previousRelease(s *raftfsm.State, e *raftfsm.Env) string { return s.PreviousRelease(e) }
