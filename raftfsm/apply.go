package raftfsm

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// apply validates a command against s and, only if it is valid, changes s. A rejection leaves s untouched. The
// rule of each command type is part of its registration (spec.go).
func apply(s *State, index uint64, c Command) (any, *Error) {
	spec := specs[c.Type()]
	if spec == nil || spec.Apply == nil {
		return nil, badRequest("command %T has no apply rule", c)
	}
	return spec.Apply(s, index, c)
}

// rule adapts a command type's apply function to Spec.Apply.
func rule[T Command](f func(s *State, index uint64, c T) (any, *Error)) func(*State, uint64, Command) (any, *Error) {
	return func(s *State, index uint64, c Command) (any, *Error) { return f(s, index, c.(T)) }
}

func applyTokenDelete(s *State, _ uint64, c *TokenDelete) (any, *Error) {
	if _, ok := s.Tokens[c.ID]; !ok {
		return nil, notFound("token %q does not exist", c.ID)
	}
	delete(s.Tokens, c.ID)
	return nil, nil
}

func applyJoinTokenDelete(s *State, _ uint64, c *JoinTokenDelete) (any, *Error) {
	if _, ok := s.JoinTokens[c.ID]; !ok {
		return nil, notFound("join token %q does not exist", c.ID)
	}
	delete(s.JoinTokens, c.ID)
	return nil, nil
}

func applyEnvDelete(s *State, _ uint64, c *EnvDelete) (any, *Error) {
	e, ok := s.Envs[c.Name]
	if !ok {
		return nil, notFound("environment %q does not exist", c.Name)
	}
	if p := s.Pipelines[e.App]; p != nil && slices.ContainsFunc(p.Stages, func(st PipelineStage) bool { return st.Env == c.Name }) {
		return nil, conflict("environment %q is a stage of app %q's pipeline: remove it from the pipeline first", c.Name, e.App)
	}
	s.removeEnv(c.Name)
	dropRuntimes(s, c.Name, "")
	return nil, nil
}

func applyEnvPin(s *State, index uint64, c *EnvPin) (any, *Error) {
	e := s.editEnv(c.Name)
	if e == nil {
		return nil, notFound("environment %q does not exist", c.Name)
	}
	e.Pinned, e.PinReason = c.Pinned, c.Reason
	if !c.Pinned {
		e.PinReason = ""
	}
	e.ModifyIndex = index
	return e, nil
}

func applyReleaseHolders(s *State, index uint64, c *ReleaseHolders) (any, *Error) {
	r, ok := s.Releases[ReleaseKey(c.App, c.Version)]
	if !ok {
		return nil, notFound("release %s of app %q does not exist", c.Version, c.App)
	}
	if c.Node == "" {
		return nil, badRequest("a release holder needs a node name")
	}
	if !slices.Contains(r.Holders, c.Node) {
		r = s.editRelease(ReleaseKey(c.App, c.Version))
		r.Holders = append(slices.Clone(r.Holders), c.Node)
		slices.Sort(r.Holders)
		r.ModifyIndex = index
	}
	return r, nil
}

func applyReleaseCreate(s *State, index uint64, c *ReleaseCreate) (any, *Error) {
	a := s.editApp(c.Release.App)
	if a == nil {
		return nil, notFound("app %q does not exist", c.Release.App)
	}
	return addRelease(s, index, a, c.Release)
}

func applyMemberLeave(s *State, _ uint64, c *MemberLeave) (any, *Error) {
	if c.Name == "" {
		return nil, badRequest("a departing member needs a name")
	}
	s.Departed[c.Name] = c.At
	dropRuntimes(s, "", c.Name)
	return nil, nil
}

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	branchRE = regexp.MustCompile(`^[^\x00-\x20~^:?*\[\\]+$`)
	keyRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

func checkName(what, name string) *Error {
	if !nameRE.MatchString(name) {
		return badRequest("%s name %q is not valid: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", what, name)
	}
	return nil
}

func applyMeshInit(s *State, _ uint64, c *MeshInit) (any, *Error) {
	if s.Mesh != nil {
		return nil, conflict("the mesh %q is already initialised", s.Mesh.Name)
	}
	if c.Mesh.CACert == "" || c.Mesh.CAKey == "" || len(c.Mesh.GossipKey) != 32 {
		return nil, badRequest("mesh init needs a CA certificate, its key and a 32-byte gossip key")
	}
	m := c.Mesh
	s.Mesh = &m
	return nil, nil
}

func applyTokenCreate(s *State, index uint64, c *TokenCreate) (any, *Error) {
	t := c.Token
	switch t.Role {
	case RoleAdmin, RoleDeployer, RoleReader:
	default:
		return nil, badRequest("token role %q is not one of admin, deployer, reader", t.Role)
	}
	if t.ID == "" || t.SecretHash == "" {
		return nil, badRequest("a token needs an id and a secret hash")
	}
	if _, ok := s.Tokens[t.ID]; ok {
		return nil, conflict("token %q already exists", t.ID)
	}
	t.Meta = Meta{CreateIndex: index, ModifyIndex: index}
	s.Tokens[t.ID] = &t
	return &t, nil
}

func applyJoinTokenCreate(s *State, index uint64, c *JoinTokenCreate) (any, *Error) {
	t := c.Token
	if t.ID == "" || len(t.Secret) < 16 {
		return nil, badRequest("a join token needs an id and a secret of at least 16 characters")
	}
	if !t.ExpiresAt.After(t.CreatedAt) {
		return nil, badRequest("a join token must expire after it is created")
	}
	if _, ok := s.JoinTokens[t.ID]; ok {
		return nil, conflict("join token %q already exists", t.ID)
	}
	t.Meta = Meta{CreateIndex: index, ModifyIndex: index}
	s.JoinTokens[t.ID] = &t
	return &t, nil
}

func applyAppPut(s *State, index uint64, c *AppPut) (any, *Error) {
	a := c.App
	if err := ValidApp(&a); err != nil {
		return nil, err.(*Error)
	}
	if a.Branch == "" {
		a.Branch = "main"
	}
	if !branchRE.MatchString(a.Branch) || strings.HasPrefix(a.Branch, "-") {
		return nil, badRequest("branch %q is not a valid git branch name", a.Branch)
	}
	for k := range a.BuildVars {
		if !keyRE.MatchString(k) {
			return nil, badRequest("build variable name %q is not valid: use letters, digits and '_'", k)
		}
	}
	caps, cerr := checkCapabilities(a.BuildCapabilities)
	if cerr != nil {
		return nil, cerr
	}
	a.BuildCapabilities = caps
	old, exists := s.Apps[a.Name]
	switch {
	case c.Create && exists:
		return nil, conflict("app %q already exists", a.Name)
	case !c.Create && !exists:
		return nil, notFound("app %q does not exist", a.Name)
	case exists && c.CAS != 0 && old.ModifyIndex != c.CAS:
		return nil, conflict("app %q changed at index %d since you read it at %d: read it again", a.Name, old.ModifyIndex, c.CAS)
	}
	if exists {
		// Counters and identity belong to the state, not to the writer.
		a.NextBuild, a.NextRelease, a.CreateIndex = old.NextBuild, old.NextRelease, old.CreateIndex
		if a.WebhookSecret == "" {
			a.WebhookSecret = old.WebhookSecret
		}
	} else {
		a.NextBuild, a.NextRelease, a.CreateIndex = 1, 1, index
	}
	a.ModifyIndex = index
	s.Apps[a.Name] = &a
	s.indexApp(&a)
	return &a, nil
}

func applyAppDelete(s *State, _ uint64, c *AppDelete) (any, *Error) {
	if _, ok := s.Apps[c.Name]; !ok {
		return nil, notFound("app %q does not exist", c.Name)
	}
	var envs []string
	for _, e := range s.AppEnvs(c.Name) {
		envs = append(envs, e.Name)
	}
	if len(envs) > 0 {
		return nil, conflict("app %q still has environments %s: delete them first", c.Name, strings.Join(envs, ", "))
	}
	s.removeApp(c.Name)
	delete(s.Deliveries, c.Name)
	delete(s.Pipelines, c.Name)
	for _, b := range s.AppBuilds(c.Name) {
		s.removeBuild(b.ID)
	}
	for _, r := range s.AppReleases(c.Name) {
		s.removeRelease(ReleaseKey(r.App, r.Version))
	}
	return nil, nil
}

func validStrategy(st *Strategy) *Error {
	switch st.Kind {
	case "":
		st.Kind = "all"
	case "all", "rolling":
	default:
		return badRequest("strategy kind %q is not one of all, rolling", st.Kind)
	}
	if st.BatchSize < 0 || st.BatchPercent < 0 || st.BatchPercent > 100 || st.MinHealthy < 0 || st.AbortAfter < 0 {
		return badRequest("strategy numbers must be positive, and batch_percent at most 100")
	}
	if st.BatchSize > 0 && st.BatchPercent > 0 {
		return badRequest("give batch_size or batch_percent, not both")
	}
	if st.Kind == "rolling" && st.BatchSize == 0 && st.BatchPercent == 0 {
		st.BatchSize = 1
	}
	return nil
}

func applyEnvPut(s *State, index uint64, c *EnvPut) (any, *Error) {
	e := c.Env
	if err := ValidEnv(&e); err != nil {
		return nil, err.(*Error)
	}
	if _, ok := s.Apps[e.App]; !ok {
		return nil, notFound("app %q does not exist: create it first", e.App)
	}
	if err := validStrategy(&e.Strategy); err != nil {
		return nil, err
	}
	if err := validMinHealthy(e.MinHealthyTime); err != nil {
		return nil, err
	}
	for k := range e.Vars {
		if !keyRE.MatchString(k) {
			return nil, badRequest("variable name %q is not valid: use letters, digits and '_'", k)
		}
	}
	if e.ProgressDeadline < 0 || (e.ProgressDeadline > 0 && time.Duration(e.ProgressDeadline) < time.Second) {
		return nil, badRequest("progress_deadline %s is not valid: give at least 1s, or 0 for the default (10m)", time.Duration(e.ProgressDeadline))
	}
	old, exists := s.Envs[e.Name]
	switch {
	case c.Create && exists:
		return nil, conflict("environment %q already exists", e.Name)
	case !c.Create && !exists:
		return nil, notFound("environment %q does not exist", e.Name)
	case exists && old.App != e.App:
		return nil, badRequest("environment %q belongs to app %q and cannot move to %q", e.Name, old.App, e.App)
	case exists && c.CAS != 0 && old.ModifyIndex != c.CAS:
		return nil, conflict("environment %q changed at index %d since you read it at %d: read it again", e.Name, old.ModifyIndex, c.CAS)
	}
	e.Servers = slices.Clone(e.Servers)
	slices.Sort(e.Servers)
	e.Servers = slices.Compact(e.Servers)
	if e.Servers == nil {
		e.Servers = []string{}
	}
	if exists {
		e.Desired, e.Stable, e.Pinned, e.PinReason = old.Desired, old.Stable, old.Pinned, old.PinReason
		e.CreateIndex = old.CreateIndex
	} else {
		e.Desired, e.Stable, e.Pinned, e.PinReason = "", "", false, ""
		e.CreateIndex = index
	}
	e.ModifyIndex = index
	s.Envs[e.Name] = &e
	s.indexEnv(&e)
	return &e, nil
}

func applyLeaderEpoch(s *State, index uint64, c *LeaderEpoch) (any, *Error) {
	if c.Term <= s.Term {
		return nil, conflict("leader epoch %d is not newer than the recorded term %d", c.Term, s.Term)
	}
	s.Term, s.Leader = c.Term, c.Node
	var requeued []string
	for _, b := range s.LiveBuilds() {
		if id := b.ID; b.State == BuildRunning {
			b = s.editBuild(id)
			if b.Remote {
				b.Requeued = fmt.Sprintf("leader term %d began: the assignment to build server %s was term %d's", c.Term, b.Node, b.Term)
			}
			b.State, b.Term, b.Node, b.Remote, b.Renewals = BuildQueued, 0, "", false, 0
			b.ModifyIndex = index
			requeued = append(requeued, id)
		}
	}
	slices.Sort(requeued)
	return requeued, nil
}

func applyBuildQueue(s *State, index uint64, c *BuildQueue) (any, *Error) {
	a, ok := s.Apps[c.App]
	if !ok {
		return nil, notFound("app %q does not exist", c.App)
	}
	switch c.Trigger {
	case "push", "poll", "manual":
		if c.PullRequest != 0 {
			return nil, badRequest("only a pull_request build names a pull request")
		}
	case TriggerPullRequest:
		if c.PullRequest <= 0 {
			return nil, badRequest("a pull_request build needs the request's number")
		}
		if !a.PullRequests {
			return nil, conflict("app %q does not build pull requests: turn them on with `node app update %s --pull-requests`", c.App, c.App)
		}
	default:
		return nil, badRequest("build trigger %q is not one of push, poll, manual, pull_request", c.Trigger)
	}
	if c.Delivery != "" {
		if slices.Contains(s.Deliveries[c.App], c.Delivery) {
			return nil, conflict("webhook delivery %q was already received", c.Delivery)
		}
		d := append(slices.Clone(s.Deliveries[c.App]), c.Delivery)
		if len(d) > maxDeliveries {
			d = d[len(d)-maxDeliveries:]
		}
		s.Deliveries[c.App] = d
	}
	// A commit becomes at most one release: a second push or poll of a commit already queued, running or
	// released for this branch is the same build.
	if c.Commit != "" && c.Trigger != "manual" {
		for _, b := range s.AppBuilds(c.App) {
			if b.Commit == c.Commit && b.Branch == c.Branch && b.PullRequest == c.PullRequest &&
				(b.State == BuildQueued || b.State == BuildRunning || b.State == BuildSucceeded) {
				return b, nil
			}
		}
	}
	a = s.editApp(c.App)
	n := a.NextBuild
	a.NextBuild++
	a.ModifyIndex = index
	b := &Build{
		ID: fmt.Sprintf("%s-%d", c.App, n), App: c.App, Number: n, Commit: c.Commit, Ref: c.Ref,
		Branch: c.Branch, Message: c.Message, Trigger: c.Trigger, State: BuildQueued, QueuedAt: c.At,
		PullRequest: c.PullRequest, Meta: Meta{CreateIndex: index, ModifyIndex: index},
	}
	s.Builds[b.ID] = b
	s.indexBuild(b)
	return b, nil
}

func applyBuildStart(s *State, index uint64, c *BuildStart) (any, *Error) {
	b, ok := s.Builds[c.ID]
	if !ok {
		return nil, notFound("build %q does not exist", c.ID)
	}
	if c.Term != s.Term {
		return nil, conflict("build %q start carries leader term %d but the current term is %d", c.ID, c.Term, s.Term)
	}
	if b.State != BuildQueued {
		return nil, conflict("build %q is %s, not queued", c.ID, b.State)
	}
	b = s.editBuild(c.ID)
	b.State, b.Term, b.Node, b.StartedAt = BuildRunning, c.Term, c.Node, c.At
	b.Attempt++
	b.ModifyIndex = index
	s.indexBuild(b)
	return b, nil
}

func applyBuildFinish(s *State, index uint64, c *BuildFinish) (any, *Error) {
	b, ok := s.Builds[c.ID]
	if !ok {
		return nil, notFound("build %q does not exist", c.ID)
	}
	if c.Term != s.Term || b.Term != c.Term || b.State != BuildRunning {
		return nil, conflict("build %q was started under leader term %d and is %s; term %d may not finish it (current term %d)",
			c.ID, b.Term, b.State, c.Term, s.Term)
	}
	// A build server's result counts only while it holds the build's lease (the same node and attempt).
	if b.Remote || c.Node != "" {
		if err := leaseHolder(b, c.Node, c.Attempt); err != nil {
			return nil, err
		}
	}
	switch c.State {
	case BuildSucceeded, BuildFailed, BuildCancelled:
	default:
		return nil, badRequest("a build cannot finish as %q", c.State)
	}
	a := s.Apps[b.App]
	if a == nil {
		return nil, notFound("app %q of build %q no longer exists", b.App, c.ID)
	}
	a, b = s.editApp(b.App), s.editBuild(c.ID) // if addRelease refuses, the copies stored equal the originals
	var rel *Release
	if c.State == BuildSucceeded && c.Release != nil {
		r := *c.Release
		r.Build, r.Commit, r.Branch = b.ID, b.Commit, b.Branch
		if r.PullRequest = b.PullRequest; r.PullRequest > 0 {
			// Apart from the app's own versions, whatever CustomVersionCmd said.
			r.Version = fmt.Sprintf("pr%d-%d", b.PullRequest, b.Number)
		}
		var err *Error
		if rel, err = addRelease(s, index, a, r); err != nil {
			return nil, err
		}
		b.Release = rel.Version
	}
	b.State, b.Error, b.EndedAt = c.State, c.Error, c.At
	if b.Message == "" {
		b.Message = c.Message
	}
	b.ModifyIndex, a.ModifyIndex = index, index
	s.indexBuild(b)
	if rel != nil {
		return rel, nil
	}
	return b, nil
}

// addRelease validates r and records it as the app's next release (a is a copy from editApp: it is changed) (v<N>, or r.Version when the manifest's
// CustomVersionCmd gave one, unique per app regardless of case).
func addRelease(s *State, index uint64, a *App, r Release) (*Release, *Error) {
	if r.Digest == "" || r.Size < 0 || r.PieceSize <= 0 && r.Size > 0 {
		return nil, badRequest("a release needs the archive's digest, size and piece size")
	}
	if r.Version == "" {
		r.Version = fmt.Sprintf("v%d", a.NextRelease)
	}
	if !nameRE.MatchString(r.Version) {
		return nil, badRequest("release version %q is not valid: use letters, digits, '.', '_' or '-'", r.Version)
	}
	for _, other := range s.AppReleases(a.Name) {
		if strings.EqualFold(other.Version, r.Version) {
			return nil, conflict("app %q already has a release %q: versions must be unique", a.Name, r.Version)
		}
	}
	r.App = a.Name
	r.Holders = slices.Clone(r.Holders)
	slices.Sort(r.Holders)
	r.Meta = Meta{CreateIndex: index, ModifyIndex: index}
	if strings.EqualFold(r.Version, fmt.Sprintf("v%d", a.NextRelease)) {
		a.NextRelease++
	}
	a.ModifyIndex = index
	s.Releases[ReleaseKey(r.App, r.Version)] = &r
	s.indexRelease(&r)
	return &r, nil
}

func applyBuildCancel(s *State, index uint64, c *BuildCancel) (any, *Error) {
	b := s.editBuild(c.ID)
	if b == nil {
		return nil, notFound("build %q does not exist", c.ID)
	}
	switch b.State {
	case BuildQueued:
		b.State, b.EndedAt = BuildCancelled, c.At
	case BuildRunning:
		b.CancelRequested = true
	default:
		return nil, conflict("build %q already ended (%s)", c.ID, b.State)
	}
	b.ModifyIndex = index
	s.indexBuild(b)
	return b, nil
}

// applyNodeStatus records a server's status in a running deployment it takes part in. History is immutable: a
// deployment that ended keeps the rows it ended with, and a server's failure in a deployment is final.
func applyNodeStatus(s *State, index uint64, c *NodeStatusSet) (any, *Error) {
	d, ok := s.Deploys[c.ID]
	if !ok {
		return nil, notFound("deployment %q does not exist", c.ID)
	}
	switch c.Status.State {
	case NodePending, NodeDownloading, NodeInstalling, NodeStarting, NodeHealthy, NodeFailed:
	default:
		return nil, badRequest("server state %q is not one of pending, downloading, installing, starting, healthy, failed", c.Status.State)
	}
	if d.Finished() {
		return nil, conflict("deployment %q already ended (%s): its record no longer changes", c.ID, d.State)
	}
	if d.State != DeployRunning {
		return nil, conflict("deployment %q is %s: servers report only while it runs", c.ID, d.State)
	}
	if !inStartedBatch(d, c.Node) {
		return nil, conflict("server %q is not in a started batch of deployment %q", c.Node, c.ID)
	}
	if cur := d.Nodes[c.Node]; cur != nil && cur.State == NodeFailed {
		return nil, conflict("server %q already failed in deployment %q: a failure stands", c.Node, c.ID)
	}
	d = s.editDeploy(c.ID)
	st := c.Status
	d.Nodes[c.Node] = &st
	d.ModifyIndex = index
	return &st, nil
}

// inStartedBatch reports whether name is in one of d's batches up to and including the current one.
func inStartedBatch(d *Deployment, name string) bool {
	for i, b := range d.Batches {
		if i > d.Batch {
			break
		}
		if slices.Contains(b, name) {
			return true
		}
	}
	return false
}

// checkDeployCreate validates a new deployment against the state and returns it completed (kind, app,
// previous release, state, nodes), without storing it.
func checkDeployCreate(s *State, c *DeployCreate) (*Deployment, *Error) {
	d := c.Deployment
	if d.ID == "" {
		return nil, badRequest("a deployment needs an id")
	}
	if _, ok := s.Deploys[d.ID]; ok {
		return nil, conflict("deployment %q already exists", d.ID)
	}
	e, ok := s.Envs[d.Env]
	if !ok {
		return nil, notFound("environment %q does not exist", d.Env)
	}
	switch d.Kind {
	case "":
		d.Kind = DeployKindDeploy
	case DeployKindDeploy, DeployKindRestart, DeployKindTerminate:
	default:
		return nil, badRequest("deployment kind %q is not one of deploy, restart, terminate", d.Kind)
	}
	if d.Kind == DeployKindDeploy {
		r, ok := s.Releases[ReleaseKey(e.App, d.Release)]
		if !ok {
			return nil, notFound("app %q has no release %q", e.App, d.Release)
		}
		if err := pullRequestDeploy(e, r, d.By); err != nil {
			return nil, err
		}
	}
	for _, other := range s.EnvDeploys(d.Env) {
		if !other.Finished() {
			return nil, conflict("environment %q already has deployment %s in progress: wait for it or cancel it", d.Env, other.ID)
		}
	}
	if err := validStrategy(&d.Strategy); err != nil {
		return nil, err
	}
	d.App, d.Previous = e.App, e.Desired
	if d.State == "" {
		d.State = DeployPending
	}
	if d.Nodes == nil {
		d.Nodes = map[string]*NodeStatus{}
	}
	return &d, nil
}

func applyDeployCreate(s *State, index uint64, c *DeployCreate) (any, *Error) {
	d, err := checkDeployCreate(s, c)
	if err != nil {
		return nil, err
	}
	d.Meta = Meta{CreateIndex: index, ModifyIndex: index}
	s.Deploys[d.ID] = d
	s.indexDeploy(d)
	return d, nil
}

func applyDeployUpdate(s *State, index uint64, c *DeployUpdate) (any, *Error) {
	d, ok := s.Deploys[c.ID]
	if !ok {
		return nil, notFound("deployment %q does not exist", c.ID)
	}
	if d.Finished() {
		return nil, conflict("deployment %q already ended (%s)", c.ID, d.State)
	}
	if len(c.From) > 0 && !slices.Contains(c.From, d.State) {
		return nil, conflict("deployment %q is %s, not %s", c.ID, d.State, strings.Join(c.From, " or "))
	}
	e := s.Envs[d.Env]
	if e == nil {
		return nil, notFound("environment %q of deployment %q no longer exists", d.Env, c.ID)
	}
	if c.SetDesired != "" {
		if _, ok := s.Releases[ReleaseKey(e.App, c.SetDesired)]; !ok {
			return nil, notFound("app %q has no release %q", e.App, c.SetDesired)
		}
	}
	d = s.editDeploy(c.ID) // the check below moves its state for a moment; a refusal leaves an equal copy
	var rb *Deployment
	if c.Rollback != nil {
		if c.State != DeployRolledBack {
			return nil, badRequest("a rollback deployment goes with state %s, not %q", DeployRolledBack, c.State)
		}
		if c.Rollback.Env != d.Env || c.Rollback.ID == d.ID {
			return nil, badRequest("the rollback of deployment %q must be another deployment of environment %q", c.ID, d.Env)
		}
		// d ends in this entry, so the environment has no other deployment in progress: check as if it had ended.
		prev := d.State
		d.State = DeployRolledBack
		var err *Error
		rb, err = checkDeployCreate(s, &DeployCreate{Deployment: *c.Rollback})
		d.State = prev
		if err != nil {
			return nil, err
		}
	}
	e = s.editEnv(d.Env)
	if c.SetDesired != "" {
		e.Desired = c.SetDesired
		e.ModifyIndex = index
	}
	if c.State == DeployPending && d.State == DeployWaiting {
		d.ApprovedBy = c.By
	}
	if c.State == DeployCancelled {
		d.CancelledBy = c.By
	}
	startsBatch := c.State == DeployRunning && (d.State != DeployRunning || c.Batch != d.Batch)
	if c.State != "" {
		d.State = c.State
	}
	if c.State == DeploySucceeded && d.Kind == DeployKindDeploy {
		e.Stable = d.Release
		e.ModifyIndex = index
	}
	d.Batch, d.Error = c.Batch, c.Error
	if startsBatch {
		d.BatchStartedAt = c.At
	}
	if d.Finished() {
		d.EndedAt = c.At
	}
	d.ModifyIndex = index
	if rb != nil {
		rb.RollbackOf = d.ID
		rb.Meta = Meta{CreateIndex: index, ModifyIndex: index}
		s.Deploys[rb.ID] = rb
		s.indexDeploy(rb)
		d.Rollback = rb.ID
	}
	s.indexDeploy(d)
	return d, nil
}

// maxStages bounds a pipeline's length.
const maxStages = 16

func applyPipelinePut(s *State, index uint64, c *PipelinePut) (any, *Error) {
	p := c.Pipeline
	if _, ok := s.Apps[p.App]; !ok {
		return nil, notFound("app %q does not exist", p.App)
	}
	old := s.Pipelines[p.App]
	if c.CAS != 0 && (old == nil || old.ModifyIndex != c.CAS) {
		return nil, conflict("app %q's pipeline changed since you read it: read it again", p.App)
	}
	if len(p.Stages) > maxStages {
		return nil, badRequest("a pipeline has at most %d stages", maxStages)
	}
	seen := map[string]bool{}
	for _, st := range p.Stages {
		e, ok := s.Envs[st.Env]
		if !ok {
			return nil, notFound("environment %q does not exist", st.Env)
		}
		if e.App != p.App {
			return nil, badRequest("environment %q belongs to app %q", st.Env, e.App)
		}
		if seen[st.Env] {
			return nil, badRequest("environment %q appears twice in the pipeline", st.Env)
		}
		seen[st.Env] = true
	}
	if len(p.Stages) == 0 {
		delete(s.Pipelines, p.App)
		return nil, nil
	}
	p.Stages = slices.Clone(p.Stages)
	p.Meta = Meta{CreateIndex: index, ModifyIndex: index}
	if old != nil {
		p.CreateIndex = old.CreateIndex
	}
	s.Pipelines[p.App] = &p
	return &p, nil
}
