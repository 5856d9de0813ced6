package builder

import (
	"context"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/raftfsm"

	"github.com/shoal-ci/shoal/internal/testtier"
)

func TestPollBuildsNewCommitsOnce(t *testing.T) {
	root := t.TempDir()
	repo := newGitRepo(t, filepath.Join(root, "web.git"))
	first := repo.commit("first", map[string]string{"shoal.yml": "build:\n  build: [echo polled]\n"})
	// Polled over HTTP, as a repository on a forge that cannot send webhooks would be; the server counts the
	// ref advertisements it sends, one per `git ls-remote` (and per fetch).
	var polls atomic.Int64
	backend := gitBackend(t, root)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/info/refs") {
			polls.Add(1)
		}
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	url := srv.URL + "/web.git"
	m := newMesh(t, 1, Options{})
	m.createApp("web", map[string]any{"repo": url, "poll_interval": "1s"})

	builds := func() []raftfsm.Build {
		var bs []raftfsm.Build
		if _, err := m.api(0).Get(context.Background(), "/v1/apps/web/builds", &bs); err != nil {
			t.Fatal(err)
		}
		return bs
	}
	testutil.Until(t, 20*time.Second, "a poll build of the first commit", func() bool {
		bs := builds()
		return len(bs) == 1 && bs[0].Commit == first && bs[0].Trigger == "poll" && bs[0].Finished()
	})
	second := repo.commit("second", nil)
	testutil.Until(t, 20*time.Second, "a poll build of the second commit", func() bool {
		bs := builds()
		return len(bs) == 2 && bs[0].Commit == second && bs[0].Finished()
	})
	// Further polls find nothing new: after two more polls, still two builds.
	seen := polls.Load()
	testutil.Until(t, 20*time.Second, "two more polls", func() bool { return polls.Load() >= seen+2 })
	bs := builds()
	if len(bs) != 2 {
		t.Errorf("polling queued %d builds for 2 commits: %+v", len(bs), bs)
	}
	for _, b := range bs {
		if b.State != raftfsm.BuildSucceeded {
			t.Errorf("build %s %s", b.ID, b.State)
		}
	}
}

// gitBackend is git's own smart HTTP server for the repositories under root.
func gitBackend(t *testing.T, root string) http.Handler {
	t.Helper()
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		testtier.Skipf(t, "git --exec-path: %v", err)
	}
	path := filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend")
	if _, err := os.Stat(path); err != nil {
		testtier.Skipf(t, "git-http-backend not found at %s: install git's full package", path)
	}
	return &cgi.Handler{Path: path, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}}
}
