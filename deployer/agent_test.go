package deployer

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

func webTags(string) map[string]string { return map[string]string{"role": "web"} }

// TestRollingDeploy deploys a first release all at once, then a second one rolling one server at a time:
// each batch starts only once the one before is healthy, and every server ends up serving the new release.
func TestRollingDeploy(t *testing.T) {
	dc := newDeployCluster(t, 3, webTags)
	dc.createApp("web", "prod", nil, map[string]string{"role": "web"}, raftfsm.Strategy{Kind: "rolling", BatchSize: 1}, false)
	dc.release("web", "v1", releaseOpts{})
	first := dc.deploy("n2", "prod", CreateRequest{Release: "v1", Strategy: &raftfsm.Strategy{Kind: "all"}})
	if first.Deployment == nil || len(first.Deployment.Batches) != 1 || len(first.Deployment.Batches[0]) != 3 {
		t.Fatalf("an all-at-once deployment to 3 servers: %+v", first)
	}
	dc.waitDeployment(first.Deployment.ID, 60*time.Second, raftfsm.DeploySucceeded)
	dc.waitServing(10*time.Second, "v1", "n1", "n2", "n3")
	if e := dc.env("prod"); e.Desired != "v1" || e.Stable != "v1" {
		t.Fatalf("after the first deployment the environment is %+v", e)
	}

	dc.release("web", "v2", releaseOpts{})
	res := dc.deploy("n3", "prod", CreateRequest{Release: "v2"})
	d := dc.waitDeployment(res.Deployment.ID, 60*time.Second, raftfsm.DeploySucceeded)
	if len(d.Batches) != 3 {
		t.Fatalf("rolling by one over 3 servers made batches %v", d.Batches)
	}
	// Each batch's server turned healthy before the next batch's server began.
	for i := 1; i < len(d.Batches); i++ {
		prev, cur := d.Nodes[d.Batches[i-1][0]], d.Nodes[d.Batches[i][0]]
		if prev == nil || cur == nil || prev.State != raftfsm.NodeHealthy || cur.State != raftfsm.NodeHealthy {
			t.Fatalf("batch %d or %d not healthy: %s", i, i+1, describe(d))
		}
	}
	dc.waitServing(10*time.Second, "v2", "n1", "n2", "n3")
	if e := dc.env("prod"); e.Desired != "v2" || e.Stable != "v2" || e.Pinned {
		t.Fatalf("after the rolling deployment the environment is %+v", e)
	}
	// The leader counted the deployments and, within a few seconds, the servers on each release.
	leader := dc.c.Leader()
	dc.eventually(15*time.Second, "the leader's deployment metrics", func() (bool, string) {
		mfs, err := leader.Registry().Gather()
		if err != nil {
			return false, err.Error()
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				key := mf.GetName()
				for _, l := range m.GetLabel() {
					key += "," + l.GetName() + "=" + l.GetValue()
				}
				got[key] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
		ok := got["shoal_nodes_on_release,app=web,env=prod,release=v2"] == 3 &&
			got["shoal_deployments_total,app=web,env=prod,result=succeeded"] >= 1
		return ok, fmt.Sprint(got["shoal_nodes_on_release,app=web,env=prod,release=v2"], got["shoal_deployments_total,app=web,env=prod,result=succeeded"])
	})
	// The first release stays on disk (the last five are kept), and current points at the second.
	for _, name := range dc.names() {
		dir := dc.deps[name].EnvDir("web", "prod")
		if cur := currentBase(dir); cur != "v2" {
			t.Errorf("%s: current is %q", name, cur)
		}
		if _, err := os.Stat(filepath.Join(dir, "releases", "v1", "version.txt")); err != nil {
			t.Errorf("%s: the previous release was not kept: %v", name, err)
		}
	}
}

// TestRollingDeployOrder checks the order itself: with one server per batch, the deployment's statuses
// show no server of a batch starting before the previous batch's server was healthy.
func TestRollingDeployOrder(t *testing.T) {
	dc := newDeployCluster(t, 3, webTags)
	dc.createApp("web", "prod", nil, map[string]string{"role": "web"}, raftfsm.Strategy{Kind: "rolling", BatchSize: 1}, false)
	dc.release("web", "v1", releaseOpts{})
	res := dc.deploy("n1", "prod", CreateRequest{Release: "v1"})
	id := res.Deployment.ID
	// Sample the deployment as it goes: no server outside the started batches may report anything.
	deadline := time.Now().Add(60 * time.Second)
	for {
		d := dc.deployment(id)
		for name := range d.Nodes {
			if !inBatches(&d, name, d.Batch) {
				t.Fatalf("%s reports before its batch started: %s", name, describe(d))
			}
		}
		for i := 0; i < d.Batch; i++ {
			for _, name := range d.Batches[i] {
				if st := d.Nodes[name]; st == nil || st.State != raftfsm.NodeHealthy {
					t.Fatalf("batch %d started while %s of batch %d is not healthy: %s", d.Batch+1, name, i+1, describe(d))
				}
			}
		}
		if d.Finished() {
			if d.State != raftfsm.DeploySucceeded {
				t.Fatalf("deployment ended %s", describe(d))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deployment did not finish: %s", describe(d))
		}
		time.Sleep(10 * time.Millisecond)
	}
	dc.waitServing(10*time.Second, "v1", "n1", "n2", "n3")
}

// TestFailedHealthCheckRollsBack deploys a release whose health check never passes: the deployment stops
// after the first batch, the environment goes back to the stable release and is pinned, and every server
// serves the old release again. Auto deploy stays suspended until the environment is unpinned.
func TestFailedHealthCheckRollsBack(t *testing.T) {
	dc := newDeployCluster(t, 3, webTags)
	dc.createApp("web", "prod", nil, map[string]string{"role": "web"},
		raftfsm.Strategy{Kind: "rolling", BatchSize: 1, AutoRollback: true}, true)
	dc.release("web", "v1", releaseOpts{})
	// Auto deploy sends the first release by itself.
	dc.eventually(60*time.Second, "auto deploy of v1", func() (bool, string) {
		e := dc.env("prod")
		return e.Desired == "v1", fmt.Sprintf("%+v", e)
	})
	dc.waitServing(10*time.Second, "v1", "n1", "n2", "n3")

	dc.release("web", "v2", releaseOpts{unhealthy: true})
	var bad raftfsm.Deployment
	dc.eventually(60*time.Second, "the deployment of v2 to end", func() (bool, string) {
		for _, d := range dc.deploymentsOf("prod") {
			if d.Release == "v2" {
				bad = d
				return d.Finished(), describe(d)
			}
		}
		return false, "no deployment of v2 yet"
	})
	if bad.State != raftfsm.DeployRolledBack || bad.Batch != 0 || len(bad.Nodes) != 1 {
		t.Fatalf("the failing deployment should stop in its first batch and roll back: %s", describe(bad))
	}
	for name, st := range bad.Nodes {
		if st.State != raftfsm.NodeFailed || !strings.Contains(st.Error, "not healthy") {
			t.Fatalf("%s: %+v", name, st)
		}
	}
	e := dc.env("prod")
	if !e.Pinned || !strings.Contains(e.PinReason, "rollback") || e.Desired != "v1" {
		t.Fatalf("after the rollback the environment is %+v", e)
	}
	// The rollback is a deployment of its own, of the stable release.
	var rb raftfsm.Deployment
	dc.eventually(10*time.Second, "the rollback deployment", func() (bool, string) {
		all := dc.deploymentsOf("prod")
		rb = all[len(all)-1]
		return strings.Contains(rb.By, "auto-rollback"), describe(rb)
	})
	if rb.Release != "v1" || rb.CreateIndex < bad.CreateIndex || bad.Rollback != rb.ID || rb.RollbackOf != bad.ID {
		t.Fatalf("the rollback is %s", describe(rb))
	}
	dc.waitDeployment(rb.ID, 30*time.Second, raftfsm.DeploySucceeded)
	dc.waitServing(10*time.Second, "v1", "n1", "n2", "n3")

	// Pinned: a new release is not deployed by itself. An unpinned environment without servers shows when
	// the orchestrator has seen the release.
	dc.createEnv("web", "canary", nil, nil, raftfsm.Strategy{Kind: "all"}, true)
	dc.release("web", "v3", releaseOpts{})
	dc.eventually(30*time.Second, "auto deploy of v3 to the unpinned environment", func() (bool, string) {
		return dc.env("canary").Desired == "v3", fmt.Sprintf("%+v", dc.env("canary"))
	})
	for _, d := range dc.deploymentsOf("prod") {
		if d.Release == "v3" {
			t.Fatalf("a pinned environment took an auto deploy: %s", describe(d))
		}
	}
	var out raftfsm.Env
	if _, err := dc.api("n2").Post(t.Context(), "/v1/envs/prod/unpin", nil, &out); err != nil || out.Pinned {
		t.Fatalf("unpin: %+v, %v", out, err)
	}
	dc.eventually(60*time.Second, "auto deploy of v3 after unpin", func() (bool, string) {
		e := dc.env("prod")
		return e.Desired == "v3", fmt.Sprintf("%+v", e)
	})
	dc.waitServing(10*time.Second, "v3", "n1", "n2", "n3")
}

// TestLateJoinerConverges adds a server to an environment after its deployment: it installs the
// environment's release by itself, and the finished deployment's record does not change (history is immutable).
func TestLateJoinerConverges(t *testing.T) {
	dc := newDeployCluster(t, 2, webTags)
	dc.createApp("web", "prod", nil, map[string]string{"role": "web"}, raftfsm.Strategy{Kind: "all"}, false)
	dc.release("web", "v1", releaseOpts{})
	res := dc.deploy("n1", "prod", CreateRequest{Release: "v1"})
	dc.waitDeployment(res.Deployment.ID, 60*time.Second, raftfsm.DeploySucceeded)
	dc.waitServing(10*time.Second, "v1", "n1", "n2")

	before := dc.deployment(res.Deployment.ID)
	dc.join("n3")
	dc.waitServing(60*time.Second, "v1", "n3")
	if after := dc.deployment(res.Deployment.ID); after.ModifyIndex != before.ModifyIndex || after.Nodes["n3"] != nil {
		t.Fatalf("a finished deployment changed: %s", describe(after))
	}
}

// TestServerNamedLater puts a server into an environment by name after the environment deployed: it
// converges without any deployment.
func TestServerNamedLater(t *testing.T) {
	dc := newDeployCluster(t, 2, nil)
	dc.createApp("web", "prod", []string{"n1"}, nil, raftfsm.Strategy{Kind: "all"}, false)
	dc.release("web", "v1", releaseOpts{})
	res := dc.deploy("n1", "prod", CreateRequest{Release: "v1"})
	dc.waitDeployment(res.Deployment.ID, 60*time.Second, raftfsm.DeploySucceeded)
	if d := dc.deployment(res.Deployment.ID); len(d.Batches) != 1 || !slices.Equal(d.Batches[0], []string{"n1"}) {
		t.Fatalf("batches %v", d.Batches)
	}
	e := dc.env("prod")
	e.Servers = []string{"n1", "n2"}
	dc.apply(&raftfsm.EnvPut{Env: e})
	dc.eventually(60*time.Second, "n2 to run v1", func() (bool, string) {
		rec, _ := loadRecord(dc.deps["n2"].EnvDir("web", "prod"))
		return rec != nil && rec.Release == "v1", fmt.Sprintf("%+v", rec)
	})
}

// TestServerInTwoEnvironments runs two apps' environments on one server: each has its own directory, process
// and release, and deploying one leaves the other alone.
func TestServerInTwoEnvironments(t *testing.T) {
	dc := newDeployCluster(t, 2, nil)
	all := raftfsm.Strategy{Kind: "all"}
	dc.createApp("web", "prod", []string{"n1", "n2"}, nil, all, false)
	dc.createApp("api", "api-prod", []string{"n1"}, nil, all, false)
	// The api's copy on n1 listens on a port of its own.
	apiPort := appPort(t)
	e := dc.env("api-prod")
	e.Vars["PORT_n1"] = raftfsm.Var{Value: fmt.Sprint(apiPort)}
	dc.apply(&raftfsm.EnvPut{Env: e})

	dc.release("web", "v1", releaseOpts{})
	dc.release("api", "a1", releaseOpts{})
	w := dc.deploy("n1", "prod", CreateRequest{Release: "v1"})
	a := dc.deploy("n2", "api-prod", CreateRequest{Release: "a1"})
	dc.waitDeployment(w.Deployment.ID, 60*time.Second, raftfsm.DeploySucceeded)
	dc.waitDeployment(a.Deployment.ID, 60*time.Second, raftfsm.DeploySucceeded)
	dc.waitServing(10*time.Second, "v1", "n1", "n2")
	apiServing := func() string {
		resp, err := dc.http.Get(fmt.Sprintf("http://127.0.0.1:%d/", apiPort))
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b := make([]byte, 100)
		n, _ := resp.Body.Read(b)
		return string(b[:n])
	}
	dc.eventually(10*time.Second, "the api on n1", func() (bool, string) { got := apiServing(); return version(got) == "a1", got })
	before := apiServing()

	dc.release("web", "v2", releaseOpts{})
	w2 := dc.deploy("n1", "prod", CreateRequest{Release: "v2"})
	dc.waitDeployment(w2.Deployment.ID, 60*time.Second, raftfsm.DeploySucceeded)
	dc.waitServing(10*time.Second, "v2", "n1", "n2")
	if got := apiServing(); got != before {
		t.Fatalf("deploying web changed the api on the same server: %q, was %q", got, before)
	}
	if _, err := os.Stat(filepath.Join(dc.deps["n1"].EnvDir("api", "api-prod"), "releases", "a1", "version.txt")); err != nil {
		t.Fatal(err)
	}
}
