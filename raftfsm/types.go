package raftfsm

import "time"

// Meta is carried by every stored record: the Raft indexes at which it was created and last changed. They are set
// by Apply from the log entry, so they are the same on every node.
type Meta struct {
	CreateIndex uint64 `json:"create_index"`
	ModifyIndex uint64 `json:"modify_index"`
}

// Mesh is the mesh's identity, written once by `node init`. The CA key and the gossip key live in the replicated
// state so that any voter can admit a joiner; snapshots on disk are therefore as secret as the data dir's tls/.
type Mesh struct {
	Name      string    `json:"name"`
	CACert    string    `json:"ca_cert"`
	CAKey     string    `json:"ca_key"`
	GossipKey []byte    `json:"gossip_key"`
	CreatedAt time.Time `json:"created_at"`
}

// Roles an API token can have, from most to least powerful.
const (
	RoleAdmin    = "admin"
	RoleDeployer = "deployer"
	RoleReader   = "reader"
)

// Token is an API token. Only the sha256 of its secret is stored; the secret is shown once, at creation.
type Token struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Role       string    `json:"role"`
	SecretHash string    `json:"secret_hash"`
	CreatedAt  time.Time `json:"created_at"`
	Meta
}

// JoinToken admits new servers. Unlike API tokens its secret is kept, so an admin can print it again.
type JoinToken struct {
	ID        string    `json:"id"`
	Secret    string    `json:"secret"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Meta
}

// App is an application linked to a git repository and branch.
type App struct {
	Name          string `json:"name"`
	Repo          string `json:"repo"`
	Branch        string `json:"branch"`
	Manifest      string `json:"manifest"`
	WebhookSecret string `json:"webhook_secret,omitempty"`
	AutoBuild     bool   `json:"auto_build"`
	// PollInterval makes the leader poll the repository with `git ls-remote` (0: webhooks or manual only).
	PollInterval Duration `json:"poll_interval"`
	// BuildVars are the app's build variables; the secret ones are redacted from logs.
	BuildVars   map[string]Var `json:"build_vars,omitempty"`
	NextBuild   uint64         `json:"next_build"`
	NextRelease uint64         `json:"next_release"`
	Meta
}

// Var is a variable value; a secret one is redacted from logs and from API reads by non-admins.
type Var struct {
	Value  string `json:"value"`
	Secret bool   `json:"secret,omitempty"`
}

// Strategy says how a deployment moves through an environment's servers.
type Strategy struct {
	// Kind is "all" (all at once) or "rolling".
	Kind string `json:"kind"`
	// BatchSize or BatchPercent (one of them) sizes each rolling batch.
	BatchSize    int `json:"batch_size,omitempty"`
	BatchPercent int `json:"batch_percent,omitempty"`
	// MinHealthy servers must stay healthy while a batch is replaced.
	MinHealthy int `json:"min_healthy,omitempty"`
	// AbortAfter failed servers abort the deployment (0: the first failure aborts).
	AbortAfter   int  `json:"abort_after,omitempty"`
	AutoRollback bool `json:"auto_rollback"`
}

// Env is an environment: the servers of one app, chosen by node name and/or tags.
type Env struct {
	Name       string            `json:"name"`
	App        string            `json:"app"`
	Servers    []string          `json:"servers"`
	Tags       map[string]string `json:"tags"`
	Vars       map[string]Var    `json:"vars"`
	AutoDeploy bool              `json:"auto_deploy"`
	Strategy   Strategy          `json:"strategy"`
	// MinHealthyTime is how long a release's Exec processes must stay up before a server counts as healthy
	// when the release has no health check (0: the deployer's default, 10 s), as Nomad's min_healthy_time.
	MinHealthyTime Duration `json:"min_healthy_time,omitempty"`
	// Desired is the release version the environment should run; Stable the last one that deployed successfully.
	Desired string `json:"desired"`
	Stable  string `json:"stable"`
	// Pinned suspends auto deploy (set by an automatic rollback) until `node env unpin`.
	Pinned    bool   `json:"pinned"`
	PinReason string `json:"pin_reason,omitempty"`
	// ProgressDeadline is how long a server of a started batch may go without progress (a new status)
	// before the orchestrator fails it (0: the deployer's default, 10 minutes).
	ProgressDeadline Duration `json:"progress_deadline,omitempty"`
	Meta
}

// Build states.
const (
	BuildQueued    = "queued"
	BuildRunning   = "running"
	BuildSucceeded = "succeeded"
	BuildFailed    = "failed"
	BuildCancelled = "cancelled"
	BuildAbandoned = "abandoned"
)

// Build is one run of an app's build sections for one commit.
type Build struct {
	ID      string `json:"id"`
	App     string `json:"app"`
	Number  uint64 `json:"number"`
	Commit  string `json:"commit"`
	Ref     string `json:"ref"`
	Branch  string `json:"branch"`
	Message string `json:"message,omitempty"`
	// Trigger is push, poll or manual.
	Trigger string `json:"trigger"`
	State   string `json:"state"`
	// Term is the leader term the build runs under (0 while queued); Node is the leader running it.
	Term      uint64    `json:"term"`
	Node      string    `json:"node"`
	Attempt   int       `json:"attempt"`
	QueuedAt  time.Time `json:"queued_at"`
	StartedAt time.Time `json:"started_at,omitzero"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	Error     string    `json:"error,omitempty"`
	Release   string    `json:"release,omitempty"`
	// CancelRequested asks the leader's builder to stop the build.
	CancelRequested bool `json:"cancel_requested,omitempty"`
	Meta
}

// Finished reports whether the build reached a final state.
func (b *Build) Finished() bool {
	switch b.State {
	case BuildSucceeded, BuildFailed, BuildCancelled, BuildAbandoned:
		return true
	}
	return false
}

// Release is an immutable, versioned archive of an app.
type Release struct {
	App       string    `json:"app"`
	Version   string    `json:"version"`
	Build     string    `json:"build"`
	Commit    string    `json:"commit"`
	Branch    string    `json:"branch"`
	Notes     string    `json:"notes,omitempty"`
	Digest    string    `json:"digest"`
	Size      int64     `json:"size"`
	PieceSize int64     `json:"piece_size"`
	Pieces    []string  `json:"pieces"`
	Holders   []string  `json:"holders"`
	CreatedAt time.Time `json:"created_at"`
	Meta
}

// Deployment kinds and states.
const (
	DeployKindDeploy    = "deploy"
	DeployKindRestart   = "restart"
	DeployKindTerminate = "terminate"

	DeployPending    = "pending"
	DeployRunning    = "running"
	DeploySucceeded  = "succeeded"
	DeployFailed     = "failed"
	DeployCancelled  = "cancelled"
	DeployRolledBack = "rolled_back"
	DeployWaiting    = "waiting_approval"
)

// Per-node states within a deployment.
const (
	NodePending     = "pending"
	NodeDownloading = "downloading"
	NodeInstalling  = "installing"
	NodeStarting    = "starting"
	NodeHealthy     = "healthy"
	NodeFailed      = "failed"
)

// NodeStatus is one server's progress in a deployment.
type NodeStatus struct {
	State    string  `json:"state"`
	Progress float64 `json:"progress"`
	// Phase is the lifecycle phase running (Fetch, PreInstall, Extract, ..., Health); Release the release this
	// status is about.
	Phase     string    `json:"phase,omitempty"`
	Release   string    `json:"release,omitempty"`
	Error     string    `json:"error,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Deployment is a release sent to an environment.
type Deployment struct {
	ID        string                 `json:"id"`
	Kind      string                 `json:"kind"`
	App       string                 `json:"app"`
	Env       string                 `json:"env"`
	Release   string                 `json:"release"`
	Previous  string                 `json:"previous,omitempty"`
	By        string                 `json:"by"`
	Force     bool                   `json:"force,omitempty"`
	Strategy  Strategy               `json:"strategy"`
	State     string                 `json:"state"`
	Batches   [][]string             `json:"batches"`
	Batch     int                    `json:"batch"`
	Nodes     map[string]*NodeStatus `json:"nodes"`
	Error     string                 `json:"error,omitempty"`
	CreatedAt time.Time              `json:"created_at"`
	EndedAt   time.Time              `json:"ended_at,omitzero"`
	// ApprovedBy and CancelledBy name the tokens that approved or cancelled the deployment.
	ApprovedBy  string `json:"approved_by,omitempty"`
	CancelledBy string `json:"cancelled_by,omitempty"`
	// BatchStartedAt is when the current batch started (the orchestrator's clock): the progress deadline of a
	// server that has not reported yet counts from it.
	BatchStartedAt time.Time `json:"batch_started_at,omitzero"`
	// Rollback names the deployment that rolled this one back (state rolled_back); RollbackOf, on that
	// deployment, names the one it rolls back. Both are written in the entry that ends this one.
	Rollback   string `json:"rollback,omitempty"`
	RollbackOf string `json:"rollback_of,omitempty"`
	Meta
}

// PipelineStage is one environment of an app's pipeline. A release that every server of the previous stage
// runs healthy is promoted here, at once, or (Approval) as a deployment waiting for `node approve`.
type PipelineStage struct {
	Env      string `json:"env"`
	Approval bool   `json:"approval,omitempty"`
}

// Pipeline chains an app's environments: dev → staging → prod.
type Pipeline struct {
	App    string          `json:"app"`
	Stages []PipelineStage `json:"stages"`
	Meta
}

// Finished reports whether the deployment reached a final state.
func (d *Deployment) Finished() bool {
	switch d.State {
	case DeploySucceeded, DeployFailed, DeployCancelled, DeployRolledBack:
		return true
	}
	return false
}
