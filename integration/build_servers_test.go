package integration

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/builder"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/raftfsm"
)

// addBuildServer joins one more node process to m with the given tags (it joins as a non-voter: the mesh has
// its voters) and waits until it is in the Raft configuration and gossip shows it alive.
func (m *pmesh) addBuildServer(tags ...string) *pnode {
	m.t.Helper()
	i := len(m.nodes)
	ip := loopbackIP(i)
	n := &pnode{name: fmt.Sprintf("n%d", i+1), ip: ip, dir: filepath.Join(m.dir, fmt.Sprintf("n%d", i+1)),
		httpPort: freePort(m.t, ip), gossipPort: freePort(m.t, ip), quicPort: freePort(m.t, ip)}
	m.nodes = append(m.nodes, n)
	args := append([]string{"join", m.nodes[0].quic(), "--token", m.join, "--name", n.name}, m.nodeArgs(n)...)
	for _, tag := range tags {
		args = append(args, "--tag", tag)
	}
	n.proc = startProc(m.t, n.name, args...)
	m.eventually(30*time.Second, n.name+" in Raft and alive", func() (bool, string) {
		ms, err := m.members(m.nodes[0])
		if err != nil {
			return false, err.Error()
		}
		for _, x := range ms {
			if x.Name == n.name && x.Role == "nonvoter" && x.Status == "alive" && len(x.Tags) == len(tags) {
				return true, ""
			}
		}
		return false, memberSummary(ms)
	})
	return n
}

// TestBuildServers runs a mesh of three untagged voters and two build servers tagged build=linux as real
// processes. Builds land on the build servers and never on a voter; the build server running a build is killed
// with SIGKILL mid-build, its lease expires, the build runs again on the other build server and becomes exactly
// one release, held first by that server, whose log any node serves; a build needing a capability no server
// has waits with the reason that `node builds` prints.
func TestBuildServers(t *testing.T) {
	needProcesses(t)
	g := newGate(t)
	repo := newTestRepo(t, t.TempDir(), "web.git")
	sha := repo.commit("web", map[string]string{"shoal.yml": `
build:
  build:
    - echo "building on $(cat /proc/sys/kernel/hostname)"
    - mktemp "$GATE.started.XXXXXX"
    - ` + g.line() + `
package:
  include: [shoal.yml]
`})
	m := startPmesh(t, 3)
	voters := slices.Clone(m.nodes)
	leader := m.waitHealthy(m.nodes...)
	b1 := m.addBuildServer("build=linux")
	b2 := m.addBuildServer("build=linux,arm", "build-slots=1")
	api := m.client(voters[0])
	api.RetryNoLeader = 30 * time.Second
	ctx := context.Background()
	if _, err := api.Post(ctx, "/v1/apps", map[string]any{"name": "web", "repo": repo.dir, "build_capabilities": []string{"linux"},
		"build_vars": map[string]any{"GATE": map[string]any{"value": g.path}}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := api.Post(ctx, "/v1/apps", map[string]any{"name": "gpu", "repo": repo.dir}, nil); err != nil {
		t.Fatal(err)
	}
	// The capability is set with the CLI, as an operator would.
	cli := exec.Command(nodeBinary(t), "--addr", voters[0].api(), "--token", m.admin, "app", "update", "gpu", "--build-capability", "cuda")
	cli.Env = cleanEnv()
	if out, err := cli.CombinedOutput(); err != nil || !strings.Contains(string(out), "build capabilities:") {
		t.Fatalf("node app update gpu --build-capability cuda: %v\n%s", err, out)
	}
	var b raftfsm.Build
	if _, err := api.Post(ctx, "/v1/apps/web/builds", builder.BuildRequest{}, &b); err != nil {
		t.Fatal(err)
	}
	first := waitBuildVia(t, api, b.ID, "running on a build server", 30*time.Second, func(b raftfsm.Build) bool {
		return b.State == raftfsm.BuildRunning
	})
	if !first.Remote || (first.Node != b1.name && first.Node != b2.name) {
		t.Fatalf("build runs on %q (remote %v); want build server %s or %s, never a voter (leader %s)", first.Node, first.Remote, b1.name, b2.name, leader.name)
	}
	testutil.Eventually(t, 30*time.Second, "the first attempt's script to start", func() (bool, string) {
		started, _ := filepath.Glob(g.path + ".started.*")
		return len(started) == 1, fmt.Sprintf("%d started", len(started))
	})
	// The log of the running build is read through a voter, from the build server that writes it.
	hc := &http.Client{Timeout: 10 * time.Second}
	if lg := readLog(api, hc, b.ID); !strings.Contains(lg, "on node "+first.Node) {
		t.Fatalf("log through %s:\n%s", voters[0].name, lg)
	}

	// Kill -9 the build server mid-build: its lease runs out and the other build server runs the build again.
	victim, other := b1, b2
	if first.Node == b2.name {
		victim, other = b2, b1
	}
	killedAt := time.Now()
	victim.proc.Kill()
	second := waitBuildVia(t, api, b.ID, "running again on the other build server", 60*time.Second, func(b raftfsm.Build) bool {
		return b.State == raftfsm.BuildRunning && b.Node == other.name
	})
	if second.Attempt != first.Attempt+1 || !strings.Contains(second.Requeued, victim.name) {
		t.Fatalf("second attempt %+v after %+v", second, first)
	}
	t.Logf("build requeued to %s %s after %s was killed (lease %s): %s", other.name, time.Since(killedAt).Round(time.Millisecond),
		victim.name, builder.DefaultLeaseTTL, second.Requeued)
	testutil.Eventually(t, 30*time.Second, "the second attempt's script to start", func() (bool, string) {
		started, _ := filepath.Glob(g.path + ".started.*")
		return len(started) == 2, fmt.Sprintf("%d started", len(started))
	})
	g.open()
	done := waitBuildVia(t, api, b.ID, "succeeded", 60*time.Second, func(b raftfsm.Build) bool { return b.Finished() })
	if done.State != raftfsm.BuildSucceeded || done.Node != other.name || done.Release != "v1" {
		t.Fatalf("build %+v", done)
	}

	// A capability no build server offers: the build waits and says why, in the API and in the CLI.
	var gb raftfsm.Build
	if _, err := api.Post(ctx, "/v1/apps/gpu/builds", builder.BuildRequest{}, &gb); err != nil {
		t.Fatal(err)
	}
	var view builder.BuildView
	testutil.Eventually(t, 30*time.Second, "the gpu build to say why it waits", func() (bool, string) {
		view = builder.BuildView{}
		_, err := api.Get(ctx, "/v1/builds/"+gb.ID, &view)
		return err == nil && view.State == raftfsm.BuildQueued && strings.Contains(view.Waiting, "capability cuda"), fmt.Sprintf("%+v %v", view, err)
	})
	// Through another voter, which may need a moment to apply the queueing.
	var out bytes.Buffer
	testutil.Eventually(t, 30*time.Second, "node builds gpu to print why the build waits", func() (bool, string) {
		cmd := exec.Command(nodeBinary(t), "--addr", voters[1].api(), "--token", m.admin, "builds", "gpu")
		cmd.Env = cleanEnv()
		out.Reset()
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return err == nil && strings.Contains(out.String(), gb.ID+" waits: needs a build server with capability cuda; no alive build server has it"),
			fmt.Sprintf("%v\n%s", err, out.String())
	})
	t.Logf("node builds gpu:\n%s", out.String())
	// node build --wait says why its build waits instead of showing an empty log.
	errPath := filepath.Join(t.TempDir(), "stderr")
	errFile, err := os.Create(errPath)
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	waiter := exec.Command(nodeBinary(t), "--addr", voters[2].api(), "--token", m.admin, "build", "gpu", "--wait")
	waiter.Env, waiter.Stderr = cleanEnv(), errFile
	if err := waiter.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { waiter.Process.Kill(); waiter.Wait() })
	testutil.Eventually(t, 30*time.Second, "node build gpu --wait to say why it waits", func() (bool, string) {
		data, _ := os.ReadFile(errPath)
		return strings.Contains(string(data), "waits: needs a build server with capability cuda"), string(data)
	})

	// Exactly one release, built and first held by the surviving build server; no build ever ran on a voter.
	for _, n := range m.live() {
		var rels []raftfsm.Release
		if _, err := m.client(n).Get(ctx, "/v1/apps/web/releases?consistent", &rels); err != nil {
			t.Fatal(err)
		}
		if len(rels) != 1 || rels[0].Commit != sha || rels[0].Build != b.ID || !slices.Contains(rels[0].Holders, other.name) {
			t.Errorf("releases on %s: %+v; want one, held by %s", n.name, rels, other.name)
		}
	}
	// From the build server, the release spreads peer to peer to other nodes.
	testutil.Eventually(t, 60*time.Second, "the release to spread from the build server", func() (bool, string) {
		var rel raftfsm.Release
		if _, err := api.Get(ctx, "/v1/apps/web/releases/v1", &rel); err != nil {
			return false, err.Error()
		}
		return len(rel.Holders) >= 2 && slices.Contains(rel.Holders, other.name), fmt.Sprint(rel.Holders)
	})
	if lg := readLog(m.client(voters[2]), hc, b.ID); !strings.Contains(lg, "build succeeded: release v1") {
		t.Errorf("log through %s:\n%s", voters[2].name, lg)
	}
	for _, v := range voters {
		if matches, _ := filepath.Glob(filepath.Join(v.dir, "builds", "*.log")); len(matches) > 0 {
			t.Errorf("voter %s wrote build logs %v: a build ran on it", v.name, matches)
		}
	}

	// The leader is killed -9 while a build server builds: the new leader's term takes the build back (the
	// assignment was the old term's), the build server stops it, and it runs again under the new term to one
	// release.
	sha2 := repo.commit("web 2", map[string]string{"shoal.yml": `
build:
  build:
    - mktemp "$GATE.started.XXXXXX"
    - i=0; while [ ! -e "$GATE.2" ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done
package:
  include: [shoal.yml]
`})
	var nb raftfsm.Build
	if _, err := api.Post(ctx, "/v1/apps/web/builds", builder.BuildRequest{}, &nb); err != nil {
		t.Fatal(err)
	}
	run1 := waitBuildVia(t, api, nb.ID, "running on the build server", 30*time.Second, func(b raftfsm.Build) bool {
		return b.State == raftfsm.BuildRunning && b.Node == other.name
	})
	testutil.Eventually(t, 30*time.Second, "the build's script to start", func() (bool, string) {
		started, _ := filepath.Glob(g.path + ".started.*")
		return len(started) == 3, fmt.Sprintf("%d started", len(started))
	})
	leader = m.waitLeader(voters...)
	leader.proc.Kill()
	var survivors []*pnode
	for _, v := range voters {
		if v != leader {
			survivors = append(survivors, v)
		}
	}
	sapi := m.client(m.waitLeader(survivors...))
	sapi.RetryNoLeader = 30 * time.Second
	run2 := waitBuildVia(t, sapi, nb.ID, "running again under the new term", 60*time.Second, func(b raftfsm.Build) bool {
		return b.State == raftfsm.BuildRunning && b.Term > run1.Term
	})
	if run2.Node != other.name || run2.Attempt != run1.Attempt+1 {
		t.Fatalf("after the leader's kill: %+v (before: %+v)", run2, run1)
	}
	testutil.Eventually(t, 30*time.Second, "the second attempt's script to start", func() (bool, string) {
		started, _ := filepath.Glob(g.path + ".started.*")
		return len(started) == 4, fmt.Sprintf("%d started", len(started))
	})
	if err := os.WriteFile(g.path+".2", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	end := waitBuildVia(t, sapi, nb.ID, "succeeded", 60*time.Second, func(b raftfsm.Build) bool { return b.Finished() })
	if end.State != raftfsm.BuildSucceeded || end.Release != "v2" || end.Term != run2.Term {
		t.Fatalf("build %+v", end)
	}
	var rels []raftfsm.Release
	if _, err := sapi.Get(ctx, "/v1/apps/web/releases?consistent", &rels); err != nil {
		t.Fatal(err)
	}
	if len(rels) != 2 || rels[0].Version != "v2" || rels[0].Commit != sha2 {
		t.Fatalf("releases after the leader's kill: %+v", rels)
	}
}
