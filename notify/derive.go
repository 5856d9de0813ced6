package notify

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

// derive lists the events that the builds and deployments changed after index since imply, in the order they
// happened as far as the state tells (by the record's index, then started before finished). The events implied
// by a record depend only on its current state, and grow as it moves on: a leader that missed a step (it took
// over late, or two steps were applied between two looks) still derives every event, and the keys make a second
// derivation of one event harmless.
//
// It visits only the records changed after since (State.TouchedSince), so its cost follows the changes, not the
// records; when the change list does not reach back that far (after a restart), it looks at every record once.
func derive(s *raftfsm.State, since uint64, dashboard string, now time.Time) []raftfsm.Event {
	var out []raftfsm.Event
	builds, deploys, ok := s.TouchedSince(since)
	if !ok {
		builds, deploys = slices.Collect(maps.Keys(s.Builds)), slices.Collect(maps.Keys(s.Deploys))
	}
	for _, id := range builds {
		if b := s.Builds[id]; b != nil && b.ModifyIndex > since {
			out = append(out, buildEvents(b, dashboard, now)...)
		}
	}
	for _, id := range deploys {
		if d := s.Deploys[id]; d != nil && d.ModifyIndex > since {
			out = append(out, deployEvents(d, dashboard, now)...)
		}
	}
	slices.SortStableFunc(out, func(a, b raftfsm.Event) int {
		return cmp.Or(cmp.Compare(a.Index, b.Index), cmp.Compare(raftfsm.EventRecord(a.Key), raftfsm.EventRecord(b.Key)))
	})
	return out
}

func at(t, now time.Time) time.Time {
	if t.IsZero() {
		return now
	}
	return t
}

func buildEvents(b *raftfsm.Build, dashboard string, now time.Time) []raftfsm.Event {
	eb := &raftfsm.EventBuild{ID: b.ID, Number: b.Number, Commit: b.Commit, Ref: b.Ref, Branch: b.Branch,
		Message: b.Message, Trigger: b.Trigger, State: b.State, Attempt: b.Attempt, Error: b.Error, Release: b.Release,
		PullRequest: b.PullRequest}
	ev := func(key, name string, t time.Time) raftfsm.Event {
		return raftfsm.Event{Key: key, Name: name, App: b.App, Index: b.ModifyIndex, At: at(t, now),
			URL: link(dashboard, "builds", b.ID), Build: eb}
	}
	var out []raftfsm.Event
	// A build that was started and then requeued by a new leader starts again: each attempt is an event.
	if b.Attempt > 0 {
		out = append(out, ev(fmt.Sprintf("build:%s:started:%d", b.ID, b.Attempt), raftfsm.EventBuildStarted, b.StartedAt))
	}
	var name string
	switch b.State {
	case raftfsm.BuildSucceeded:
		name = raftfsm.EventBuildSucceeded
	case raftfsm.BuildFailed:
		name = raftfsm.EventBuildFailed
	case raftfsm.BuildCancelled:
		name = raftfsm.EventBuildCancelled
	}
	if name != "" {
		out = append(out, ev("build:"+b.ID+":"+b.State, name, b.EndedAt))
	}
	return out
}

func deployEvents(d *raftfsm.Deployment, dashboard string, now time.Time) []raftfsm.Event {
	ed := &raftfsm.EventDeployment{ID: d.ID, Kind: d.Kind, Env: d.Env, Release: d.Release, Previous: d.Previous,
		State: d.State, Error: d.Error, By: d.By, ApprovedBy: d.ApprovedBy}
	ev := func(step, name string, t time.Time) raftfsm.Event {
		return raftfsm.Event{Key: "deploy:" + d.ID + ":" + step, Name: name, App: d.App, Env: d.Env, Index: d.ModifyIndex,
			At: at(t, now), URL: link(dashboard, "deployments", d.ID), Deployment: ed}
	}
	var out []raftfsm.Event
	// A deployment approved since it was created waited for its approval, whether or not a leader saw it wait.
	if d.State == raftfsm.DeployWaiting || d.ApprovedBy != "" {
		e := ev("approval", raftfsm.EventApprovalWaiting, d.CreatedAt)
		e.Index = d.CreateIndex // it waited from its creation
		out = append(out, e)
	}
	switch d.State {
	case raftfsm.DeployPending, raftfsm.DeployRunning, raftfsm.DeploySucceeded, raftfsm.DeployFailed, raftfsm.DeployRolledBack:
		out = append(out, ev("started", raftfsm.EventDeployStarted, d.CreatedAt))
	}
	switch d.State {
	case raftfsm.DeploySucceeded:
		out = append(out, ev(d.State, raftfsm.EventDeploySucceeded, d.EndedAt))
	case raftfsm.DeployFailed:
		out = append(out, ev(d.State, raftfsm.EventDeployFailed, d.EndedAt))
	case raftfsm.DeployRolledBack:
		out = append(out, ev(d.State, raftfsm.EventDeployRolledBack, d.EndedAt))
	}
	return out
}

// link is the dashboard's page of a record ("" without a dashboard URL).
func link(dashboard, kind, id string) string {
	if dashboard == "" {
		return ""
	}
	return strings.TrimSuffix(dashboard, "/") + "/#/" + kind + "/" + id
}
