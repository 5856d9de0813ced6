package builder

import (
	"context"
	"errors"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-ci/shoal/internal/testtier"
)

// gitRepo is a real repository made by the test.
type gitRepo struct {
	t   *testing.T
	dir string
}

func newGitRepo(t *testing.T, dir string) *gitRepo {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		testtier.Skip(t, "git is not installed: install git to run the git tests")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r := &gitRepo{t: t, dir: dir}
	r.git("init", "-q", "-b", "main")
	return r
}

func (r *gitRepo) git(args ...string) string {
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

// commit writes files and commits them, returning the new commit's sha.
func (r *gitRepo) commit(msg string, files map[string]string) string {
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

// serveGit serves every repository under root over HTTP with the real git http-backend, as a forge would.
func serveGit(t *testing.T, root string) string {
	t.Helper()
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		testtier.Skipf(t, "git --exec-path: %v", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		testtier.Skipf(t, "git-http-backend not found at %s: install git's full package", backend)
	}
	srv := httptest.NewServer(&cgi.Handler{
		Path: backend,
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"},
	})
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestGitByPathAndHTTP(t *testing.T) {
	root := t.TempDir()
	repo := newGitRepo(t, filepath.Join(root, "app.git"))
	first := repo.commit("first commit", map[string]string{"a.txt": "one\n"})
	repo.git("tag", "v1")
	second := repo.commit("second: $(touch pwned)", map[string]string{"a.txt": "two\n", "sub/b.txt": "b\n"})
	repo.git("checkout", "-q", "-b", "feature")
	feature := repo.commit("feature work", map[string]string{"f.txt": "f\n"})
	repo.git("checkout", "-q", "main")

	base := serveGit(t, root)
	for _, tc := range []struct{ name, url string }{
		{"path", repo.dir},
		{"http", base + "/app.git"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if got, err := LsRemote(ctx, tc.url, "main"); err != nil || got != second {
				t.Errorf("LsRemote main = %q, %v; want %s", got, err, second)
			}
			if got, err := LsRemote(ctx, tc.url, "feature"); err != nil || got != feature {
				t.Errorf("LsRemote feature = %q, %v; want %s", got, err, feature)
			}
			if got, err := LsRemote(ctx, tc.url, ""); err != nil || got != second {
				t.Errorf("LsRemote HEAD = %q, %v; want %s", got, err, second)
			}
			if _, err := LsRemote(ctx, tc.url, "nope"); !errors.Is(err, ErrRefNotFound) {
				t.Errorf("LsRemote of a missing branch: %v", err)
			}

			for _, fc := range []struct {
				ref, sha, a string
			}{
				{"main", second, "two\n"},
				{"feature", feature, "two\n"},
				{first, first, "one\n"},
				{"v1", first, "one\n"},
			} {
				dir := filepath.Join(t.TempDir(), "work")
				if err := Fetch(ctx, tc.url, fc.ref, dir); err != nil {
					t.Fatalf("Fetch %s: %v", fc.ref, err)
				}
				if data, err := os.ReadFile(filepath.Join(dir, "a.txt")); err != nil || string(data) != fc.a {
					t.Errorf("Fetch %s: a.txt = %q, %v", fc.ref, data, err)
				}
				sha, subject, author, err := CommitInfo(ctx, dir)
				if err != nil || sha != fc.sha || author != "Ada <ada@example.com>" {
					t.Errorf("CommitInfo after %s = %q %q %q %v", fc.ref, sha, subject, author, err)
				}
				if fc.ref == "main" && subject != "second: $(touch pwned)" {
					t.Errorf("subject %q", subject)
				}
				if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
					t.Error("a commit message was executed")
				}
			}
			if err := Fetch(ctx, tc.url, "no-such-branch", t.TempDir()); err == nil {
				t.Error("Fetch of a missing branch succeeded")
			}
		})
	}
}

func TestGitRejectsOptionInjection(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	marker := filepath.Join(dir, "injected")
	for _, repo := range []string{"--upload-pack=touch " + marker, "-oProxyCommand=touch " + marker, ""} {
		if _, err := LsRemote(ctx, repo, "main"); err == nil {
			t.Errorf("LsRemote accepted repo %q", repo)
		}
		if err := Fetch(ctx, repo, "main", filepath.Join(dir, "w")); err == nil {
			t.Errorf("Fetch accepted repo %q", repo)
		}
	}
	for _, ref := range []string{"--upload-pack=touch " + marker, "-b", "main:refs/heads/x", "a b", "a..b", "x\n"} {
		if _, err := LsRemote(ctx, "/nonexistent", ref); err == nil || !strings.Contains(err.Error(), "ref") {
			t.Errorf("LsRemote accepted ref %q: %v", ref, err)
		}
		if err := Fetch(ctx, "/nonexistent", ref, filepath.Join(dir, "w")); err == nil {
			t.Errorf("Fetch accepted ref %q", ref)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("an option was injected into git")
	}
}

func TestGitCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	repo := newGitRepo(t, t.TempDir())
	repo.commit("c", nil)
	if _, err := LsRemote(ctx, repo.dir, "main"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled LsRemote: %v", err)
	}
}

func TestRedactURL(t *testing.T) {
	if got := redactURL("https://bob:t0ken@example.com/r.git"); strings.Contains(got, "t0ken") {
		t.Errorf("redactURL kept the password: %s", got)
	}
	if got := redactPassword("fatal: unable to access 'https://bob:t0ken@example.com/'", "https://bob:t0ken@example.com/r.git"); strings.Contains(got, "t0ken") {
		t.Errorf("redactPassword kept the password: %s", got)
	}
}

// TestGitFetchShaOldProtocol fetches a commit that is no branch tip from a server speaking protocol v0,
// which refuses such wants: Fetch must fall back to fetching the branches.
func TestGitFetchShaOldProtocol(t *testing.T) {
	root := t.TempDir()
	repo := newGitRepo(t, filepath.Join(root, "app.git"))
	first := repo.commit("first", map[string]string{"a.txt": "one\n"})
	repo.commit("second", map[string]string{"a.txt": "two\n"})
	url := serveGit(t, root) + "/app.git"
	t.Setenv("GIT_CONFIG_COUNT", "1")
	t.Setenv("GIT_CONFIG_KEY_0", "protocol.version")
	t.Setenv("GIT_CONFIG_VALUE_0", "0")
	dir := filepath.Join(t.TempDir(), "work")
	if err := Fetch(context.Background(), url, first, dir); err != nil {
		t.Fatalf("Fetch %s over protocol v0: %v", first, err)
	}
	if sha, _, _, err := CommitInfo(context.Background(), dir); err != nil || sha != first {
		t.Errorf("checked out %s, %v; want %s", sha, err, first)
	}
}
