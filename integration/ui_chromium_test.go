package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/daemon"
	"github.com/shoal-ci/shoal/deployer"
	"github.com/shoal-ci/shoal/internal/testtier"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// TestUIChromium drives the web dashboard in a real headless Chromium against a 3-node in-process mesh wired as
// the binary wires it (spread, builder, deployer and the dashboard on every node), through a follower's
// address: a wrong token is refused with the API's message; the admin signs in, builds a commit from the app's
// page and sees its log; deploys the new release from the environment's page and watches, without a reload,
// the first server install it while the others still run the old one and then every server become healthy on
// it; opens the deployment and a server's log of it; rolls back and sees the environment pinned; sees the
// mesh's members; and a reader token's action is refused with the API's 403 message.
//
// SHOAL_UI_SCREENSHOTS=DIR keeps a screenshot of each step in DIR; a failing run always keeps one.
// SHOAL_UI_SCREENSHOTS=1 instead rewrites the screenshots of docs/ui.md in docs/ui/ (see docShot).
func TestUIChromium(t *testing.T) {
	browserPath := findChromium(t)
	if _, err := os.Stat("/bin/bash"); err != nil {
		testtier.Skip(t, "the deployer runs hooks with bash, which this machine lacks")
	}
	root := t.TempDir()
	repo := newTestRepo(t, root, "web.git")
	manifest := "build:\n  build:\n    - echo \"building version $(cat version.txt)\"\n    - test -s version.txt\n" + deployManifest
	repo.commit("first", map[string]string{"shoal.yml": manifest, "version.txt": "one\n", "gate.sh": gateScript})

	c := newUIMesh(t, 3)
	via := c.Nodes[1] // the page talks to one node; it need not be the leader
	cl := c.client(1)
	app := c.track(newDeployApp(t, cl, "web", "prod", c.names(), c.names(),
		raftfsm.Strategy{Kind: "rolling", BatchSize: 1, AutoRollback: true}, false, repo.dir))
	ctx := context.Background()
	var reader api.TokenView
	if _, err := cl.Post(ctx, "/v1/tokens", map[string]string{"name": "viewer", "role": raftfsm.RoleReader}, &reader); err != nil {
		t.Fatalf("create a reader token: %v", err)
	}

	// v1: built from the first commit and deployed through the API, so the page starts from a running app.
	var b raftfsm.Build
	if _, err := cl.Post(ctx, "/v1/apps/web/builds", map[string]string{}, &b); err != nil {
		t.Fatalf("build v1: %v", err)
	}
	if done := waitBuildVia(t, cl, b.ID, "to end", 120*time.Second, func(b raftfsm.Build) bool { return b.Finished() }); done.Release != "v1" {
		t.Fatalf("the first build: %+v", done)
	}
	first := app.deploy(cl, deployer.CreateRequest{Release: "v1"})
	waitDeployment(t, func() []*client.Client { return []*client.Client{cl} }, first.ID, 120*time.Second, raftfsm.DeploySucceeded)

	p := newBrowserPage(t, browserPath)
	p.do("open the dashboard", chromedp.Navigate("http://"+via.HTTPAddr()+"/ui/"))
	p.eval(traceJS)

	// Sign in: a wrong token first.
	p.do("sign in with a wrong token", chromedp.SendKeys(chromedp.CSS("#token"), "not-a-token"), chromedp.Click(chromedp.CSS("#signin")))
	p.waitText("#signin-error", "the API token is not valid")
	p.eval(`document.getElementById('token').value = ''`)
	p.do("sign in as admin", chromedp.SendKeys(chromedp.CSS("#token"), c.AdminToken),
		chromedp.Click(chromedp.CSS("#signin")))
	p.waitText("#overview-apps", "web") // the overview is the first page
	p.shot("overview")

	// The app's page: build the second commit and watch its log.
	repo.commit("second", map[string]string{"version.txt": "two\n"})
	p.click("open the app", `[data-testid="app-link-web"]`)
	p.waitText("#releases", "v1")
	p.click("build", "#build")
	p.waitText("#message", "queued")
	p.click("open the build", "#message a")
	p.waitText("#build-log", "building version two")
	p.waitText(`[data-testid="build-state"]`, "succeeded")
	p.shot("build")

	// The environment's page: deploy v2 and watch it roll, held at the first server's PostInstall hook.
	p.click("back to the app", "#build-facts a")
	p.waitText("#releases", "v2")
	p.click("open the environment", `[data-testid="env-link-prod"]`)
	p.waitServers("every server healthy on v1", func(s map[string]uiServer) bool { return allOn(s, "v1") })
	// The app's own output, followed live from every server: the app logs each request to /.
	p.waitText("#env-app-log", "[n3] --- shoal: starting exec copy 0")
	app.serving("n3")
	p.waitText("#env-app-log", "[n3] app: GET /")
	p.eval(`window.shoalNoReload = true`)
	app.block("PostInstall")
	p.do("deploy v2", chromedp.SetValue(chromedp.CSS("#deploy-release"), "v2"), chromedp.Click(chromedp.CSS("#deploy")))
	p.waitText("#message", "deployment")
	p.waitServers("n1 installing v2 while n2 and n3 still run v1", func(s map[string]uiServer) bool {
		return s["n1"] == uiServer{"installing", "v2"} && s["n2"] == uiServer{"healthy", "v1"} && s["n3"] == uiServer{"healthy", "v1"}
	})
	p.shot("deploying")
	app.open("PostInstall")
	p.waitServers("every server healthy on v2", func(s map[string]uiServer) bool { return allOn(s, "v2") })
	p.waitText(`#env-deployments tbody tr:first-child`, "succeeded")
	// What each server runs, from its own report: v2, healthy, its app's pid, no drift.
	pid := fmt.Sprint(pidOf(t, app.serving("n1")))
	p.waitText(`[data-testid="runtime-release-n1"]`, "v2")
	p.waitText(`[data-testid="runtime-health-n1"]`, "healthy")
	p.waitText(`[data-testid="runtime-pids-n1"]`, pid)
	p.waitText(`[data-testid="runtime-drift-n3"]`, "none")
	p.waitText("#env-min-healthy", testMinHealthy)
	if !p.eval(`window.shoalNoReload === true`) {
		t.Fatal("the page reloaded while the deployment ran: it must update in place")
	}
	p.shot("deployed")

	// The deployment's page and one server's log of it.
	p.click("open the deployment", `[data-testid="server-n1"] a`)
	p.waitText(`[data-testid="deployment-state"]`, "succeeded")
	p.click("open n1's log", `[data-testid="log-n1"]`)
	p.waitText("#deploy-log-n1", "PostInstall")
	p.click("back to the environment", `#deployment-facts a`)

	// Roll back, confirm in the dialog, and see the environment pinned and back on v1.
	p.waitServers("every server healthy on v2", func(s map[string]uiServer) bool { return allOn(s, "v2") })
	p.click("roll back", "#rollback")
	p.do("confirm", chromedp.WaitVisible(chromedp.CSS("#confirm")), chromedp.Click(chromedp.CSS("#confirm-ok")))
	p.waitText(`[data-testid="env-pinned"]`, "pinned")
	p.waitText("#env-pin-reason", "rolled back to v1")
	p.waitServers("every server healthy on v1 again", func(s map[string]uiServer) bool { return allOn(s, "v1") })
	p.shot("rolled-back")

	// The mesh.
	p.click("open the members", `nav a[data-section="members"]`)
	p.waitText("#members", "n3")
	p.waitText("#members", "leader")

	// A reader sees everything but may not act: the API's 403 message is shown and nothing changes.
	p.click("sign out", "#signout")
	p.do("sign in as reader", chromedp.SendKeys(chromedp.CSS("#token"), reader.Token), chromedp.Click(chromedp.CSS("#signin")))
	p.waitText("#members", "n3")
	p.eval(`location.hash = '#/envs/prod'`)
	p.waitText(`[data-testid="env-pinned"]`, "pinned")
	p.click("unpin as reader", "#pin-toggle")
	p.waitText("#message", `token "viewer" has role reader`)
	p.shot("reader")
	var e raftfsm.Env
	if _, err := cl.Get(ctx, "/v1/envs/prod", &e); err != nil || !e.Pinned || e.Desired != "v1" {
		t.Fatalf("after the rollback and the reader's attempt, prod must stay pinned on v1: %+v %v", e, err)
	}
	p.checkNoErrors()
}

// TestUIChromiumPipeline drives a pipeline through the dashboard on a 1-node mesh: staging → prod with approval.
// A release that succeeded in staging waits for approval in prod; the admin approves it on the deployment's page
// and sees it succeed; pins prod (so the next release is not promoted by itself) and promotes it by hand from
// staging's page.
func TestUIChromiumPipeline(t *testing.T) {
	browserPath := findChromium(t)
	if _, err := os.Stat("/bin/bash"); err != nil {
		testtier.Skip(t, "the deployer runs hooks with bash, which this machine lacks")
	}
	c := newUIMesh(t, 1)
	cl := c.client(0)
	ctx := context.Background()
	staging := c.track(newDeployApp(t, cl, "web", "staging", c.names(), c.names(), raftfsm.Strategy{Kind: "all"}, false, ""))
	// prod runs on the same server: its copy of the app listens on a port of its own.
	prod := c.track(&deployApp{t: t, name: "web", env: "prod", ports: map[string]int{"n1": freePort(t, "127.0.0.1")}, gates: staging.gates, hc: staging.hc})
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]raftfsm.Var{"APP_SERVER": {Value: bin}, appServerEnv: {Value: runMarker}, "GATES": {Value: staging.gates},
		"PORT_n1": {Value: fmt.Sprint(prod.ports["n1"])}}
	if _, err := cl.Post(ctx, "/v1/envs", map[string]any{"name": "prod", "app": "web", "servers": c.names(), "vars": vars,
		"strategy": raftfsm.Strategy{Kind: "all"}}, nil); err != nil {
		t.Fatalf("create prod: %v", err)
	}
	if _, err := cl.Do(ctx, "PUT", "/v1/apps/web/pipeline", map[string]any{"stages": []raftfsm.PipelineStage{{Env: "staging"}, {Env: "prod", Approval: true}}}, nil); err != nil {
		t.Fatalf("set the pipeline: %v", err)
	}
	staging.push(cl, "v1", false)
	d := staging.deploy(cl, deployer.CreateRequest{Release: "v1"})
	waitDeployment(t, func() []*client.Client { return []*client.Client{cl} }, d.ID, 120*time.Second, raftfsm.DeploySucceeded)

	p := newBrowserPage(t, browserPath)
	p.do("open the dashboard", chromedp.Navigate("http://"+c.Nodes[0].HTTPAddr()+"/ui/"))
	p.eval(traceJS)
	p.do("sign in", chromedp.SendKeys(chromedp.CSS("#token"), c.AdminToken), chromedp.Click(chromedp.CSS("#signin")))
	p.waitText("#overview-envs", "prod")

	// Approve the promotion of v1 to prod.
	p.click("open prod", `[data-testid="env-link-prod"]`)
	p.waitText("#env-deployments tbody tr:first-child", "waiting approval")
	p.click("open the waiting deployment", "#env-deployments tbody tr:first-child a")
	p.waitText(`[data-testid="deployment-state"]`, "waiting approval")
	p.click("approve", "#approve")
	p.waitText(`[data-testid="deployment-state"]`, "succeeded")
	p.waitText("#deployment-facts", "Approved by")
	p.shot("approved")

	// Pin prod, then promote v2 from staging by hand.
	p.click("back to prod", "#deployment-facts a")
	p.waitServers("prod's server healthy on v1", func(s map[string]uiServer) bool { return s["n1"] == uiServer{"healthy", "v1"} })
	p.click("pin prod", "#pin-toggle")
	p.waitText(`[data-testid="env-pinned"]`, "pinned")
	staging.push(cl, "v2", false)
	d = staging.deploy(cl, deployer.CreateRequest{Release: "v2"})
	waitDeployment(t, func() []*client.Client { return []*client.Client{cl} }, d.ID, 120*time.Second, raftfsm.DeploySucceeded)
	p.click("open the app", "#env-facts a")
	p.click("open staging", `#app-envs [data-testid="env-link-staging"]`)
	p.waitText("#promote", "Promote v2 to prod")
	p.click("promote", "#promote")
	p.waitText("#message", "Promote v2 to prod: deployment")
	p.click("open the promotion", "#message a")
	p.waitText(`[data-testid="deployment-state"]`, "succeeded")
	p.waitText("#deployment-facts", "promotion from staging by admin")
	prod.waitServing(30*time.Second, "v2", "n1")
	p.shot("promoted")

	// A crash-looping release in staging: the deployment's server row names it, and the environment's servers,
	// back on the stable release v2 after the failure, say what the failed deployment met.
	staging.pushFiles(cl, "v3", crashManifest("exit 1"))
	d = staging.deploy(cl, deployer.CreateRequest{Release: "v3"})
	waitDeployment(t, func() []*client.Client { return []*client.Client{cl} }, d.ID, 120*time.Second, raftfsm.DeployFailed)
	p.eval(fmt.Sprintf("location.hash = '#/deployments/%s'", d.ID))
	p.waitText(`[data-testid="node-n1"]`, "Exec is crash-looping: exit status 1 after")
	p.eval(`location.hash = '#/envs/staging'`)
	p.waitText(`[data-testid="runtime-release-n1"]`, "v2")
	p.waitText(`[data-testid="server-n1"]`, "Exec is crash-looping")
	p.waitText(`[data-testid="server-n1"]`, "exit status 1 after")
	p.shot("crash-loop")
	// The overview puts it first (the failed deployment stays named after the server is repaired back to v2).
	p.open("#/overview")
	p.waitText(`[data-testid="attention-staging"]`, "deployment of v3 failed")
	p.waitText(`[data-testid="env-status-staging"]`, "failing")
	p.waitText("#overview-status", "need")
	p.checkNoErrors()
}

// findChromium returns Debian's chromium, or skips.
func findChromium(t *testing.T) string {
	for _, p := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	testtier.Skip(t, "chromium is not installed (apt-get install chromium; .ci/run installs it): the dashboard test needs a real browser")
	return ""
}

// uiMesh is an in-process mesh wired as the binary wires it: the release spread, the builder, the deployer and
// the dashboard on every node.
type uiMesh struct {
	*daemonMesh
	mu   sync.Mutex
	apps []*deployApp
}

func newUIMesh(t *testing.T, size int, tweaks ...func(*node.Config)) *uiMesh {
	m := &uiMesh{}
	// These tests are about the page, not failover: Raft timeouts lenient enough that a machine busy with
	// Chromium and the race detector does not lose its leader in the middle of a setup write.
	m.daemonMesh = startDaemonMesh(t, size, func(d *daemon.Main) {
		cfg := &d.Config
		cfg.Timing.HeartbeatTimeout, cfg.Timing.ElectionTimeout, cfg.Timing.LeaderLeaseTimeout = 2*time.Second, 2*time.Second, time.Second
		for _, tw := range tweaks {
			tw(cfg)
		}
		d.Builder.KillGrace = time.Second
	})
	m.OnStop(func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		var dirs []string
		for _, n := range m.Nodes {
			dirs = append(dirs, n.DataDir())
		}
		for _, a := range m.apps {
			a.stopApps(dirs...)
		}
	})
	return m
}

// client talks to node i with the admin token.
func (m *uiMesh) client(i int) *client.Client {
	cl := client.New(m.Nodes[i].HTTPAddr(), m.AdminToken)
	cl.RetryNoLeader = 30 * time.Second
	return cl
}

// track stops a's processes when the test ends.
func (m *uiMesh) track(a *deployApp) *deployApp {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.apps = append(m.apps, a)
	return a
}

func (m *uiMesh) names() []string {
	var out []string
	for _, n := range m.Nodes {
		out = append(out, n.Name())
	}
	return out
}

// uiServer is one row of the environment page's servers table, as the page shows it.
type uiServer struct {
	State   string `json:"state"`
	Release string `json:"release"`
}

func allOn(s map[string]uiServer, release string) bool {
	want := uiServer{"healthy", release}
	return len(s) == 3 && s["n1"] == want && s["n2"] == want && s["n3"] == want
}

// browserPage is one tab of a headless Chromium started for a test.
type browserPage struct {
	t      *testing.T
	ctx    context.Context
	shots  string // directory of the step screenshots ("" when not asked for)
	docs   string // directory of the documentation's screenshots ("" when not asked for)
	mu     sync.Mutex
	errors []string // uncaught exceptions and console errors of the page
	output bytes.Buffer
}

func newBrowserPage(t *testing.T, path string) *browserPage {
	p := &browserPage{t: t, shots: os.Getenv("SHOAL_UI_SCREENSHOTS")}
	if p.shots == "1" {
		p.shots, p.docs = "", filepath.Join("..", "docs", "ui")
	}
	// Chromium with no network beyond this machine: without these flags it keeps calling home (updates, sync,
	// QUIC probes) and floods the log with refused connections.
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox cannot start
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1280, 1000),
		chromedp.CombinedOutput(&syncWriter{mu: &p.mu, w: &p.output}),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Listen(ctx, p.record); err != nil {
		t.Fatalf("start chromium (%s): %v\n%s", path, err, p.output.String())
	}
	p.ctx = ctx
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		dir, err := os.MkdirTemp("", "shoal-ui-failure-")
		if err == nil {
			p.shotTo(dir, "failure")
			t.Logf("screenshot of the page at the failure in %s", dir)
		}
		t.Logf("the page's last clicks and requests:\n%s", p.trace())
		p.mu.Lock()
		defer p.mu.Unlock()
		t.Logf("page errors: %q\nchromium output (end):\n%s", p.errors, tail(p.output.String(), 4000))
	})
	return p
}

func (p *browserPage) record(ev any) {
	var msg string
	switch ev := ev.(type) {

	case *runtime.EventExceptionThrown:
		msg = ev.ExceptionDetails.Text
		if ex := ev.ExceptionDetails.Exception; ex != nil {
			msg += " " + ex.Description
		}
	case *runtime.EventConsoleAPICalled:
		if ev.Type != runtime.ConsoleAPICalledTypeError {
			return
		}
		var parts []string
		for _, a := range ev.Args {
			parts = append(parts, a.Description+string(a.Value))
		}
		msg = "console.error: " + strings.Join(parts, " ")
	default:
		return
	}
	p.mu.Lock()
	p.errors = append(p.errors, msg)
	p.mu.Unlock()
}

// traceJS records, in the page, the clicks and API requests it makes, for trace. The page's modules call the
// global fetch at each request, so wrapping it sees them all.
const traceJS = `(() => {
	const log = window.shoalTrace = [];
	const note = (s) => { log.push(new Date().toISOString().slice(11, 23) + ' ' + s); if (log.length > 300) log.splice(0, 100); };
	const fetch0 = window.fetch;
	window.fetch = (url, init = {}) => {
		const what = (init.method || 'GET') + ' ' + url;
		note(what + ' sent');
		return fetch0(url, init).then((r) => { note(what + ' answered ' + r.status); return r; },
			(e) => { note(what + ' failed: ' + e); throw e; });
	};
	document.addEventListener('click', (e) => note('click on ' + e.target.outerHTML.slice(0, 80)), true);
	return true;
})()`

// trace returns what traceJS recorded last.
func (p *browserPage) trace() string {
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	out, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(window.shoalTrace || []).slice(-150).join('\n')`))
	if err != nil {
		return err.Error()
	}
	return out
}

// do runs browser actions, failing the test with what was being done.
func (p *browserPage) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	p.t.Logf("%s: %s", time.Now().Format("15:04:05.000"), what)
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

// click clicks the element sel. A live part of the page may be redrawn between finding the element and
// clicking it; then it finds the element again.
func (p *browserPage) click(what, sel string) {
	p.t.Helper()
	p.t.Logf("%s: %s", time.Now().Format("15:04:05.000"), what)
	for attempt := 0; ; attempt++ {
		// The element is found when visible and clicked through the DOM, not at screen coordinates: live updates
		// re-render parts of the page, and a coordinate click taken just before one landed on another element.
		ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
		err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(sel)))
		if err == nil {
			_, err = chromedp.Run(ctx, chromedp.Evaluate[any](fmt.Sprintf(`document.querySelector(%q).click()`, sel)))
		}
		cancel()
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "Could not find node") || attempt == 4 {
			p.t.Fatalf("%s (click %s): %v", what, sel, err)
		}
	}
}

// eval evaluates a JavaScript expression that yields a boolean.
func (p *browserPage) eval(js string) bool {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[any](js))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", js, err)
	}
	ok, _ := v.(bool)
	return ok
}

// waitText waits until the element sel exists and its text contains want.
func (p *browserPage) waitText(sel, want string) {
	p.t.Helper()
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e ? e.innerText : '(no %s)'; })()`, sel, strings.ReplaceAll(sel, "'", ""))
	p.poll(fmt.Sprintf("%s to show %q", sel, want), func(ctx context.Context) (bool, string, error) {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		return strings.Contains(got, want), got, err
	})
}

// waitServers waits until the environment page's servers table satisfies cond.
func (p *browserPage) waitServers(what string, cond func(map[string]uiServer) bool) {
	p.t.Helper()
	const js = `Object.fromEntries([...document.querySelectorAll('#servers tbody tr')].map(r =>
		[r.dataset.testid.replace('server-', ''), {state: r.dataset.state, release: r.dataset.release}]))`
	p.poll("the servers table: "+what, func(ctx context.Context) (bool, string, error) {
		s, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]uiServer](js))
		return err == nil && cond(s), fmt.Sprint(s), err
	})
}

// poll checks the page until check holds, for at most two minutes (the machine may be busy).
func (p *browserPage) poll(what string, check func(ctx context.Context) (bool, string, error)) {
	p.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var last string
	for {
		ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
		ok, seen, err := check(ctx)
		cancel()
		if ok {
			return
		}
		last = seen
		if err != nil {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("timed out waiting for %s; the page shows: %s", what, last)
		}
		if !sleepCtx(p.ctx, 100*time.Millisecond) {
			p.t.Fatalf("waiting for %s: the browser is gone: %v", what, context.Cause(p.ctx))
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// shot keeps a screenshot of the step when SHOAL_UI_SCREENSHOTS names a directory.
func (p *browserPage) shot(step string) {
	if p.shots != "" {
		p.shotTo(p.shots, step)
	}
}

func (p *browserPage) shotTo(dir, step string) {
	ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, step+".png"), png, 0o644)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		p.t.Logf("screenshot %s: %v", step, err)
	}
}

// checkNoErrors fails the test if the page threw or logged an error.
func (p *browserPage) checkNoErrors() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.errors) > 0 {
		p.t.Fatalf("the page logged errors: %q", p.errors)
	}
}

type syncWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
