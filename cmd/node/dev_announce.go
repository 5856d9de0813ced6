package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

// announce prints one line for each build of the sample and each deployment to its environment that ends after
// the setup, until ctx ends: the dev mesh's log goes to a file, so this is how a commit's rollout shows.
func (s *devSession) announce(ctx context.Context) {
	seen := map[string]bool{}
	first := true
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		var bs []raftfsm.Build
		if _, err := s.api.Get(ctx, "/v1/apps/"+devApp+"/builds?limit=20", &bs); err == nil {
			for i := len(bs) - 1; i >= 0; i-- {
				b := bs[i]
				if b.Finished() && !seen["b/"+b.ID] {
					seen["b/"+b.ID] = true
					if !first {
						s.status("%s", buildLine(b))
					}
				}
			}
		}
		var ds []raftfsm.Deployment
		if _, err := s.api.Get(ctx, "/v1/envs/"+devEnv+"/deployments?limit=20", &ds); err == nil {
			for i := len(ds) - 1; i >= 0; i-- {
				d := ds[i]
				if d.Finished() && !seen["d/"+d.ID] {
					seen["d/"+d.ID] = true
					if !first {
						s.status("%s", deploymentLine(d))
					}
				}
			}
		}
		first = false
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// buildLine says how a build ended, in one line.
func buildLine(b raftfsm.Build) string {
	line := fmt.Sprintf("build %s %s in %s", b.ID, b.State, b.EndedAt.Sub(b.StartedAt).Round(100*time.Millisecond))
	if b.Release != "" {
		line += ": release " + b.Release
	}
	if len(b.Commit) >= 7 {
		line += " from " + b.Commit[:7]
	}
	if msg, _, _ := strings.Cut(b.Message, "\n"); msg != "" {
		line += fmt.Sprintf(" %q", msg)
	}
	if b.Error != "" {
		line += " (" + b.Error + "; its log: " + selfPath() + " log " + b.ID + ")"
	}
	return line
}

// deploymentLine says how a deployment ended, in one line.
func deploymentLine(d raftfsm.Deployment) string {
	line := fmt.Sprintf("deployment %s: %s %s to %s %s in %s", d.ID, d.Kind, dash(d.Release), d.Env, d.State, deployTook(d))
	if d.Error != "" {
		line += " (" + d.Error + ")"
	}
	return line
}
