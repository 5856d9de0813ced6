package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-ci/shoal/internal/proc"
)

// ErrRefNotFound is returned (wrapped) by LsRemote when the repository has no such branch.
var ErrRefNotFound = errors.New("ref not found in the repository")

// gitWaitDelay bounds how long a cancelled git waits for helpers that still hold its output pipes.
const gitWaitDelay = 5 * time.Second

// LsRemote returns the commit a branch of a repository points at, asking the repository itself (no checkout):
// the poll trigger. branch "" means the repository's HEAD.
func LsRemote(ctx context.Context, repo, branch string) (string, error) {
	if err := checkRepo(repo); err != nil {
		return "", err
	}
	want := "HEAD"
	if branch != "" {
		if err := checkRef(branch); err != nil {
			return "", err
		}
		want = "refs/heads/" + branch
	}
	out, err := runGit(ctx, "", repo, "ls-remote", "--", repo, want)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(out), "\n") {
		sha, ref, ok := strings.Cut(line, "\t")
		if ok && ref == want && isSHA(sha) {
			return sha, nil
		}
	}
	return "", fmt.Errorf("%w: %s has no %s: check the app's branch", ErrRefNotFound, redactURL(repo), want)
}

// Fetch checks out one ref of a repository into dir: git init, a shallow fetch of just that ref, and a
// checkout of what was fetched. ref may be a branch, a tag or a full commit sha. dir is created when missing
// and should be empty.
func Fetch(ctx context.Context, repo, ref, dir string) error {
	if err := checkRepo(repo); err != nil {
		return err
	}
	if err := checkRef(ref); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create the checkout directory: %w", err)
	}
	if _, err := runGit(ctx, "", repo, "init", "-q", "--", dir); err != nil {
		return err
	}
	target := "FETCH_HEAD"
	if _, err := runGit(ctx, dir, repo, "fetch", "-q", "--depth", "1", "--no-tags", "--", repo, ref); err != nil {
		// Servers speaking git's old protocol refuse a want for a commit that no branch tip names; for a sha,
		// fetch every branch in full and find the commit among them.
		if !isSHA(ref) || ctx.Err() != nil {
			return err
		}
		if _, err2 := runGit(ctx, dir, repo, "fetch", "-q", "--no-tags", "--", repo, "+refs/heads/*:refs/remotes/origin/*"); err2 != nil {
			return err
		}
		target = ref
	}
	if _, err := runGit(ctx, dir, repo, "-c", "advice.detachedHead=false", "checkout", "-q", "--force", target); err != nil {
		return err
	}
	return nil
}

// CommitInfo describes the commit checked out in dir: its full sha, subject line and author ("Name <email>").
func CommitInfo(ctx context.Context, dir string) (sha, subject, author string, err error) {
	out, err := runGit(ctx, dir, "", "log", "-1", "--format=%H%x00%s%x00%an <%ae>")
	if err != nil {
		return "", "", "", err
	}
	parts := strings.SplitN(strings.TrimSuffix(string(out), "\n"), "\x00", 3)
	if len(parts) != 3 || !isSHA(parts[0]) {
		return "", "", "", fmt.Errorf("git log in %s printed %q, not a commit", dir, out)
	}
	return parts[0], parts[1], parts[2], nil
}

// runGit runs git with arguments only (no shell), its own process group killed whole on cancel, no
// terminal prompts, and ssh in batch mode, so a repository that wants a password fails instead of hanging.
// repo is only used to hide its password in error messages.
func runGit(ctx context.Context, dir, repo string, args ...string) ([]byte, error) {
	// Hardening that must hold whatever the user's git config says: ext:: runs arbitrary commands.
	full := append([]string{"-c", "protocol.ext.allow=never"}, args...)
	if dir != "" {
		full = append([]string{"-C", dir}, full...)
	}
	cmd := exec.CommandContext(ctx, "git", full...)
	cmd.Env = gitEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	proc.StopOnCancel(cmd, time.Second) // SIGTERM to the group, SIGKILL after the grace
	cmd.WaitDelay = gitWaitDelay
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if lines := strings.Split(msg, "\n"); len(lines) > 5 {
			msg = strings.Join(lines[len(lines)-5:], "\n")
		}
		msg = redactPassword(msg, repo)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("git %s stopped: %w", args[0], ctx.Err())
		}
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("git %s %s: %s", args[0], redactURL(repo), msg)
	}
	return stdout.Bytes(), nil
}

// gitEnv is the node's environment (git may need its HOME, proxies and ssh agent) without the variables
// that would point git at another repository, plus no prompts.
func gitEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
			"GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_CEILING_DIRECTORIES", "GIT_TERMINAL_PROMPT", "LC_ALL":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "GIT_TERMINAL_PROMPT=0", "LC_ALL=C")
	if os.Getenv("GIT_SSH_COMMAND") == "" && os.Getenv("GIT_SSH") == "" {
		env = append(env, "GIT_SSH_COMMAND=ssh -o BatchMode=yes")
	}
	return env
}

// checkRepo refuses repository URLs git could read as an option (option injection) or that carry control
// characters.
func checkRepo(repo string) error {
	switch {
	case repo == "":
		return errors.New("the app has no repository URL: set one")
	case strings.HasPrefix(repo, "-"):
		return fmt.Errorf("repository URL %q starts with '-', which git would read as an option: fix the URL", repo)
	case strings.ContainsFunc(repo, isControl):
		return fmt.Errorf("repository URL %q holds control characters: fix the URL", redactURL(repo))
	}
	return nil
}

// checkRef refuses refs git could read as an option, and characters no branch, tag or sha contains (":"
// would make a refspec that writes elsewhere).
func checkRef(ref string) error {
	switch {
	case ref == "":
		return errors.New("no ref to build: name a branch, tag or commit")
	case strings.HasPrefix(ref, "-"):
		return fmt.Errorf("ref %q starts with '-', which git would read as an option", ref)
	case strings.ContainsFunc(ref, isControl), strings.ContainsAny(ref, " :^~?*[\\"), strings.Contains(ref, ".."):
		return fmt.Errorf("ref %q is not a valid branch, tag or commit name", ref)
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// isSHA reports whether s is a full object name (sha1 or sha256 repositories).
func isSHA(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// redactURL hides the password of a URL like https://user:token@host/repo, for messages and logs.
func redactURL(repo string) string {
	u, err := url.Parse(repo)
	if err != nil || u.User == nil {
		return repo
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// redactPassword removes a repository URL's password from text git printed.
func redactPassword(text, repo string) string {
	u, err := url.Parse(repo)
	if err != nil || u.User == nil {
		return text
	}
	if pw, ok := u.User.Password(); ok && pw != "" {
		text = strings.ReplaceAll(text, pw, "xxxxx")
		if esc := url.QueryEscape(pw); esc != pw {
			text = strings.ReplaceAll(text, esc, "xxxxx")
		}
	}
	return text
}

// ResolveRef asks the repository which commit ref names: a branch (branch is then ref's short name), else a
// tag (annotated tags are peeled to their commit). A full sha is taken as it is, without asking. ref may also
// be given in full (refs/heads/x, refs/tags/x).
func ResolveRef(ctx context.Context, repo, ref string) (sha, branch string, err error) {
	if isSHA(ref) {
		return ref, "", nil
	}
	if err := checkRepo(repo); err != nil {
		return "", "", err
	}
	if err := checkRef(ref); err != nil {
		return "", "", err
	}
	name := ref
	var kinds []string
	switch {
	case strings.HasPrefix(ref, "refs/heads/"):
		name, kinds = strings.TrimPrefix(ref, "refs/heads/"), []string{"refs/heads/"}
	case strings.HasPrefix(ref, "refs/tags/"):
		name, kinds = strings.TrimPrefix(ref, "refs/tags/"), []string{"refs/tags/"}
	default:
		kinds = []string{"refs/heads/", "refs/tags/"}
	}
	var patterns []string
	for _, k := range kinds {
		// The trailing * brings the peeled "^{}" line of an annotated tag; exact names are picked below.
		patterns = append(patterns, k+name+"*")
	}
	out, err := runGit(ctx, "", repo, append([]string{"ls-remote", "--", repo}, patterns...)...)
	if err != nil {
		return "", "", err
	}
	found := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if id, r, ok := strings.Cut(line, "\t"); ok && isSHA(id) {
			found[r] = id
		}
	}
	for _, k := range kinds {
		full := k + name
		if k == "refs/heads/" {
			if id, ok := found[full]; ok {
				return id, name, nil
			}
			continue
		}
		if id, ok := found[full+"^{}"]; ok {
			return id, "", nil
		}
		if id, ok := found[full]; ok {
			return id, "", nil
		}
	}
	return "", "", fmt.Errorf("%w: %s has no branch or tag %q: push it, or name a commit", ErrRefNotFound, redactURL(repo), ref)
}
