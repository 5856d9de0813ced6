package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/builder"
	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/daemon"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"

	"github.com/shoal-ci/shoal/internal/testtier"
)

// testRepo is a git repository the test makes, in a directory that git http-backend can also serve.
type testRepo struct {
	t   testing.TB
	dir string
}

func newTestRepo(t testing.TB, root, name string) *testRepo {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		testtier.Skip(t, "git is not installed: install git to run the build tests")
	}
	r := &testRepo{t: t, dir: filepath.Join(root, name)}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r.git("init", "-q", "-b", "main")
	return r
}

func (r *testRepo) git(args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Ada", "GIT_AUTHOR_EMAIL=ada@example.com",
		"GIT_COMMITTER_NAME=Ada", "GIT_COMMITTER_EMAIL=ada@example.com", "GIT_CONFIG_NOSYSTEM=1", "HOME="+r.dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// commit writes files (relative paths) and commits them; it returns the commit's sha.
func (r *testRepo) commit(msg string, files map[string]string) string {
	r.t.Helper()
	for name, body := range files {
		p := filepath.Join(r.dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
	r.git("add", "-A")
	r.git("commit", "-q", "--allow-empty", "-m", msg)
	return r.git("rev-parse", "HEAD")
}

// serveGitHTTP serves the repositories under root with git's own smart HTTP server (git http-backend), as a
// forge does; it returns the base URL.
func serveGitHTTP(t testing.TB, root string) string {
	t.Helper()
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		testtier.Skipf(t, "git --exec-path: %v", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		testtier.Skipf(t, "git-http-backend not found at %s: install git's full package", backend)
	}
	srv := httptest.NewServer(&cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}})
	t.Cleanup(srv.Close)
	return srv.URL
}

// forgePush is a push webhook as GitHub, Gitea or GitLab sends it, signed (HMAC-SHA256 of the body) or
// carrying the token as that forge does.
func forgePush(provider, delivery, branch, before, after, message, secret string) (http.Header, []byte) {
	ref := "refs/heads/" + branch
	commit := map[string]any{"id": after, "message": message, "timestamp": time.Now().UTC().Format(time.RFC3339),
		"author": map[string]any{"name": "Ada", "email": "ada@example.com"}}
	mac := func(body []byte) string {
		m := hmac.New(sha256.New, []byte(secret))
		m.Write(body)
		return hex.EncodeToString(m.Sum(nil))
	}
	h := http.Header{"Content-Type": {"application/json"}}
	var body []byte
	switch provider {
	case builder.ProviderGitHub:
		body, _ = json.Marshal(map[string]any{"ref": ref, "before": before, "after": after, "created": false,
			"deleted": false, "forced": false, "head_commit": commit, "commits": []any{commit},
			"repository": map[string]any{"full_name": "octo/web"}, "pusher": map[string]any{"name": "octo"}})
		h.Set("User-Agent", "GitHub-Hookshot/044aadd")
		h.Set("X-GitHub-Event", "push")
		h.Set("X-GitHub-Delivery", delivery)
		h.Set("X-Hub-Signature-256", "sha256="+mac(body))
	case builder.ProviderGitea:
		body, _ = json.Marshal(map[string]any{"ref": ref, "before": before, "after": after,
			"head_commit": commit, "commits": []any{commit},
			"repository": map[string]any{"full_name": "gitea/web"}, "pusher": map[string]any{"login": "gitea"}})
		for _, p := range []string{"X-Gitea-", "X-Gogs-", "X-GitHub-"} {
			h.Set(p+"Event", "push")
			h.Set(p+"Delivery", delivery)
		}
		h.Set("X-Gitea-Signature", mac(body))
		h.Set("X-Gogs-Signature", mac(body))
		h.Set("X-Hub-Signature-256", "sha256="+mac(body))
	case builder.ProviderGitLab:
		body, _ = json.Marshal(map[string]any{"object_kind": "push", "event_name": "push", "before": before,
			"after": after, "ref": ref, "checkout_sha": after, "commits": []any{commit}, "total_commits_count": 1,
			"project": map[string]any{"path_with_namespace": "group/web"}})
		h.Set("User-Agent", "GitLab/17.0.0")
		h.Set("X-Gitlab-Event", "Push Hook")
		h.Set("Idempotency-Key", delivery)
		h.Set("X-Gitlab-Event-UUID", delivery)
		h.Set("X-Gitlab-Token", secret)
	}
	return h, body
}

// sendHook posts a webhook to the API at addr and returns the status and the answer.
func sendHook(t testing.TB, hc *http.Client, addr, app string, h http.Header, body []byte) (int, builder.HookResponse) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/hooks/"+app, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("webhook to %s: %v", addr, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out builder.HookResponse
	if json.Unmarshal(data, &out) != nil || out.Status == "" {
		out.Message = string(data)
	}
	return resp.StatusCode, out
}

// buildMesh is an in-process mesh of servers run as the binary runs them (daemon.Main), and their builders.
type buildMesh struct {
	t    *testing.T
	c    *daemonMesh
	svcs map[string]*builder.Service
}

func newBuildMesh(t *testing.T, size int) *buildMesh {
	t.Helper()
	m := &buildMesh{t: t, svcs: map[string]*builder.Service{}}
	m.c = startDaemonMesh(t, size, func(d *daemon.Main) { d.Builder.KillGrace = time.Second })
	for _, d := range m.c.Mains {
		m.svcs[d.Node.Name()] = d.BuilderSvc
	}
	return m
}

func (m *buildMesh) api(n *node.Node) *client.Client { return client.New(n.HTTPAddr(), m.c.AdminToken) }

// live returns the nodes still running.
func (m *buildMesh) live() []*node.Node {
	var out []*node.Node
	for _, n := range m.c.Nodes {
		if n != nil {
			out = append(out, n)
		}
	}
	return out
}

func (m *buildMesh) follower() *node.Node {
	leader := m.c.Leader()
	for _, n := range m.live() {
		if n != leader {
			return n
		}
	}
	m.t.Fatal("no follower")
	return nil
}

// waitBuild polls build id through n until cond holds.
func waitBuildVia(t testing.TB, cl *client.Client, id, what string, timeout time.Duration, cond func(b raftfsm.Build) bool) raftfsm.Build {
	t.Helper()
	var b raftfsm.Build
	testutil.Eventually(t, timeout, fmt.Sprintf("build %s %s", id, what), func() (bool, string) {
		b = raftfsm.Build{}
		if _, err := cl.Get(context.Background(), "/v1/builds/"+id, &b); err != nil {
			return false, err.Error()
		}
		return cond(b), fmt.Sprintf("%+v", b)
	})
	return b
}

// readLog reads a build's whole log through cl's node.
func readLog(cl *client.Client, hc *http.Client, id string) string {
	req, _ := http.NewRequest(http.MethodGet, "http://"+cl.Addr+"/v1/builds/"+id+"/log", nil)
	req.Header.Set("Authorization", "Bearer "+cl.Token)
	resp, err := hc.Do(req)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return string(data)
}

// archiveNames lists the entries of a tar.gz release archive.
func archiveNames(t testing.TB, r io.Reader) []string {
	t.Helper()
	zr, err := gzip.NewReader(r)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	sort.Strings(names)
	return names
}

// gate is a file a build section waits for, so a test controls a build's timing without sleeping. The wait is
// bounded, and the gate is opened when the test ends, so no build script outlives the test.
type gate struct {
	t    testing.TB
	path string
}

func newGate(t testing.TB) *gate {
	g := &gate{t: t, path: filepath.Join(t.TempDir(), "gate")}
	t.Cleanup(func() { os.WriteFile(g.path, nil, 0o644) })
	return g
}

// line is the script line that waits for the gate, at most 2 minutes.
func (g *gate) line() string {
	return `i=0; while [ ! -e "$GATE" ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done`
}

func (g *gate) open() {
	g.t.Helper()
	if err := os.WriteFile(g.path, nil, 0o644); err != nil {
		g.t.Fatal(err)
	}
}
