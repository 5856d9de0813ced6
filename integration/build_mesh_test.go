package integration

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/builder"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/raftfsm"
)

// nodeAppManifest is shaped as Distelli's documentation shows a Node.js app's distelli-manifest.yml, root key
// user/App and all. The npm and node commands are replaced by `true`/`echo` stand-ins (the original command
// kept as the arguments) so the test needs neither Node.js nor the network; the deploy sections are kept for
// the deployer and not run by a build.
const nodeAppManifest = `jdoe/nodeapp:
  PreBuild:
    - echo "---Beginning PreBuild---"
    - echo "node --version (a stand-in, no Node.js needed)"
  Build:
    - echo "---Building---"
    - true npm install
    - true npm test
    - echo "built $DISTELLI_APPNAME $DISTELLI_BUILDNUM at $DISTELLI_RELREVISION on $DISTELLI_RELBRANCH"
    - mkdir -p node_modules/dep && echo "module.exports = 1" > node_modules/dep/index.js
  AfterBuildSuccess:
    - echo "---Build succeeded---"
  ReleaseNotesCmd:
    - git log -1 --format=%s
  PkgInclude:
    - '*.js'
    - package.json
    - ['public/css/*.css', 'static/']
  PkgExclude:
    - node_modules/
  Env:
    - PORT: 3000
    - NODE_ENV: "production"
  PreInstall:
    - echo "---Beginning PreInstall---"
    - sudo apt-get -y update
    - sudo apt-get -y install nodejs
  PostInstall:
    - echo "---Beginning PostInstall---"
    - npm install --production
  Exec:
    - /usr/bin/nodejs app.js
`

func nodeAppFiles() map[string]string {
	return map[string]string{
		"distelli-manifest.yml": nodeAppManifest,
		"app.js":                "require('http').createServer((q, s) => s.end('hi')).listen(process.env.PORT)\n",
		"lib.js":                "module.exports = {}\n",
		"package.json":          `{"name": "nodeapp", "version": "1.0.0", "scripts": {"test": "echo ok"}}` + "\n",
		"public/css/site.css":   "body { color: teal }\n",
		"README.md":             "not packaged\n",
	}
}

// TestBuildNodeAppFromForgeWebhooks: a Node.js app with a distelli-manifest.yml, served over HTTP by git
// http-backend, built on a 3-node mesh from push webhooks of each forge sent to followers.
func TestBuildNodeAppFromForgeWebhooks(t *testing.T) {
	const secret = "s3cret-hook"
	root := t.TempDir()
	repo := newTestRepo(t, root, "nodeapp.git")
	c1 := repo.commit("Initial Node.js app", nodeAppFiles())
	url := serveGitHTTP(t, root) + "/nodeapp.git"

	m := newBuildMesh(t, 3)
	leader := m.c.Leader()
	follower := m.follower()
	ctx := context.Background()
	if _, err := m.api(follower).Post(ctx, "/v1/apps", map[string]any{"name": "nodeapp", "repo": url, "branch": "main",
		"auto_build": true, "webhook_secret": secret}, nil); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 30 * time.Second}

	before := "0000000000000000000000000000000000000000"
	var builds []string
	for i, provider := range []string{builder.ProviderGitHub, builder.ProviderGitLab, builder.ProviderGitea} {
		sha := c1
		if i > 0 {
			sha = repo.commit("Change "+provider+" $(touch /tmp/pwned)", map[string]string{"lib.js": "module.exports = {v: " + provider + "}\n"})
		}
		h, body := forgePush(provider, "d-"+provider, "main", before, sha, "push from "+provider, secret)
		via := m.live()[i%3]
		status, ans := sendHook(t, hc, via.HTTPAddr(), "nodeapp", h, body)
		if status != http.StatusCreated || ans.Build == nil || ans.Build.Commit != sha {
			t.Fatalf("%s push through %s: %d %+v", provider, via.Name(), status, ans)
		}
		// The forge retries: the same delivery is ignored.
		if status, ans := sendHook(t, hc, via.HTTPAddr(), "nodeapp", h, body); status != http.StatusOK || ans.Message != "duplicate delivery, ignored" {
			t.Errorf("%s redelivery: %d %+v", provider, status, ans)
		}
		b := waitBuildVia(t, m.api(via), ans.Build.ID, "finished", 60*time.Second, func(b raftfsm.Build) bool { return b.Finished() })
		if b.State != raftfsm.BuildSucceeded || b.Node != leader.Name() || b.Trigger != "push" {
			t.Fatalf("%s build %+v\n%s", provider, b, readLog(m.api(via), hc, b.ID))
		}
		builds = append(builds, b.ID)
		before = sha
	}
	// A push to another branch is ignored.
	h, body := forgePush(builder.ProviderGitHub, "d-feature", "feature", before, before, "feature", secret)
	if status, ans := sendHook(t, hc, follower.HTTPAddr(), "nodeapp", h, body); status != http.StatusAccepted || ans.Status != "ignored" {
		t.Errorf("push to another branch: %d %+v", status, ans)
	}

	// Every node has the three releases, v1..v3, each built from its commit, held by the leader that built it
	// (and by the servers the spread copied it to).
	for _, n := range m.live() {
		var rels []raftfsm.Release
		testutil.Eventually(t, 10*time.Second, "three releases on "+n.Name(), func() (bool, string) {
			rels = nil
			_, err := m.api(n).Get(ctx, "/v1/apps/nodeapp/releases", &rels)
			return err == nil && len(rels) == 3, "releases"
		})
		if rels[0].Version != "v3" || rels[2].Version != "v1" || rels[2].Commit != c1 || rels[2].Notes != "Initial Node.js app" ||
			!slices.Contains(rels[0].Holders, leader.Name()) {
			t.Errorf("releases on %s: %+v", n.Name(), rels)
		}
	}
	var rel raftfsm.Release
	if _, err := m.api(follower).Get(ctx, "/v1/apps/nodeapp/releases/v1", &rel); err != nil {
		t.Fatal(err)
	}
	f, err := m.svcs[leader.Name()].Store().Open(rel.Digest)
	if err != nil {
		t.Fatalf("open the release archive on the builder: %v", err)
	}
	names := archiveNames(t, f)
	f.Close()
	// PkgInclude's files, and the manifest, which every server reads its deploy sections from.
	if want := []string{"app.js", "distelli-manifest.yml", "lib.js", "package.json", "static/", "static/site.css"}; !slices.Equal(names, want) {
		t.Errorf("release archive holds %q, want %q", names, want)
	}

	// The log is the same from every node; the leader holds it, the others read it over the mesh.
	want := readLog(m.api(leader), hc, builds[0])
	for _, s := range []string{"---Beginning PreBuild---", "built nodeapp 1 at " + c1 + " on main", "---Build succeeded---",
		"manifest distelli-manifest.yml (distelli format)", "build succeeded: release v1"} {
		if !strings.Contains(want, s) {
			t.Errorf("log lacks %q:\n%s", s, want)
		}
	}
	for _, n := range m.live() {
		if got := readLog(m.api(n), hc, builds[0]); got != want {
			t.Errorf("log through %s differs:\n%s", n.Name(), got)
		}
	}
}

// TestBuildLeaderKilledMidBuild: the leader of a 3-node mesh stops while a build runs; the next leader runs
// the build again and it becomes exactly one release.
func TestBuildLeaderKilledMidBuild(t *testing.T) {
	g := newGate(t)
	repo := newTestRepo(t, t.TempDir(), "web.git")
	sha := repo.commit("web", map[string]string{"shoal.yml": `
build:
  build:
    - echo "attempt $SHOAL_BUILD waiting"
    - ` + g.line() + `
    - echo "gate open"
package:
  include: [shoal.yml]
`})
	m := newBuildMesh(t, 3)
	ctx := context.Background()
	first := m.c.Leader()
	via := m.follower()
	if _, err := m.api(via).Post(ctx, "/v1/apps", map[string]any{"name": "web", "repo": repo.dir,
		"build_vars": map[string]any{"GATE": map[string]any{"value": g.path}}}, nil); err != nil {
		t.Fatal(err)
	}
	var b raftfsm.Build
	if _, err := m.api(via).Post(ctx, "/v1/apps/web/builds", builder.BuildRequest{}, &b); err != nil {
		t.Fatal(err)
	}
	waitBuildVia(t, m.api(via), b.ID, "running on "+first.Name(), 30*time.Second, func(b raftfsm.Build) bool {
		return b.State == raftfsm.BuildRunning && b.Node == first.Name()
	})

	for i, n := range m.c.Nodes {
		if n == first {
			m.c.Kill(i) // its builder is left to see leadership end, as in a crash of the node
		}
	}
	second := m.c.Leader()
	survivor := m.follower()
	running := waitBuildVia(t, m.api(survivor), b.ID, "running again on "+second.Name(), 30*time.Second, func(b raftfsm.Build) bool {
		return b.State == raftfsm.BuildRunning && b.Node == second.Name()
	})
	if running.Attempt != 2 {
		t.Errorf("attempt %d on the new leader, want 2", running.Attempt)
	}
	g.open()
	done := waitBuildVia(t, m.api(survivor), b.ID, "finished", 60*time.Second, func(b raftfsm.Build) bool { return b.Finished() })
	if done.State != raftfsm.BuildSucceeded || done.Node != second.Name() || done.Release != "v1" {
		t.Fatalf("build %+v", done)
	}
	var rels []raftfsm.Release
	if _, err := m.api(survivor).Get(ctx, "/v1/apps/web/releases?consistent", &rels); err != nil {
		t.Fatal(err)
	}
	if len(rels) != 1 || rels[0].Commit != sha || rels[0].Build != b.ID {
		t.Errorf("releases %+v; want exactly one, of %s", rels, sha)
	}
	var all []raftfsm.Build
	if _, err := m.api(survivor).Get(ctx, "/v1/apps/web/builds", &all); err != nil || len(all) != 1 {
		t.Errorf("builds %+v %v: the interrupted build must be the same build, run again", all, err)
	}
}
