package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/deployer"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/spread"
)

// TestBenchDeploy measures, on in-process meshes of 3 and 16 nodes wired as the binary wires them (spread for
// the peer-to-peer fetch, the deployer on every node), the time from a release committed (its upload answered)
// to every server of an all-at-once, auto-deploy environment running it and reporting healthy. The release is a
// small archive; its hooks are the app's Exec and a health check probed every 100 ms. It prints the figures
// beside the goal (≤ 3 s plus the hooks' own time) and asserts neither:
//
//	SHOAL_BENCH=smoke go test -count=1 -run BenchDeploy -v ./integration   # 3 nodes, 3 releases
//	SHOAL_BENCH=full  go test -count=1 -run BenchDeploy -v -timeout 20m ./integration   # 3 and 16 nodes, 5 releases each
func TestBenchDeploy(t *testing.T) {
	var sizes []int
	trials := 0
	switch mode := os.Getenv("SHOAL_BENCH"); mode {
	case "smoke", "1":
		sizes, trials = []int{3}, 3
	case "full":
		sizes, trials = []int{3, 16}, 5
	case "":
		t.Skip("benchmark: set SHOAL_BENCH=smoke or SHOAL_BENCH=full to run it (see docs/benchmarks.md)")
	default:
		t.Fatalf("SHOAL_BENCH=%q: use smoke or full", mode)
	}
	if _, err := os.Stat("/bin/bash"); err != nil {
		t.Skip("the deployer runs hooks with bash, which this machine lacks")
	}
	var report []string
	for _, size := range sizes {
		t.Run(fmt.Sprintf("%d-nodes", size), func(t *testing.T) {
			report = append(report, benchDeploy(t, size, trials))
		})
	}
	t.Logf("\nrelease committed → running and healthy on every server (all at once), goal ≤ 3 s plus the hooks' time\n%s\nmachine: %s",
		strings.Join(report, "\n"), benchMachine())
}

func benchDeploy(t *testing.T, size, trials int) string {
	c := node.NewTestCluster(t, size, nil)
	var (
		closers []func()
		app     *deployApp
		mu      sync.Mutex
	)
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		// Only now that no deployer runs: stop the apps, which outlive their agents by design.
		if app != nil {
			dirs := make([]string, 0, len(c.Nodes))
			for _, n := range c.Nodes {
				dirs = append(dirs, n.DataDir())
			}
			app.stopApps(dirs...)
		}
	})
	for _, n := range c.Nodes {
		sp, err := spread.Attach(n, spread.Options{})
		if err != nil {
			t.Fatal(err)
		}
		d, err := deployer.Attach(n, deployer.Options{Fetcher: sp})
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		closers = append(closers, sp.Close, func() { d.Close() })
		mu.Unlock()
	}
	var servers []string
	for _, n := range c.Nodes {
		servers = append(servers, n.Name())
	}
	via := c.Nodes[1]
	cl := client.New(via.HTTPAddr(), c.AdminToken)
	a := newDeployApp(t, cl, "web", "prod", servers, servers, raftfsm.Strategy{Kind: "all"}, true, "")
	mu.Lock()
	app = a
	mu.Unlock()

	var took, deployTook []time.Duration
	for i := range trials {
		version := "v" + strconv.Itoa(i+1)
		data := tarGzFiles(t, releaseFiles(version, false))
		var rel raftfsm.Release
		if err := cl.Upload(context.Background(), "/v1/apps/web/releases?version="+version, bytes.NewReader(data), &rel); err != nil {
			t.Fatal(err)
		}
		committed := time.Now()
		var dep *raftfsm.Deployment
		eventually(t, 120*time.Second, version+" healthy on every server", func() (bool, string) {
			c.Nodes[0].FSM().Read(func(s *raftfsm.State) {
				for _, d := range s.Deploys {
					if d.Release == version && d.Env == "prod" {
						cp := *d
						dep = &cp
					}
				}
			})
			if dep == nil {
				return false, "no deployment yet"
			}
			return dep.State == raftfsm.DeploySucceeded, describeDeployment(*dep)
		})
		took = append(took, time.Since(committed))
		deployTook = append(deployTook, dep.EndedAt.Sub(dep.CreatedAt))
		a.waitServing(10*time.Second, version, servers...)
		if os.Getenv("SHOAL_BENCH_LOG") != "" {
			var lr deployer.LogResponse
			if _, err := cl.Get(context.Background(), "/v1/deployments/"+dep.ID+"/nodes/"+servers[len(servers)-1]+"/log", &lr); err == nil {
				t.Logf("deployment %s created %s, ended %s; log of %s:\n%s", dep.ID, dep.CreatedAt.Format("15:04:05.000"),
					dep.EndedAt.Format("15:04:05.000"), lr.Node, lr.Log)
			}
		}
	}
	slices.Sort(took)
	slices.Sort(deployTook)
	med := took[len(took)/2]
	line := fmt.Sprintf("%2d servers, %d releases of %d bytes: committed → all healthy median %s (min %s, max %s); deployment created → succeeded median %s  %s",
		size, trials, len(tarGzFiles(t, releaseFiles("v1", false))), secs(med), secs(took[0]), secs(took[len(took)-1]),
		secs(deployTook[len(deployTook)/2]), verdict(med <= 3*time.Second))
	t.Log(line)
	return line
}
