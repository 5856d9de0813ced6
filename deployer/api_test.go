package deployer

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/raftfsm"
)

// TestDeploymentAPI covers the reads, approval and cancel of deployments, and a node's log read through
// another node.
func TestDeploymentAPI(t *testing.T) {
	dc := newDeployCluster(t, 2, webTags)
	dc.createApp("web", "prod", nil, map[string]string{"role": "web"}, raftfsm.Strategy{Kind: "all"}, false)
	dc.release("web", "v1", releaseOpts{})
	ctx := t.Context()
	api := dc.api("n1")

	var bad client.Error
	_ = bad
	if _, err := api.Post(ctx, "/v1/envs/prod/deployments", CreateRequest{}, nil); !client.IsStatus(err, http.StatusBadRequest) {
		t.Fatalf("a deploy without a release: %v", err)
	}
	if _, err := api.Post(ctx, "/v1/envs/nope/deployments", CreateRequest{Release: "v1"}, nil); !client.IsStatus(err, http.StatusNotFound) {
		t.Fatalf("an unknown environment: %v", err)
	}
	if _, err := api.Post(ctx, "/v1/envs/prod/deployments", CreateRequest{Release: "v9"}, nil); !client.IsStatus(err, http.StatusNotFound) {
		t.Fatalf("an unknown release: %v", err)
	}

	// A deployment waiting for approval (as a pipeline makes them) starts once approved.
	e := dc.env("prod")
	waiting := NewDeployment(&e, dc.node("n1").Members(), raftfsm.DeployKindDeploy, "v1", "test", false, nil, time.Now())
	waiting.State = raftfsm.DeployWaiting
	dc.apply(&raftfsm.DeployCreate{Deployment: waiting})
	if _, err := api.Post(ctx, "/v1/envs/prod/deployments", CreateRequest{Release: "v1"}, nil); !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("a second deployment while one waits: %v", err)
	}
	if _, err := api.Post(ctx, "/v1/deployments/"+waiting.ID+"/cancel", nil, nil); err != nil {
		t.Fatal(err)
	}
	if d := dc.deployment(waiting.ID); d.State != raftfsm.DeployCancelled || d.Batch != -1 {
		t.Fatalf("cancelled before it started: %s", describe(d))
	}
	if _, err := api.Post(ctx, "/v1/deployments/"+waiting.ID+"/approve", nil, nil); !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("approving a cancelled deployment: %v", err)
	}
	waiting = NewDeployment(&e, dc.node("n1").Members(), raftfsm.DeployKindDeploy, "v1", "test", false, nil, time.Now())
	waiting.State = raftfsm.DeployWaiting
	dc.apply(&raftfsm.DeployCreate{Deployment: waiting})
	var approved raftfsm.Deployment
	if _, err := dc.api("n2").Post(ctx, "/v1/deployments/"+waiting.ID+"/approve", nil, &approved); err != nil {
		t.Fatal(err)
	}
	d := dc.waitDeployment(waiting.ID, 60*time.Second, raftfsm.DeploySucceeded)
	dc.waitServing(10*time.Second, "v1", "n1", "n2")

	var list []raftfsm.Deployment
	if _, err := api.Get(ctx, "/v1/envs/prod/deployments", &list); err != nil || len(list) != 2 || list[0].ID != d.ID {
		t.Fatalf("list (newest first): %v %v", list, err)
	}
	var one raftfsm.Deployment
	if _, err := api.Get(ctx, "/v1/deployments/"+d.ID, &one); err != nil || one.State != raftfsm.DeploySucceeded || len(one.Nodes) != 2 {
		t.Fatalf("get: %+v %v", one, err)
	}

	// n2's log of the deployment, read through n1 (node-to-node RPC) and on n2 itself.
	for _, via := range []string{"n1", "n2"} {
		var lr LogResponse
		if _, err := dc.api(via).Get(ctx, "/v1/deployments/"+d.ID+"/nodes/n2/log", &lr); err != nil {
			t.Fatalf("log via %s: %v", via, err)
		}
		for _, want := range []string{"deploying web release v1", "=== Env", "=== Exec", "=== Health", "healthy after"} {
			if lr.Node != "n2" || !strings.Contains(lr.Log, want) {
				t.Fatalf("log of n2 via %s lacks %q:\n%s", via, want, lr.Log)
			}
		}
	}

	// Pin and unpin.
	var pinned raftfsm.Env
	if _, err := api.Post(ctx, "/v1/envs/prod/pin", PinRequest{Reason: "freeze for the launch"}, &pinned); err != nil || !pinned.Pinned || pinned.PinReason != "freeze for the launch" {
		t.Fatalf("pin: %+v %v", pinned, err)
	}
	// Rolling back with nowhere to go is refused.
	if _, err := api.Post(ctx, "/v1/envs/prod/rollback", nil, nil); !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("rollback without an earlier release: %v", err)
	}
}
