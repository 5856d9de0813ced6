package integration

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/deployer"
	"github.com/shoal-ci/shoal/internal/testtier"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/raftfsm"
)

// upgradeFrom is the commit of main the rolling upgrade starts from: main as the sessions of 2 December left it,
// before members advertised the command types they know. Move it forward to the last release users run.
const upgradeFrom = "58a72bc36afac1f3bbbd2912ab2a142c30c10ea3"

// TestRollingUpgrade runs a 3-process mesh of the binary built from upgradeFrom, and upgrades it to this
// checkout one node at a time, as docs/operations.md says (followers first, the leader last; SIGTERM, start the
// new binary on the same data dir, wait until it is healthy), while four clients create apps through every node
// and a rolling deployment waits at a hook. Every write is answered 201, or 503 with what the API asks the
// client to do (retry; read back after "may or may not have been applied"), or not at all by a node that is
// stopping (the client goes to another); nothing else. At the end every acknowledged app exists, the deployment
// has succeeded and every server serves its release.
func TestRollingUpgrade(t *testing.T) {
	needProcesses(t)
	old := buildAt(t, upgradeFrom)
	m := newPmesh(t, 3)
	for _, n := range m.nodes {
		n.bin = old
	}
	m.start()
	cl := m.client(m.nodes[0])
	cl.RetryNoLeader = 30 * time.Second
	app := newDeployApp(t, cl, "web", "prod", names(m), names(m), raftfsm.Strategy{Kind: "rolling", BatchSize: 1}, false, "")
	stopAppsAtEnd(t, m, app)
	app.push(cl, "v1", false)
	d1 := app.deploy(cl, deployer.CreateRequest{Release: "v1"})
	waitDeployment(t, liveClients(m), d1.ID, 90*time.Second, raftfsm.DeploySucceeded)
	app.waitServing(30*time.Second, "v1", names(m)...)

	// A deployment in flight: its first server waits at PreInstall until the first node is upgraded.
	app.push(cl, "v2", false)
	app.block("PreInstall")
	d2 := app.deploy(cl, deployer.CreateRequest{Release: "v2"})
	testutil.Eventually(t, 60*time.Second, "v2's first server to reach PreInstall", func() (bool, string) {
		return app.reached("PreInstall"), "not yet"
	})

	w := startUpgradeWriters(t, m, 4)
	leader := m.waitLeader(m.nodes...)
	var order []*pnode
	for _, n := range m.nodes {
		if n != leader {
			order = append(order, n)
		}
	}
	order = append(order, leader)
	for i, n := range order {
		before := w.acked()
		n.proc.Stop()
		n.bin = "" // this checkout's binary
		m.restart(n)
		m.waitHealthy(m.nodes...)
		t.Logf("upgraded %s (%d of 3); %d writes acknowledged so far", n.name, i+1, before)
		if i == 0 {
			app.open("PreInstall")
		}
		// Writes go on between upgrades, through the mixed mesh.
		testutil.Eventually(t, 30*time.Second, "writes to go on after upgrading "+n.name, func() (bool, string) {
			return w.acked() > before+20, fmt.Sprintf("%d acknowledged", w.acked())
		})
	}
	acked, errs := w.stop()
	for _, err := range errs {
		t.Error(err)
	}
	if len(acked) < 60 {
		t.Fatalf("only %d writes were acknowledged during the upgrade", len(acked))
	}
	waitDeployment(t, liveClients(m), d2.ID, 120*time.Second, raftfsm.DeploySucceeded)
	app.waitServing(30*time.Second, "v2", names(m)...)
	for _, name := range acked {
		ok, err := m.hasApp(m.nodes[0], name, true)
		if err != nil || !ok {
			t.Fatalf("acknowledged write lost: app %s (%v)", name, err)
		}
	}
	// The upgraded mesh takes a new deployment.
	app.push(cl, "v3", false)
	d3 := app.deploy(cl, deployer.CreateRequest{Release: "v3"})
	waitDeployment(t, liveClients(m), d3.ID, 90*time.Second, raftfsm.DeploySucceeded)
	app.waitServing(30*time.Second, "v3", names(m)...)
	t.Logf("rolling upgrade from %.7s: %d writes acknowledged, none lost; deployments in flight and after succeeded", upgradeFrom, len(acked))
}

// buildAt builds the node binary of commit in a git worktree of this repository, and removes the worktree.
func buildAt(t *testing.T, commit string) string {
	t.Helper()
	git := func(dir string, args ...string) (string, error) {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	root, err := git(".", "rev-parse", "--show-toplevel")
	if err != nil {
		testtier.Skipf(t, "the upgrade test builds an earlier commit from this repository's history, and this is no git checkout: %s", root)
	}
	if out, err := git(root, "cat-file", "-e", commit+"^{commit}"); err != nil {
		testtier.Skipf(t, "this clone lacks commit %.7s (shallow?): fetch the whole history to run the upgrade test (%s)", commit, out)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if out, err := git(root, "worktree", "add", "--detach", src, commit); err != nil {
		t.Fatalf("git worktree add %s: %v\n%s", commit, err, out)
	}
	defer func() {
		if out, err := git(root, "worktree", "remove", "--force", src); err != nil {
			t.Errorf("git worktree remove: %v\n%s", err, out)
		}
	}()
	bin := filepath.Join(dir, "node-"+commit[:7])
	cmd := exec.Command(goTool(), "build", "-o", bin, "./cmd/node")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=readonly")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build node at %.7s: %v\n%s", commit, err, out)
	}
	t.Logf("built node at %.7s in %s", commit, time.Since(start).Round(time.Second))
	return bin
}

// upgradeWriters create apps through every node, each with a new name, until stopped.
type upgradeWriters struct {
	mu    sync.Mutex
	names []string
	errs  []error
	quit  chan struct{}
	wg    sync.WaitGroup
}

func startUpgradeWriters(t *testing.T, m *pmesh, clients int) *upgradeWriters {
	w := &upgradeWriters{quit: make(chan struct{})}
	for g := range clients {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-w.quit:
					return
				default:
				}
				name := fmt.Sprintf("up-%d-%d", g, i)
				if err := w.create(t, m, g+i, name); err != nil {
					w.mu.Lock()
					w.errs = append(w.errs, err)
					w.mu.Unlock()
					return
				}
				w.mu.Lock()
				w.names = append(w.names, name)
				w.mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	return w
}

// create makes one app through the nodes in turn from first: createAppVia does the API's retries; a node that
// does not answer at all (it is stopping or starting) hands the write to the next, and a 409 after such a try
// means the unanswered try was applied.
func (w *upgradeWriters) create(t *testing.T, m *pmesh, first int, name string) error {
	unanswered := false
	for attempt := 0; attempt < 100; attempt++ {
		n := m.nodes[(first+attempt)%len(m.nodes)]
		err := createAppVia(t, m.client(n), name)
		var ce *client.Error
		switch {
		case err == nil:
			return nil
		case errors.As(err, &ce) && ce.Status == http.StatusConflict && unanswered:
			return nil
		case errors.As(err, &ce):
			return fmt.Errorf("create %s through %s: %d %s: %s", name, n.name, ce.Status, ce.Code, ce.Message)
		}
		unanswered = true
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("create %s: no node answered in 100 tries", name)
}

func (w *upgradeWriters) acked() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.names)
}

func (w *upgradeWriters) stop() ([]string, []error) {
	close(w.quit)
	w.wg.Wait()
	return w.names, w.errs
}
