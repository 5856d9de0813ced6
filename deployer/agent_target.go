package deployer

import (
	"slices"

	"github.com/shoal-ci/shoal/raftfsm"
)

// InEnv reports whether the server named name, with the given gossip tags, belongs to environment e: it is
// listed by name, or e has tags and the server carries every one of them with the same value.
func InEnv(e *raftfsm.Env, name string, tags map[string]string) bool {
	if slices.Contains(e.Servers, name) {
		return true
	}
	if len(e.Tags) == 0 {
		return false
	}
	for k, v := range e.Tags {
		if got, ok := tags[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// inBatches reports whether name is in one of d's batches up to and including batch upTo.
func inBatches(d *raftfsm.Deployment, name string, upTo int) bool {
	for i, b := range d.Batches {
		if i > upTo {
			break
		}
		if slices.Contains(b, name) {
			return true
		}
	}
	return false
}

// target is what one node should make true for one environment now.
type target struct {
	// Kind is raftfsm.DeployKindDeploy (run Release), DeployKindRestart or DeployKindTerminate (run that
	// lifecycle once), or "" (change nothing).
	Kind    string
	Release string
	// Dep is the deployment this node's work reports to: the running one, or the finished one that made
	// Release the environment's release (nil when none did, e.g. after a restore).
	Dep *raftfsm.Deployment
	// Live means Dep is running and this node is in one of its started batches: the orchestrator decides on
	// its outcome, so a failure here is reported and not retried.
	Live bool
	// Stay means Dep failed or was cancelled with this node in a started batch: the node keeps (or finishes
	// installing) Dep's release; after a failure of its own it is left alone.
	Stay bool
}

// desiredFor decides, from the replicated state alone, what node me should run for environment e:
//
//   - a running deployment whose started batches hold me: its release (deploy), or its lifecycle once
//     (restart, terminate);
//   - an environment whose latest deploy or terminate is a terminate: nothing (it stays stopped);
//   - a deployment that failed or was cancelled with me in a started batch: its release, as far as it got;
//   - otherwise the environment's desired release, reported to the deployment that made it desired.
//
// Pending deployments and those waiting for approval have not started and change nothing yet.
func desiredFor(s *raftfsm.State, e *raftfsm.Env, me string) target {
	var running, latestDeploy, latestDT *raftfsm.Deployment
	later := func(a, b *raftfsm.Deployment) bool { return a == nil || b.CreateIndex > a.CreateIndex }
	for _, d := range s.Deploys {
		if d.Env != e.Name || d.App != e.App {
			continue
		}
		switch d.State {
		case raftfsm.DeployPending, raftfsm.DeployWaiting:
			continue
		case raftfsm.DeployRunning:
			running = d
		}
		if d.Kind == raftfsm.DeployKindDeploy && later(latestDeploy, d) {
			latestDeploy = d
		}
		if (d.Kind == raftfsm.DeployKindDeploy || d.Kind == raftfsm.DeployKindTerminate) && d.State != raftfsm.DeployCancelled && later(latestDT, d) {
			latestDT = d
		}
	}
	if running != nil && inBatches(running, me, running.Batch) {
		if running.Kind == raftfsm.DeployKindDeploy {
			return target{Kind: raftfsm.DeployKindDeploy, Release: running.Release, Dep: running, Live: true}
		}
		return target{Kind: running.Kind, Dep: running, Live: true}
	}
	if latestDT != nil && latestDT.Kind == raftfsm.DeployKindTerminate {
		return target{}
	}
	if d := latestDeploy; d != nil && (d.State == raftfsm.DeployFailed || d.State == raftfsm.DeployCancelled) && inBatches(d, me, d.Batch) {
		return target{Kind: raftfsm.DeployKindDeploy, Release: d.Release, Dep: d, Stay: true}
	}
	if e.Desired == "" {
		return target{}
	}
	var origin *raftfsm.Deployment
	for _, d := range s.Deploys {
		if d.Env == e.Name && d.Kind == raftfsm.DeployKindDeploy && d.Release == e.Desired &&
			d.State == raftfsm.DeploySucceeded && later(origin, d) {
			origin = d
		}
	}
	return target{Kind: raftfsm.DeployKindDeploy, Release: e.Desired, Dep: origin}
}

// statusOf returns me's status in d, or "" when it has none.
func statusOf(d *raftfsm.Deployment, me string) string {
	if d == nil {
		return ""
	}
	if st := d.Nodes[me]; st != nil {
		return st.State
	}
	return ""
}
