package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/deployer"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"

	"github.com/shoal-ci/shoal/internal/testtier"
)

// TestUIChromiumOverview drives, in a real headless Chromium on a 1-node mesh whose server is tagged role=web,
// what an operator does to answer "is everything OK?" and to set things up from the dashboard:
//   - the overview names a deployment waiting for approval as the one thing needing attention, approves it with
//     its button, and then says everything is OK; it shows each app's last build with its commit message,
//     duration and relative time, and each server's release and health;
//   - an environment created from the app's page with a tag selector shows the server it resolves to; a second
//     approval is given on the environment's page; restart and terminate ask first (cancel changes nothing);
//   - a first release that crash-loops (nothing to go back to, so it lasts) is put first on the overview;
//   - an app and an API token are created after a confirmation (cancel creates nothing; the token works);
//   - messages dismiss and do not follow navigation; unknown apps, environments and pages say "not found";
//   - the manifest name is the app's own or "shoal.yml or distelli-manifest.yml";
//   - search and paging of a long list;
//   - at 390 px wide no page is wider than the screen.
func TestUIChromiumOverview(t *testing.T) {
	browserPath := findChromium(t)
	if _, err := os.Stat("/bin/bash"); err != nil {
		testtier.Skip(t, "the deployer runs hooks with bash, which this machine lacks")
	}
	root := t.TempDir()
	repo := newTestRepo(t, root, "web.git")
	manifest := "build:\n  build:\n    - echo \"building version $(cat version.txt)\"\n" + deployManifest
	repo.commit("first: serve version one", map[string]string{"shoal.yml": manifest, "version.txt": "one\n", "gate.sh": gateScript})

	c := newUIMesh(t, 1, func(cfg *node.Config) { cfg.Tags = map[string]string{"role": "web"} })
	cl := c.client(0)
	ctx := context.Background()
	staging := c.track(newDeployApp(t, cl, "web", "staging", c.names(), c.names(), raftfsm.Strategy{Kind: "all"}, false, repo.dir))
	// Enough apps for two pages of the apps list.
	for i := 1; i <= 24; i++ {
		if _, err := cl.Post(ctx, "/v1/apps", map[string]any{"name": fmt.Sprintf("extra-%02d", i), "repo": "/srv/git/extra.git"}, nil); err != nil {
			t.Fatalf("create app extra-%02d: %v", i, err)
		}
	}
	var b raftfsm.Build
	if _, err := cl.Post(ctx, "/v1/apps/web/builds", map[string]string{}, &b); err != nil {
		t.Fatalf("build v1: %v", err)
	}
	if done := waitBuildVia(t, cl, b.ID, "to end", 120*time.Second, func(b raftfsm.Build) bool { return b.Finished() }); done.Release != "v1" {
		t.Fatalf("the first build: %+v", done)
	}

	p := newBrowserPage(t, browserPath)
	p.do("open the dashboard", chromedp.Navigate("http://"+c.Nodes[0].HTTPAddr()+"/ui/"))
	p.eval(traceJS)
	p.do("sign in", chromedp.SendKeys(chromedp.CSS("#token"), c.AdminToken), chromedp.Click(chromedp.CSS("#signin")))
	p.waitText("#overview-status", "Everything is OK")

	// Create prod from the app's page, selecting its servers by tag: cancelling the dialog creates nothing.
	p.open("#/apps/web")
	p.waitText("#app-manifest-name", "shoal.yml or distelli-manifest.yml")
	p.click("open the new environment form", "#new-env-details summary")
	p.do("fill in prod", chromedp.SendKeys(chromedp.CSS("#env-name"), "prod"), chromedp.SendKeys(chromedp.CSS("#env-tags"), "role=web"))
	p.click("create prod", "#new-env-submit")
	p.waitText("#confirm", "Create environment prod of web?")
	p.waitText("#confirm", "role=web")
	p.click("cancel", "#confirm-cancel")
	p.waitClosed()
	if _, err := cl.Get(ctx, "/v1/envs/prod", nil); !client.IsStatus(err, 404) {
		t.Fatalf("a cancelled creation must write nothing: GET /v1/envs/prod: %v", err)
	}
	p.click("create prod", "#new-env-submit")
	p.click("confirm", "#confirm-ok")
	p.waitText("#message", "Environment prod created.")
	p.click("open prod", "#message a")
	p.waitHidden("#message") // a message stays on its page
	p.waitText("#env-resolved", "resolves to n1")
	p.waitText("#env-facts", "role=web")

	// prod gets its app's settings through the API, then a pipeline: staging → prod with approval.
	prod := c.track(&deployApp{t: t, name: "web", env: "prod", ports: map[string]int{"n1": freePort(t, "127.0.0.1")}, gates: staging.gates, hc: staging.hc})
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]raftfsm.Var{"APP_SERVER": {Value: bin}, appServerEnv: {Value: runMarker}, "GATES": {Value: staging.gates},
		"PORT_n1": {Value: fmt.Sprint(prod.ports["n1"])}}
	if _, err := cl.Do(ctx, "PUT", "/v1/envs/prod", map[string]any{"vars": vars, "min_healthy_time": testMinHealthy}, nil); err != nil {
		t.Fatalf("set prod's vars: %v", err)
	}
	if _, err := cl.Do(ctx, "PUT", "/v1/apps/web/pipeline", map[string]any{"stages": []raftfsm.PipelineStage{{Env: "staging"}, {Env: "prod", Approval: true}}}, nil); err != nil {
		t.Fatalf("set the pipeline: %v", err)
	}
	d := staging.deploy(cl, deployer.CreateRequest{Release: "v1"})
	waitDeployment(t, func() []*client.Client { return []*client.Client{cl} }, d.ID, 120*time.Second, raftfsm.DeploySucceeded)

	// The overview: one thing needs attention, prod's approval, with its button.
	p.open("#/overview")
	p.waitText("#overview-status", "1 thing needs attention")
	p.waitText(`#attention [data-testid="attention-prod"]`, "v1 waits for approval")
	p.waitText(`[data-testid="env-status-prod"]`, "waiting approval")
	p.waitText(`[data-testid="ov-server-staging-n1"]`, "v1")
	p.waitText(`[data-testid="ov-server-staging-n1"]`, "healthy")
	row := `#overview-apps tr[data-app="web"]`
	p.waitText(row, "first: serve version one") // the commit message
	p.waitText(row, "succeeded")
	p.waitText(row, " ago")
	p.waitMatch(row+" .duration", `^\d+(\.\d+)?s$|^\d+m \d+s$`)
	p.docShot("overview")
	p.click("approve v1 for prod", `#attention [data-testid="approve-prod"]`)
	p.waitText("#message", "of v1 to prod approved")
	p.waitText(`[data-testid="ov-server-prod-n1"]`, "healthy")
	p.waitText(`[data-testid="ov-server-prod-n1"]`, "v1")
	p.waitText("#overview-status", "Everything is OK")
	prod.waitServing(60*time.Second, "one", "n1") // v1 was built from version.txt "one"

	// The next release waits for approval again; this time prod's own page approves it.
	staging.push(cl, "v2", false)
	d = staging.deploy(cl, deployer.CreateRequest{Release: "v2"})
	waitDeployment(t, func() []*client.Client { return []*client.Client{cl} }, d.ID, 120*time.Second, raftfsm.DeploySucceeded)
	p.open("#/envs/prod")
	p.waitText("#env-approve", "Approve v2")
	p.click("approve v2 on prod's page", `#env-approve button`)
	p.waitText(`[data-testid="runtime-release-n1"]`, "v2")
	p.waitText(`[data-testid="runtime-health-n1"]`, "healthy")
	prod.waitServing(60*time.Second, "v2", "n1")

	// Restart asks first; cancelling starts nothing.
	before := countDeployments(t, cl, "prod")
	p.click("restart prod", "#restart")
	p.waitText("#confirm", "Restart prod?")
	p.waitText("#confirm", "Servers: n1.")
	p.click("cancel", "#confirm-cancel")
	p.waitClosed()
	if n := countDeployments(t, cl, "prod"); n != before {
		t.Fatalf("a cancelled restart started a deployment: %d deployments, had %d", n, before)
	}
	p.click("restart prod", "#restart")
	p.click("confirm the restart", "#confirm-ok")
	p.waitText("#message", "Restart prod: deployment")
	p.waitText("#env-deployments tbody tr:first-child", "restart")
	p.waitText("#env-deployments tbody tr:first-child", "succeeded")
	p.waitText(`[data-testid="runtime-health-n1"]`, "healthy")
	p.docShot("environment")

	// Terminate staging: the dialog names what happens; confirmed, its app stops.
	p.open("#/envs/staging")
	p.click("terminate staging", "#terminate")
	p.waitText("#confirm", "Terminate staging?")
	p.waitText("#confirm", "stays stopped")
	p.docShot("confirm")
	p.click("confirm the termination", "#confirm-ok")
	p.waitText("#env-deployments tbody tr:first-child", "terminate")
	p.waitText("#env-deployments tbody tr:first-child", "succeeded")
	p.waitText(`[data-testid="runtime-health-n1"]`, "stopped")
	p.open("#/overview")
	p.waitText(`[data-testid="env-status-staging"]`, "stopped")
	p.waitText("#overview-status", "Everything is OK") // stopped on purpose is not a problem

	// A first release that crash-loops in a new environment: nothing earlier to go back to, so the crash loop
	// lasts, and the overview puts it first with the reason.
	c.track(&deployApp{t: t, name: "web", env: "canary", gates: staging.gates, hc: staging.hc})
	if _, err := cl.Post(ctx, "/v1/envs", map[string]any{"name": "canary", "app": "web", "servers": c.names(),
		"strategy": raftfsm.Strategy{Kind: "all"}, "min_healthy_time": testMinHealthy}, nil); err != nil {
		t.Fatalf("create canary: %v", err)
	}
	staging.pushFiles(cl, "v3", crashManifest("exit 1"))
	var res deployer.CreateResult
	if _, err := cl.Post(ctx, "/v1/envs/canary/deployments", deployer.CreateRequest{Release: "v3"}, &res); err != nil || res.Deployment == nil {
		t.Fatalf("deploy v3 to canary: %+v %v", res, err)
	}
	waitDeployment(t, func() []*client.Client { return []*client.Client{cl} }, res.Deployment.ID, 120*time.Second, raftfsm.DeployFailed)
	p.open("#/overview")
	p.waitText(`[data-testid="env-status-canary"]`, "failing")
	p.waitText("#attention", "canary · n1: crash loop: ")
	p.waitText("#attention", "canary: deployment of v3 failed")
	p.waitText("#overview-status", "things need attention")
	p.waitText(`[data-testid="ov-server-canary-n1"]`, "crash loop")

	// Create an app with a Distelli manifest: its page names that manifest.
	p.open("#/apps")
	p.click("open the new app form", "#new-app-details summary")
	p.do("fill in api", chromedp.SendKeys(chromedp.CSS("#app-name"), "api"), chromedp.SendKeys(chromedp.CSS("#app-repo"), "/srv/git/api.git"),
		chromedp.SendKeys(chromedp.CSS("#app-manifest"), "deploy/distelli-manifest.yml"))
	p.click("create api", "#new-app-submit")
	p.waitText("#confirm", "Create app api?")
	p.click("cancel", "#confirm-cancel")
	p.waitClosed()
	if _, err := cl.Get(ctx, "/v1/apps/api", nil); !client.IsStatus(err, 404) {
		t.Fatalf("a cancelled creation must write nothing: GET /v1/apps/api: %v", err)
	}
	p.click("create api", "#new-app-submit")
	p.click("confirm", "#confirm-ok")
	p.waitText("#message", "App api created.")
	p.click("open api", "#message a")
	p.waitHidden("#message")
	p.waitText("#app-manifest-name", "deploy/distelli-manifest.yml")

	// An error stays until dismissed: creating api again is refused.
	p.open("#/apps")
	p.click("open the new app form", "#new-app-details summary")
	p.do("fill in api again", chromedp.SendKeys(chromedp.CSS("#app-name"), "api"), chromedp.SendKeys(chromedp.CSS("#app-repo"), "/srv/git/api.git"))
	p.click("create api again", "#new-app-submit")
	p.click("confirm", "#confirm-ok")
	p.waitText(`#message[data-kind="error"]`, "api")
	p.click("dismiss", "#message .dismiss")
	p.waitHidden("#message")

	// Search and paging: 26 apps are two pages.
	p.waitText("#apps-page", "1–20 of 26")
	p.click("next page", "#apps-next")
	p.waitText("#apps-page", "21–26 of 26")
	p.waitText("#apps", "web")
	p.do("search", chromedp.SendKeys(chromedp.CSS("#apps-search"), "extra-07"))
	p.waitCount("#apps tbody tr", 1)
	p.waitText("#apps", "extra-07")
	p.waitText("#apps-page", "1–1 of 1 (of 26)")

	// An API token, created after a confirmation and shown once: it works.
	p.open("#/members")
	p.click("open the new token form", "#new-token-details summary")
	p.do("fill in the token", chromedp.SendKeys(chromedp.CSS("#token-name"), "ci"), chromedp.SetValue(chromedp.CSS("#token-role"), "deployer"))
	p.click("create the token", "#new-token-submit")
	p.waitText("#confirm", "Create a deployer token ci?")
	p.click("confirm", "#confirm-ok")
	p.waitText("#new-token-reveal", "shown only now")
	tok := p.evalString(`document.getElementById('new-token-value').textContent`)
	var st node.Status
	if _, err := client.New(c.Nodes[0].HTTPAddr(), tok).Get(ctx, "/v1/status", &st); err != nil {
		t.Fatalf("the token the page showed (%q) does not work: %v", tok, err)
	}
	p.waitText(`#tokens tr[data-token="ci"]`, "deployer")

	// Not found: an unknown app, environment, build and page.
	p.open("#/apps/nope")
	p.waitText("#not-found", "No app nope")
	p.waitText("#not-found", `app "nope" does not exist`)
	p.open("#/envs/nope")
	p.waitText("#not-found", "No environment nope")
	p.open("#/builds/nope")
	p.waitText("#not-found", "No build nope")
	p.open("#/nothing/here")
	p.waitText("#not-found", "no page #/nothing/here")
	if p.eval(`!document.getElementById('message').hidden`) {
		t.Fatal(`a "not found" page is the page, not an error message over it`)
	}

	// A phone: no page is wider than the screen.
	p.do("a 390 px wide screen", chromedp.EmulateViewport(390, 844))
	for _, page := range []string{"#/overview", "#/apps", "#/apps/web", "#/envs/prod", "#/envs/staging", "#/deployments/" + d.ID, "#/builds/" + b.ID, "#/members"} {
		p.open(page)
		p.fitsScreen(page)
	}
	p.open("#/overview")
	p.docShot("overview-phone")
	p.open("#/envs/prod")
	p.click("restart prod", "#restart")
	p.waitText("#confirm", "Restart prod?")
	p.fitsScreen("the restart dialog")
	p.click("cancel", "#confirm-cancel")
	p.checkNoErrors()
}

func countDeployments(t *testing.T, cl *client.Client, env string) int {
	t.Helper()
	var ds []raftfsm.Deployment
	if _, err := cl.Get(context.Background(), "/v1/envs/"+env+"/deployments?limit=0", &ds); err != nil {
		t.Fatalf("list %s's deployments: %v", env, err)
	}
	return len(ds)
}

// open goes to a page of the dashboard and waits until it has shown its data (or said it is not found).
func (p *browserPage) open(hash string) {
	p.t.Helper()
	p.t.Logf("%s: open %s", time.Now().Format("15:04:05.000"), hash)
	// Setting the hash the page is on already fires no hashchange: then the page is opened anew by the event.
	p.eval(fmt.Sprintf(`(() => {
		for (const e of document.querySelectorAll('#main > *')) e.dataset.old = '1';
		if (location.hash === %[1]q) window.dispatchEvent(new HashChangeEvent('hashchange'));
		else location.hash = %[1]q;
		return true;
	})()`, hash))
	p.poll("page "+hash+" to load", func(ctx context.Context) (bool, string, error) {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!!document.querySelector('#main > [data-loaded="true"]:not([data-old])')`))
		return ok, "not loaded", err
	})
}

// waitHidden waits until the element sel is hidden.
func (p *browserPage) waitHidden(sel string) {
	p.t.Helper()
	p.poll(sel+" to be hidden", func(ctx context.Context) (bool, string, error) {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(`(() => { const e = document.querySelector(%q); return !e || e.hidden; })()`, sel)))
		return ok, "shown", err
	})
}

// waitClosed waits until the confirmation dialog is closed.
func (p *browserPage) waitClosed() {
	p.t.Helper()
	p.poll("the dialog to close", func(ctx context.Context) (bool, string, error) {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!document.getElementById('confirm').open`))
		return ok, "open", err
	})
}

// waitCount waits until sel matches n elements.
func (p *browserPage) waitCount(sel string, n int) {
	p.t.Helper()
	p.poll(fmt.Sprintf("%d of %s", n, sel), func(ctx context.Context) (bool, string, error) {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%q).length`, sel)))
		return got == n, fmt.Sprint(got), err
	})
}

// waitMatch waits until the text of sel matches the regular expression re.
func (p *browserPage) waitMatch(sel, re string) {
	p.t.Helper()
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return !!e && new RegExp(%q).test(e.innerText.trim()); })()`, sel, re)
	p.poll(fmt.Sprintf("%s to match %s", sel, re), func(ctx context.Context) (bool, string, error) {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		return ok, p.evalString(fmt.Sprintf(`document.querySelector(%q)?.innerText || '(none)'`, sel)), err
	})
}

// evalString evaluates a JavaScript expression that yields a string.
func (p *browserPage) evalString(js string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// fitsScreen fails the test when the page is wider than the window (it would scroll sideways), naming the
// elements that stick out.
func (p *browserPage) fitsScreen(what string) {
	p.t.Helper()
	const js = `(() => {
		const w = window.innerWidth, sw = document.documentElement.scrollWidth;
		if (sw <= w) return '';
		const wide = [...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > w + 0.5)
			.slice(0, 8).map((e) => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right));
		return 'scrollWidth ' + sw + ' > innerWidth ' + w + ': ' + wide.join(', ');
	})()`
	if got := p.evalString(js); got != "" {
		p.shotTo(p.t.TempDir(), "too-wide")
		p.t.Fatalf("%s at 390 px: %s", what, got)
	}
	if w := p.evalString(`String(window.innerWidth)`); w != "390" {
		p.t.Fatalf("the window is %s px wide, not 390", w)
	}
}

// docShot rewrites docs/ui/NAME.png, a screenshot of what the window shows, when SHOAL_UI_SCREENSHOTS=1.
func (p *browserPage) docShot(name string) {
	p.t.Helper()
	if p.docs == "" {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
	defer cancel()
	// Relative times ("3s ago") and the pointer's hover differ from run to run; that is fine for a picture.
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err == nil {
		err = os.MkdirAll(p.docs, 0o755)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(p.docs, name+".png"), png, 0o644)
	}
	if err != nil {
		p.t.Fatalf("screenshot %s for the docs: %v", name, err)
	}
	p.t.Logf("wrote %s (%d KB)", filepath.Join(p.docs, name+".png"), len(png)/1024)
}
