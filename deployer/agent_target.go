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

// kindStopped is the target of a server in an environment whose latest succeeded deployment was a
// terminate: its release stays installed and does not run.
const kindStopped = "stopped"

// target is what one node should make true for one environment now.
type target struct {
	// Kind is raftfsm.DeployKindDeploy (run Release), DeployKindRestart or DeployKindTerminate (run that
	// lifecycle once for Dep), kindStopped (make sure nothing runs), or "" (change nothing).
	Kind    string
	Release string
	// Dep is the running deployment this node's work belongs to, when Live; nil otherwise. Work that no
	// running deployment asks for (converging to the environment's release) reports to no deployment: a
	// deployment's record and logs hold that deployment's work only.
	Dep *raftfsm.Deployment
	// Live means Dep is running and this node is in one of its started batches: the orchestrator decides on
	// its outcome, so a failure here is reported and not retried.
	Live bool
	// Servers is how many servers Dep's current batch holds (when Live): how many report statuses at once.
	Servers int
}

// desiredFor decides, from the replicated state now, what node me should run for environment e:
//
//   - a running deployment whose started batches hold me: its release (deploy), or its lifecycle once
//     (restart, terminate);
//   - an environment whose latest succeeded deployment is a terminate: nothing running;
//   - otherwise the environment's desired release: the stable one, whatever deployments failed, were
//     cancelled or rolled back since. A finished deployment is never acted on.
//
// Pending deployments and those waiting for approval have not started and change nothing yet.
func desiredFor(s *raftfsm.State, e *raftfsm.Env, me string) target {
	var running, lastDone *raftfsm.Deployment
	for _, d := range s.EnvDeploys(e.Name) {
		if d.App != e.App {
			continue
		}
		if d.State == raftfsm.DeployRunning {
			running = d
		}
		if d.State == raftfsm.DeploySucceeded && (lastDone == nil || d.CreateIndex > lastDone.CreateIndex) {
			lastDone = d
		}
	}
	if running != nil && inBatches(running, me, running.Batch) {
		servers := 0 // the current batch's: the servers reporting at once
		if running.Batch >= 0 && running.Batch < len(running.Batches) {
			servers = len(running.Batches[running.Batch])
		}
		if running.Kind == raftfsm.DeployKindDeploy {
			return target{Kind: raftfsm.DeployKindDeploy, Release: running.Release, Dep: running, Live: true, Servers: servers}
		}
		return target{Kind: running.Kind, Dep: running, Live: true, Servers: servers}
	}
	if lastDone != nil && lastDone.Kind == raftfsm.DeployKindTerminate {
		return target{Kind: kindStopped}
	}
	if e.Desired == "" {
		return target{}
	}
	return target{Kind: raftfsm.DeployKindDeploy, Release: e.Desired}
}

// depID is the id of the deployment t reports to, or "".
func (t target) depID() string {
	if t.Dep == nil {
		return ""
	}
	return t.Dep.ID
}

// same reports whether two targets ask for the same work.
func (t target) same(o target) bool {
	return t.Kind == o.Kind && t.Release == o.Release && t.Live == o.Live && t.depID() == o.depID()
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
