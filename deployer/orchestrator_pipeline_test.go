package deployer

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/raftfsm"
)

// TestPipeline chains dev → staging → prod (prod needs approval): a new release deploys itself to dev, is
// promoted to staging once dev is healthy on it, and waits for approval before prod. A manual promote
// skips the wait.
func TestPipeline(t *testing.T) {
	dc := newDeployCluster(t, 3, nil)
	all := raftfsm.Strategy{Kind: "all"}
	dc.createApp("web", "dev", []string{"n1"}, nil, all, true)
	dc.createEnv("web", "staging", []string{"n2"}, nil, all, true) // auto deploy is ignored: the pipeline feeds it
	dc.createEnv("web", "prod", []string{"n3"}, nil, all, false)
	ctx := t.Context()
	api := dc.api("n2")
	var p raftfsm.Pipeline
	stages := []raftfsm.PipelineStage{{Env: "dev"}, {Env: "staging"}, {Env: "prod", Approval: true}}
	if _, err := api.Do(ctx, "PUT", "/v1/apps/web/pipeline", PipelineRequest{Stages: stages}, &p); err != nil || len(p.Stages) != 3 {
		t.Fatalf("put pipeline: %+v %v", p, err)
	}
	if _, err := api.Do(ctx, "PUT", "/v1/apps/web/pipeline", PipelineRequest{Stages: stages, CAS: p.ModifyIndex + 100}, nil); !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("a stale pipeline write: %v", err)
	}
	var got raftfsm.Pipeline
	if _, err := dc.api("n3").Get(ctx, "/v1/apps/web/pipeline?consistent", &got); err != nil || fmt.Sprint(got.Stages) != fmt.Sprint(stages) {
		t.Fatalf("get pipeline: %+v %v", got, err)
	}

	dc.release("web", "v1", releaseOpts{})
	dc.waitServing(60*time.Second, "v1", "n1", "n2")
	var waiting raftfsm.Deployment
	dc.eventually(30*time.Second, "a prod deployment waiting for approval", func() (bool, string) {
		for _, d := range dc.deploymentsOf("prod") {
			waiting = d
			return d.State == raftfsm.DeployWaiting && d.Release == "v1", describe(d)
		}
		return false, "none yet"
	})
	if dc.serving("n3") != "" {
		t.Fatal("prod runs something before the approval")
	}
	if _, err := dc.api("n3").Post(ctx, "/v1/deployments/"+waiting.ID+"/approve", nil, nil); err != nil {
		t.Fatal(err)
	}
	d := dc.waitDeployment(waiting.ID, 60*time.Second, raftfsm.DeploySucceeded)
	if d.ApprovedBy != "admin" {
		t.Fatalf("approved by %q", d.ApprovedBy)
	}
	dc.waitServing(10*time.Second, "v1", "n3")

	// The next release goes through dev and staging by itself; promoting it by hand starts prod at once.
	dc.release("web", "v2", releaseOpts{})
	dc.waitServing(60*time.Second, "v2", "n1", "n2")
	dc.eventually(30*time.Second, "prod waiting for v2", func() (bool, string) {
		all := dc.deploymentsOf("prod")
		waiting = all[len(all)-1]
		return waiting.Release == "v2" && waiting.State == raftfsm.DeployWaiting, describe(waiting)
	})
	if _, err := dc.api("n1").Post(ctx, "/v1/deployments/"+waiting.ID+"/cancel", nil, nil); err != nil {
		t.Fatal(err)
	}
	var res CreateResult
	if _, err := dc.api("n1").Post(ctx, "/v1/apps/web/promote", PromoteRequest{Release: "v2", From: "staging"}, &res); err != nil {
		t.Fatal(err)
	}
	if res.Deployment == nil || res.Deployment.Env != "prod" || res.Deployment.State != raftfsm.DeployPending {
		t.Fatalf("promote: %+v", res)
	}
	dc.waitDeployment(res.Deployment.ID, 60*time.Second, raftfsm.DeploySucceeded)
	dc.waitServing(10*time.Second, "v2", "n3")
	// Only a release that runs in the source environment can be promoted.
	if _, err := dc.api("n1").Post(ctx, "/v1/apps/web/promote", PromoteRequest{Release: "v1", From: "staging"}, nil); !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("promoting a release the source does not run: %v", err)
	}

	// v3 waits for approval in prod; v4 passes dev and staging meanwhile: it supersedes v3, which is cancelled
	// with the reason and can no longer be approved, and v4 waits in its place. Approving v4 deploys v4.
	dc.release("web", "v3", releaseOpts{})
	var v3 raftfsm.Deployment
	dc.eventually(60*time.Second, "prod waiting for v3", func() (bool, string) {
		all := dc.deploymentsOf("prod")
		v3 = all[len(all)-1]
		return v3.Release == "v3" && v3.State == raftfsm.DeployWaiting, describe(v3)
	})
	dc.release("web", "v4", releaseOpts{})
	dc.waitServing(60*time.Second, "v4", "n1", "n2")
	var v4 raftfsm.Deployment
	dc.eventually(30*time.Second, "v4 waiting in prod in v3's place", func() (bool, string) {
		all := dc.deploymentsOf("prod")
		v4 = all[len(all)-1]
		return v4.Release == "v4" && v4.State == raftfsm.DeployWaiting, describe(v4)
	})
	old := dc.waitDeployment(v3.ID, 10*time.Second, raftfsm.DeployCancelled)
	if old.CancelledBy != "superseded by v4" || !strings.Contains(old.Error, "superseded: release v4 succeeded in staging") {
		t.Errorf("the superseded deployment says by %q: %q", old.CancelledBy, old.Error)
	}
	if _, err := dc.api("n2").Post(ctx, "/v1/deployments/"+v3.ID+"/approve", nil, nil); !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("approving the superseded deployment: %v, want a conflict", err)
	}
	if _, err := dc.api("n2").Post(ctx, "/v1/deployments/"+v4.ID+"/approve", nil, nil); err != nil {
		t.Fatal(err)
	}
	dc.waitDeployment(v4.ID, 60*time.Second, raftfsm.DeploySucceeded)
	dc.waitServing(10*time.Second, "v4", "n3")
	if dc.serving("n3") == "" {
		t.Fatal("prod serves nothing after v4's approval")
	}
}
