package raftfsm

import (
	"regexp"
	"slices"
	"strings"
	"time"
)

// TriggerPullRequest is the trigger of a build of a pull or merge request's head.
const TriggerPullRequest = "pull_request"

// pullRequestDeploy refuses a deployment of a release built from a pull request unless a person asks for it
// (not auto deploy, not a promotion) and the environment allows pull request releases.
func pullRequestDeploy(e *Env, r *Release, by string) *Error {
	if r.PullRequest == 0 {
		return nil
	}
	if by == "auto-deploy" || strings.HasPrefix(by, "promotion") {
		return conflict("release %s is from pull request #%d: auto deploy and promotion never deploy it", r.Version, r.PullRequest)
	}
	if !e.AllowPullRequests {
		return conflict("release %s is from pull request #%d and environment %q does not allow pull request releases: `node env update %s --allow-pull-requests`",
			r.Version, r.PullRequest, e.Name, e.Name)
	}
	return nil
}

// Build server commands: the leader assigns a queued build to a build server under its term, the build server
// renews a lease on it, and the leader takes back a build whose lease it saw expire.
const (
	CmdBuildAssign  CommandType = 48
	CmdBuildLease   CommandType = 49
	CmdBuildRequeue CommandType = 50
)

// BuildAssign marks a queued build running on build server Node under leader term Term (which must be the
// current one). The build server sees the record and runs the build; it holds it while it renews the lease.
type BuildAssign struct {
	ID   string    `json:"ID"`
	Term uint64    `json:"Term"`
	Node string    `json:"Node"`
	At   time.Time `json:"At"`
}

// BuildLease renews a build server's lease on a running build. Node and Attempt must be the record's: a build
// server whose build was taken back (requeued, reassigned) is told so by the rejection and stops.
type BuildLease struct {
	ID      string `json:"ID"`
	Node    string `json:"Node"`
	Attempt int    `json:"Attempt"`
}

// BuildRequeue takes a running build back from its build server and queues it again. The leader sends it when
// it has seen no renewal for a lease's length; Attempt and Renewals are what it saw, so a renewal committed in
// between wins and the build stays.
type BuildRequeue struct {
	ID       string    `json:"ID"`
	Term     uint64    `json:"Term"`
	Attempt  int       `json:"Attempt"`
	Renewals uint64    `json:"Renewals"`
	Reason   string    `json:"Reason"`
	At       time.Time `json:"At"`
}

func (*BuildAssign) Type() CommandType  { return CmdBuildAssign }
func (*BuildLease) Type() CommandType   { return CmdBuildLease }
func (*BuildRequeue) Type() CommandType { return CmdBuildRequeue }

// capabilityRE is what one build capability may look like (also the values of a node's `build` tag).
var capabilityRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// checkCapabilities validates and normalizes (sorted, unique) an app's build capabilities.
func checkCapabilities(caps []string) ([]string, *Error) {
	for _, c := range caps {
		if !capabilityRE.MatchString(c) {
			return nil, badRequest("build capability %q is not valid: use 1-63 letters, digits, '.', '_' or '-'", c)
		}
	}
	if len(caps) == 0 {
		return nil, nil
	}
	out := slices.Clone(caps)
	slices.Sort(out)
	return slices.Compact(out), nil
}

func applyBuildAssign(s *State, index uint64, c *BuildAssign) (any, *Error) {
	b, ok := s.Builds[c.ID]
	if !ok {
		return nil, notFound("build %q does not exist", c.ID)
	}
	if c.Term != s.Term {
		return nil, conflict("build %q assignment carries leader term %d but the current term is %d", c.ID, c.Term, s.Term)
	}
	if c.Node == "" {
		return nil, badRequest("a build assignment needs a build server's name")
	}
	if b.State != BuildQueued {
		return nil, conflict("build %q is %s, not queued", c.ID, b.State)
	}
	b = s.editBuild(c.ID) // copy on write (cow.go): a snapshot may be encoding the old record
	b.State, b.Term, b.Node, b.StartedAt = BuildRunning, c.Term, c.Node, c.At
	b.Remote, b.Renewals = true, 0
	b.Attempt++
	b.ModifyIndex = index
	return b, nil
}

// leaseHolder rejects a command about build b from a node that does not hold its lease.
func leaseHolder(b *Build, node string, attempt int) *Error {
	if b.State != BuildRunning || !b.Remote || b.Node != node || b.Attempt != attempt {
		return conflict("build %q attempt %d is not running on build server %q (it is %s on %q, attempt %d): its lease is lost",
			b.ID, attempt, node, b.State, b.Node, b.Attempt)
	}
	return nil
}

func applyBuildLease(s *State, index uint64, c *BuildLease) (any, *Error) {
	b, ok := s.Builds[c.ID]
	if !ok {
		return nil, notFound("build %q does not exist", c.ID)
	}
	if err := leaseHolder(b, c.Node, c.Attempt); err != nil {
		return nil, err
	}
	b = s.editBuild(c.ID)
	b.Renewals++
	b.ModifyIndex = index
	return b, nil
}

func applyBuildRequeue(s *State, index uint64, c *BuildRequeue) (any, *Error) {
	b, ok := s.Builds[c.ID]
	if !ok {
		return nil, notFound("build %q does not exist", c.ID)
	}
	if c.Term != s.Term {
		return nil, conflict("build %q requeue carries leader term %d but the current term is %d", c.ID, c.Term, s.Term)
	}
	if b.State != BuildRunning || !b.Remote || b.Attempt != c.Attempt || b.Renewals != c.Renewals {
		return nil, conflict("build %q changed since its lease was seen expiring (now %s, attempt %d, %d renewals)",
			c.ID, b.State, b.Attempt, b.Renewals)
	}
	b = s.editBuild(c.ID)
	b.State, b.Term, b.Node, b.Remote, b.Renewals = BuildQueued, 0, "", false, 0
	b.Requeued = c.Reason
	b.ModifyIndex = index
	return b, nil
}
