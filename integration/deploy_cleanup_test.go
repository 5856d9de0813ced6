package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/deployer"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/raftfsm"
)

// nodeCLI runs the node binary as a client of n's API.
func nodeCLI(t testing.TB, m *pmesh, n *pnode, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(nodeBinary(t), append([]string{"--addr", n.api(), "--token", m.admin}, args...)...)
	cmd.Env = cleanEnv()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("node %v: %v", args, err)
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

// storesHolding lists the servers whose artifact store has the archive whole, from their data dirs.
func storesHolding(m *pmesh, digest string) []string {
	var out []string
	for _, n := range m.nodes {
		if _, err := os.Stat(filepath.Join(n.dir, "blobs", digest+".tar.gz")); err == nil {
			out = append(out, n.name)
		}
	}
	return out
}

// heldBy is what `node releases APP VERSION` says holds it.
func heldBy(t testing.TB, m *pmesh, n *pnode, app, version string) []string {
	t.Helper()
	out, errOut, code := nodeCLI(t, m, n, "releases", app, version)
	if code != 0 {
		t.Fatalf("node releases %s %s: %s", app, version, errOut)
	}
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "held by:"); ok {
			rest = strings.TrimSpace(rest)
			if rest == "-" {
				return nil
			}
			return strings.Split(rest, ", ")
		}
	}
	t.Fatalf("no held by line in:\n%s", out)
	return nil
}

// TestCleanupNeverStrandsADeploy: on a 3-process mesh collecting every second and keeping only the newest
// release, the releases in use (rollback target, desired of a pinned environment, target of a running
// deployment) stay on every server while the others go; `node releases`'s held by equals the stores; a deploy
// or rollback to a collected release is refused in words and changes nothing; pushing its archive again
// restores it; and held by stays true across a kill -9 and restart of a holder.
func TestCleanupNeverStrandsADeploy(t *testing.T) {
	needProcesses(t)
	m := startPmesh(t, 3, "--keep-releases", "1", "--gc-interval", "1s", "--min-holders", "3")
	n1 := m.nodes[0]
	cl := m.client(n1)
	cl.RetryNoLeader = 30 * time.Second
	app := newDeployApp(t, cl, "web", "prod", names(m), names(m), raftfsm.Strategy{Kind: "all"}, false, "")
	stopAppsAtEnd(t, m, app)
	ctx := context.Background()
	release := func(v string) raftfsm.Release {
		var r raftfsm.Release
		if _, err := cl.Get(ctx, "/v1/apps/web/releases/"+v, &r); err != nil {
			t.Fatalf("release %s: %v", v, err)
		}
		return r
	}
	deploy := func(v string) {
		d := app.deploy(cl, deployer.CreateRequest{Release: v})
		waitDeployment(t, liveClients(m), d.ID, 90*time.Second, raftfsm.DeploySucceeded)
	}
	app.push(cl, "v1", false)
	deploy("v1")
	app.push(cl, "v2", false)
	deploy("v2") // v2: desired and stable; v1: the rollback target
	app.push(cl, "v3", false)
	app.push(cl, "v4", false)
	if _, errOut, code := nodeCLI(t, m, n1, "pin", "prod", "--reason", "cleanup test"); code != 0 {
		t.Fatalf("pin: %s", errOut)
	}
	// v5: the target of a deployment held running at PreInstall.
	app.push(cl, "v5", false)
	app.block("PreInstall")
	live := app.deploy(cl, deployer.CreateRequest{Release: "v5"})
	testutil.Eventually(t, 60*time.Second, "v5's deployment at PreInstall", func() (bool, string) { return app.reached("PreInstall"), "" })
	app.push(cl, "v6", false) // the newest: kept by --keep-releases 1

	testutil.Eventually(t, 60*time.Second, "v3 and v4 collected on every server", func() (bool, string) {
		for _, v := range []string{"v3", "v4"} {
			if on := storesHolding(m, release(v).Digest); len(on) > 0 {
				return false, v + " still on " + strings.Join(on, ",")
			}
		}
		return true, ""
	})
	for _, v := range []string{"v1", "v2", "v5", "v6"} {
		testutil.Eventually(t, 60*time.Second, v+" on every server", func() (bool, string) {
			on := storesHolding(m, release(v).Digest)
			return len(on) == 3, strings.Join(on, ",")
		})
	}
	for _, v := range []string{"v1", "v2", "v3", "v4", "v5", "v6"} {
		testutil.Eventually(t, 30*time.Second, "held by of "+v+" equal to the stores", func() (bool, string) {
			got, want := heldBy(t, m, m.nodes[1], "web", v), storesHolding(m, release(v).Digest)
			return slices.Equal(got, want), fmt.Sprintf("held by %v, stores %v", got, want)
		})
	}
	app.open("PreInstall")
	waitDeployment(t, liveClients(m), live.ID, 90*time.Second, raftfsm.DeploySucceeded)

	// Refused at once, in words, with nothing written.
	var before []raftfsm.Deployment
	if _, err := cl.Get(ctx, "/v1/envs/prod/deployments?limit=0", &before); err != nil {
		t.Fatal(err)
	}
	var envBefore raftfsm.Env
	if _, err := cl.Get(ctx, "/v1/envs/prod", &envBefore); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"deploy", "web", "v3", "--env", "prod"}, {"rollback", "prod", "--to", "v4"}} {
		_, errOut, code := nodeCLI(t, m, m.nodes[2], args...)
		if code == 0 || !strings.Contains(errOut, "of app web") || !strings.Contains(errOut, "push the same archive again") {
			t.Fatalf("node %v: exit %d: %s", args, code, errOut)
		}
	}
	var after []raftfsm.Deployment
	if _, err := cl.Get(ctx, "/v1/envs/prod/deployments?limit=0", &after); err != nil {
		t.Fatal(err)
	}
	var envAfter raftfsm.Env
	if _, err := cl.Get(ctx, "/v1/envs/prod", &envAfter); err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) || envAfter.ModifyIndex != envBefore.ModifyIndex {
		t.Fatalf("a refused deploy changed the state: %d deployments (was %d), env index %d (was %d)",
			len(after), len(before), envAfter.ModifyIndex, envBefore.ModifyIndex)
	}

	// What the refusal says to do works: the same archive pushed again under v3 restores it.
	if err := cl.Upload(ctx, "/v1/apps/web/releases?version=v3", bytes.NewReader(tarGzFiles(t, releaseFiles("v3", false))), nil); err != nil {
		t.Fatalf("push v3 again: %v", err)
	}
	deploy("v3")
	app.waitServing(10*time.Second, "v3", names(m)...)

	// Across a kill -9 and a restart of a holder, held by still equals the stores.
	n3 := m.nodes[2]
	n3.proc.Kill()
	m.restart(n3)
	m.waitHealthy(m.nodes...)
	for _, v := range []string{"v1", "v2", "v3", "v4", "v5", "v6"} {
		testutil.Eventually(t, 30*time.Second, "after a restart, held by of "+v+" equal to the stores", func() (bool, string) {
			got, want := heldBy(t, m, n3, "web", v), storesHolding(m, release(v).Digest)
			return slices.Equal(got, want), fmt.Sprintf("held by %v, stores %v", got, want)
		})
	}
}

// TestAppLogsThroughAnyNode: `node logs` through a node that does not run the app shows its output, the last
// lines with --tail and what it writes next with --follow; and the exec log stays bounded by rotation while
// the app keeps writing.
func TestAppLogsThroughAnyNode(t *testing.T) {
	needProcesses(t)
	m := startPmesh(t, 2, "--exec-log-max", "64KiB", "--exec-log-keep", "2")
	n1, n2 := m.nodes[0], m.nodes[1]
	cl := m.client(n2)
	cl.RetryNoLeader = 30 * time.Second
	app := newDeployApp(t, cl, "web", "prod", []string{n1.name}, []string{n1.name}, raftfsm.Strategy{Kind: "all"}, false, "")
	stopAppsAtEnd(t, m, app)
	app.push(cl, "v1", false)
	d := app.deploy(cl, deployer.CreateRequest{Release: "v1"})
	waitDeployment(t, liveClients(m), d.ID, 60*time.Second, raftfsm.DeploySucceeded)
	app.waitServing(10*time.Second, "v1", n1.name) // the app logs each request

	for range 3 {
		app.serving(n1.name)
	}
	out, errOut, code := nodeCLI(t, m, n2, "logs", "prod", "--tail", "3")
	if code != 0 || out != "app: GET /\napp: GET /\napp: GET /\n" {
		t.Fatalf("node logs prod --tail 3 through n2: exit %d\nstdout: %q\nstderr: %q\nexec.log: %q", code, out, errOut, readFile(app.envDir(n1.dir)+"/exec.log"))
	}

	// --follow prints what the app writes after it started.
	follow := exec.Command(nodeBinary(t), "--addr", n2.api(), "--token", m.admin, "logs", "prod", "--server", n1.name, "--follow", "--tail", "1")
	follow.Env = cleanEnv()
	stdout, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { follow.Process.Kill(); follow.Wait() })
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	mark := fmt.Sprintf("/followed-%d", time.Now().UnixNano())
	deadline := time.After(30 * time.Second)
	poke := time.NewTicker(500 * time.Millisecond)
	defer poke.Stop()
	for seen := false; !seen; {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("node logs --follow ended")
			}
			seen = strings.Contains(line, mark)
		case <-poke.C:
			// The request is the app's output: made while following, it must show up.
			_, _ = app.hc.Get(fmt.Sprintf("http://127.0.0.1:%d%s", app.ports[n1.name], mark))
		case <-deadline:
			t.Fatalf("node logs --follow did not show %s", mark)
		}
	}
	follow.Process.Kill()
	follow.Wait()

	// Rotation: a release that writes all the time; the log files stay bounded while it writes far more.
	if err := cl.Upload(context.Background(), "/v1/apps/web/releases?version=v2",
		bytes.NewReader(tarGzFiles(t, withFile(releaseFiles("v2", false), "chatter", "on\n"))), nil); err != nil {
		t.Fatal(err)
	}
	d = app.deploy(cl, deployer.CreateRequest{Release: "v2"})
	waitDeployment(t, liveClients(m), d.ID, 60*time.Second, raftfsm.DeploySucceeded)
	dir := app.envDir(n1.dir)
	const bound = 2 << 20 // 3 files of 64 KiB plus what the app writes between two checks (1 s), with a margin
	written := int64(0)
	testutil.Eventually(t, 90*time.Second, "the app to write 3× the bound", func() (bool, string) {
		var total int64
		files, _ := filepath.Glob(filepath.Join(dir, "exec.log*"))
		for _, f := range files {
			if fi, err := os.Stat(f); err == nil {
				total += fi.Size()
			}
		}
		if len(files) > 3 || total > bound {
			t.Fatalf("exec logs %v hold %d bytes: more than 3 files or %d bytes", files, total, bound)
		}
		out, _, _ := nodeCLI(t, m, n2, "logs", "prod", "--tail", "1")
		var n int64
		if _, err := fmt.Sscanf(strings.TrimSpace(out), "chatter %d", &n); err == nil {
			written = (n + 1) * 1024
		}
		return written > 3*bound, fmt.Sprintf("written %d, on disk %d in %d files", written, total, len(files))
	})
	b, _ := os.ReadFile(filepath.Join(dir, "exec.log"))
	if bytes.IndexByte(b, 0) >= 0 {
		t.Fatal("the live exec log holds NUL bytes: a writer wrote past a hole")
	}
}

// withFile returns files with one more.
func withFile(files map[string]string, name, content string) map[string]string {
	files[name] = content
	return files
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
