package deployer

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// runtimeOn reads server's runtime record of env from node via's replicated state.
func (dc *deployCluster) runtimeOn(via, env, server string) *raftfsm.Runtime {
	var rt *raftfsm.Runtime
	dc.node(via).FSM().Read(func(s *raftfsm.State) {
		if r := s.Runtimes[raftfsm.RuntimeKey(env, server)]; r != nil {
			c := *r
			rt = &c
		}
	})
	return rt
}

// TestRuntimeReportsCoalesced: an Exec that crash-loops fast (restarting every 50 ms at most) fails its deployment
// with the crash loop named, is reported as a crash loop (read on another node), and costs about one Raft write
// a second, not one per restart. A server taken out of the environment takes its report with it.
func TestRuntimeReportsCoalesced(t *testing.T) {
	dc := newDeployCluster(t, 2, nil)
	dc.detach("n1")
	dc.opts = func(o *Options) { o.Exec.InitialBackoff, o.Exec.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond }
	reg := prometheus.NewRegistry()
	d1 := dc.attach(dc.node("n1"), reg)
	dc.createApp("web", "prod", []string{"n1"}, nil, raftfsm.Strategy{Kind: "all"}, false)
	dc.release("web", "v1", releaseOpts{manifest: "package:\n  include: ['*']\ndeploy:\n  exec:\n    - exit 1\n"})
	res := dc.deploy("n2", "prod", CreateRequest{Release: "v1"})
	d := dc.waitDeployment(res.Deployment.ID, 60*time.Second, raftfsm.DeployFailed)
	if st := d.Nodes["n1"]; st == nil || !strings.Contains(st.Error, "Exec is crash-looping: exit status 1 after") {
		t.Fatalf("the crash loop is not named: %s", describe(d))
	}
	dc.eventually(20*time.Second, "n1's crash loop, read on n2", func() (bool, string) {
		rt := dc.runtimeOn("n2", "prod", "n1")
		if rt == nil {
			return false, "no report"
		}
		return rt.Health == raftfsm.RuntimeCrashLoop && rt.Release == "v1" && rt.LastExit != nil, rt.Health + " " + rt.Detail
	})

	reports := func() float64 { return counterSum(t, reg, "shoal_runtime_reports_total") }
	sup := d1.supervisor("web", "prod")
	restarts0, reports0, start := sup.Status().Restarts, reports(), time.Now()
	dc.eventually(30*time.Second, "40 restarts", func() (bool, string) {
		n := sup.Status().Restarts - restarts0
		return n >= 40, ""
	})
	elapsed, writes := time.Since(start), reports()-reports0
	t.Logf("%d restarts in %s cost %d runtime writes (bound: one a second, %d)", sup.Status().Restarts-restarts0,
		elapsed.Round(time.Millisecond), int(writes), int(elapsed/runtimeInterval)+2)
	if writes > float64(elapsed/runtimeInterval)+2 {
		t.Fatalf("%v runtime writes in %s: a crash loop floods Raft", writes, elapsed)
	}

	// Out of the environment: n1's report goes, n2 reports that it runs nothing.
	// Read, change, write with the index read: the orchestrator may still be writing to the environment after
	// the failure (its pin), and this node may not have applied the last write yet; a conflict reads it again.
	dc.eventually(20*time.Second, "prod to move to n2 alone", func() (bool, string) {
		e := dc.env("prod")
		e.Servers = []string{"n2"}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		adminID, _, _ := strings.Cut(dc.c.AdminToken, ".")
		_, err := dc.c.Nodes[0].Apply(node.WithTokenID(ctx, adminID), &raftfsm.EnvPut{Env: e, CAS: e.ModifyIndex})
		return err == nil, fmt.Sprint(err)
	})
	dc.eventually(20*time.Second, "n1's report gone and n2's in", func() (bool, string) {
		gone, rt := dc.runtimeOn("n2", "prod", "n1"), dc.runtimeOn("n1", "prod", "n2")
		return gone == nil && rt != nil && rt.Health == raftfsm.RuntimeNone, ""
	})
}

// counterSum is counter name on reg, summed over its labels.
func counterSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
