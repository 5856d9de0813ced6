package builder

import (
	"context"
	"net/http"
	"testing"

	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/raftfsm"
)

func TestBuildRefsAndReads(t *testing.T) {
	repo, first := newAppRepo(t, "build:\n  build: [echo ok]\n", nil)
	repo.git("tag", "-a", "v1.0", "-m", "release 1.0")
	repo.git("checkout", "-q", "-b", "feature")
	feature := repo.commit("feature work", map[string]string{"f.txt": "f\n"})
	repo.git("checkout", "-q", "main")
	m := newMesh(t, 1, Options{})
	m.createApp("web", map[string]any{"repo": repo.dir})
	ctx := context.Background()

	for _, tc := range []struct{ ref, commit, branch string }{
		{"", first, "main"},
		{"feature", feature, "feature"},
		{"refs/heads/feature", feature, "feature"},
		{"v1.0", first, ""}, // an annotated tag is peeled to its commit
		{feature, feature, ""},
	} {
		b := m.startBuild(0, "web", tc.ref)
		if b.Commit != tc.commit || b.Branch != tc.branch || b.State != raftfsm.BuildQueued {
			t.Errorf("ref %q queued %+v; want commit %s branch %q", tc.ref, b, tc.commit, tc.branch)
		}
	}
	for _, tc := range []struct {
		app, ref string
		status   int
	}{
		{"web", "no-such-branch", http.StatusBadRequest},
		{"web", "-upload-pack=evil", http.StatusBadRequest},
		{"web", "a..b", http.StatusBadRequest},
		{"nope", "", http.StatusNotFound},
	} {
		_, err := m.api(0).Post(ctx, "/v1/apps/"+tc.app+"/builds", BuildRequest{Ref: tc.ref}, nil)
		if !client.IsStatus(err, tc.status) {
			t.Errorf("build %s at %q: %v; want status %d", tc.app, tc.ref, err, tc.status)
		}
	}
	// An app whose repository cannot be reached says so (502), not "internal".
	m.createApp("gone", map[string]any{"repo": t.TempDir() + "/missing.git"})
	if _, err := m.api(0).Post(ctx, "/v1/apps/gone/builds", nil, nil); !client.IsStatus(err, http.StatusBadGateway) {
		t.Errorf("build of an unreachable repository: %v", err)
	}

	var list []raftfsm.Build
	if _, err := m.api(0).Get(ctx, "/v1/apps/web/builds?limit=3", &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || list[0].ID != "web-5" || list[2].ID != "web-3" {
		t.Errorf("newest three builds: %+v", list)
	}
	for _, path := range []string{"/v1/apps/nope/builds", "/v1/builds/web-99", "/v1/builds/web-99/log",
		"/v1/apps/nope/releases", "/v1/apps/web/releases/v9"} {
		if _, err := m.api(0).Get(ctx, path, nil); !client.IsStatus(err, http.StatusNotFound) {
			t.Errorf("GET %s: %v; want 404", path, err)
		}
	}
	if _, err := m.api(0).Get(ctx, "/v1/apps/web/builds?limit=x", nil); !client.IsStatus(err, http.StatusBadRequest) {
		t.Errorf("bad limit: %v", err)
	}
	for i := 1; i <= 5; i++ {
		m.waitFinished("web-" + string(rune('0'+i)))
	}
	var rels []raftfsm.Release
	if _, err := m.api(0).Get(ctx, "/v1/apps/web/releases", &rels); err != nil || len(rels) != 5 || rels[0].Version != "v5" {
		t.Errorf("releases %+v %v", rels, err)
	}
}

func TestBuildAPINeedsTokens(t *testing.T) {
	m := newMesh(t, 1, Options{})
	var tok struct {
		Token string `json:"token"`
	}
	if _, err := m.api(0).Post(context.Background(), "/v1/tokens", map[string]string{"name": "ci", "role": "reader"}, &tok); err != nil {
		t.Fatal(err)
	}
	reader := client.New(m.c.Nodes[0].HTTPAddr(), tok.Token)
	if _, err := reader.Post(context.Background(), "/v1/apps/web/builds", nil, nil); !client.IsStatus(err, http.StatusForbidden) {
		t.Errorf("a reader started a build: %v", err)
	}
	anon := client.New(m.c.Nodes[0].HTTPAddr(), "")
	if _, err := anon.Get(context.Background(), "/v1/builds/web-1", nil); !client.IsStatus(err, http.StatusUnauthorized) {
		t.Errorf("an anonymous read: %v", err)
	}
}
