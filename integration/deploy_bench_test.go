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
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/raftfsm"

	"github.com/shoal-ci/shoal/internal/testtier"
)

// TestBenchDeploy measures, on in-process meshes of 3 and 16 nodes wired as the binary wires them (spread for
// the peer-to-peer fetch, the deployer on every node), the time from a release committed (its upload answered)
// to every server of an all-at-once, auto-deploy environment running it and reporting healthy. The release is a
// small archive; its only hooks are the app's Exec and a health check command probed every 100 ms. It prints the figures
// beside the goal (≤ 3 s plus the hooks' own time) and asserts neither:
//
//	SHOAL_BENCH=smoke go test -count=1 -run BenchDeploy -v ./integration   # 3 nodes, 3 releases
//	SHOAL_BENCH=full  go test -count=1 -run BenchDeploy -v -timeout 20m ./integration   # 3 and 16 nodes, 5 releases each
func TestBenchDeploy(t *testing.T) {
	sizes, trials := []int{3}, 3
	if benchFull(t) {
		sizes, trials = []int{3, 16}, 5
	}
	if _, err := os.Stat("/bin/bash"); err != nil {
		testtier.Skip(t, "the deployer runs hooks with bash, which this machine lacks")
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
	var (
		app *deployApp
		mu  sync.Mutex
	)
	c := startDaemonMesh(t, size, nil)
	c.OnStop(func() {
		mu.Lock()
		defer mu.Unlock()
		if app != nil {
			dirs := make([]string, 0, len(c.Nodes))
			for _, n := range c.Nodes {
				dirs = append(dirs, n.DataDir())
			}
			app.stopApps(dirs...)
		}
	})
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
		data := tarGzFiles(t, benchReleaseFiles(version))
		var rel raftfsm.Release
		if err := cl.Upload(context.Background(), "/v1/apps/web/releases?version="+version, bytes.NewReader(data), &rel); err != nil {
			t.Fatal(err)
		}
		committed := time.Now()
		var dep *raftfsm.Deployment
		testutil.Eventually(t, 120*time.Second, version+" healthy on every server", func() (bool, string) {
			c.Nodes[0].FSM().Read(func(s *raftfsm.State) {
				for _, d := range s.Deploys {
					if d.Release == version && d.Env == "prod" {
						// A deep copy: the FSM writes the Nodes map of this record after the read lock is gone.
						cp := *d
						cp.Nodes = make(map[string]*raftfsm.NodeStatus, len(d.Nodes))
						for n, st := range d.Nodes {
							c := *st
							cp.Nodes[n] = &c
						}
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
			benchDeployTimeline(t, cl, *dep, servers)
		}
	}
	slices.Sort(took)
	slices.Sort(deployTook)
	med := took[len(took)/2]
	line := fmt.Sprintf("%2d servers, %d releases of %d bytes: committed → all healthy median %s (min %s, max %s); deployment created → succeeded median %s  %s",
		size, trials, len(tarGzFiles(t, benchReleaseFiles("v1"))), secs(med), secs(took[0]), secs(took[len(took)-1]),
		secs(deployTook[len(deployTook)/2]), verdict(med <= 3*time.Second))
	t.Log(line)
	return line
}

// benchDeployTimeline logs, for each server, when its log of the deployment began and how long its steps took
// (SHOAL_BENCH_LOG=1), to see where the time goes.
func benchDeployTimeline(t *testing.T, cl *client.Client, dep raftfsm.Deployment, servers []string) {
	var b strings.Builder
	fmt.Fprintf(&b, "deployment %s of %s: created %s, ended %s (+%s)\n", dep.ID, dep.Release, dep.CreatedAt.Format("15:04:05.000"),
		dep.EndedAt.Format("15:04:05.000"), dep.EndedAt.Sub(dep.CreatedAt).Round(time.Millisecond))
	for _, name := range servers {
		var lr deployer.LogResponse
		if _, err := cl.Get(context.Background(), "/v1/deployments/"+dep.ID+"/nodes/"+name+"/log", &lr); err != nil {
			fmt.Fprintf(&b, "  %s: %v\n", name, err)
			continue
		}
		var marks []string
		for _, line := range strings.Split(lr.Log, "\n") {
			ts, rest, ok := strings.Cut(line, " ")
			at, err := time.Parse("15:04:05.000", ts)
			if !ok || err != nil {
				continue
			}
			c := dep.CreatedAt.UTC()
			at = time.Date(c.Year(), c.Month(), c.Day(), at.Hour(), at.Minute(), at.Second(), at.Nanosecond(), time.UTC)
			word := strings.Fields(rest)[0]
			if word == "===" {
				word = strings.Fields(rest)[1]
			}
			marks = append(marks, fmt.Sprintf("%s+%d", strings.TrimSuffix(word, ":"), at.Sub(c).Milliseconds()))
		}
		st := dep.Nodes[name]
		healthyAt := ""
		if st != nil {
			healthyAt = fmt.Sprintf(" reported %s +%d", st.State, st.UpdatedAt.Sub(dep.CreatedAt).Milliseconds())
		}
		fmt.Fprintf(&b, "  %s:%s %s\n", name, healthyAt, strings.Join(marks, " "))
	}
	t.Log(b.String())
}

// benchReleaseFiles is a release with no hooks but the app itself and its health check, so the figure is the
// mesh's own time plus what any app needs.
func benchReleaseFiles(version string) map[string]string {
	manifest := strings.Replace(deployManifest, `  pre_install: [sh "$GATES/gate.sh" PreInstall]
  post_install: [sh "$SHOAL_INSTALLHOME/gate.sh" PostInstall]
  pre_start: [sh gate.sh PreStart]
`, "", 1)
	manifest = strings.Replace(manifest, "  post_start: [sh gate.sh PostStart]\n", "", 1)
	manifest = strings.Replace(manifest, "        sh gate.sh Health\n", "", 1)
	return map[string]string{"shoal.yml": manifest, "version.txt": version + "\n"}
}
