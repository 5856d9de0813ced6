package raftfsm

import (
	"path"
	"strings"
	"time"
)

// The one rule set for the names and values that users give: the API checks them at the door (so a bad request
// never becomes a command), and the apply rules check them again (so a command from anywhere else cannot store
// one either).

// MinPollInterval is the shortest repository poll interval an app may have (0 turns polling off).
const MinPollInterval = Duration(time.Second)

// ValidName checks the name of a node, token, app, environment or release: 1-63 letters, digits, '.', '_' or
// '-', starting with a letter or digit (so it is safe as a path element, a URL segment and a label).
func ValidName(what, name string) error {
	if err := checkName(what, name); err != nil {
		return err
	}
	return nil
}

// ValidManifestPath checks an app's manifest path: empty (the default names) or a relative path inside the
// repository, without "..", NUL or control characters.
func ValidManifestPath(p string) error {
	if p == "" {
		return nil
	}
	switch {
	case len(p) > 255:
		return badRequest("manifest path is %d characters long; the most is 255", len(p))
	case hasControl(p):
		return badRequest("manifest path %q holds a control character", p)
	case strings.HasPrefix(p, "/") || strings.Contains(p, "\\"):
		return badRequest("manifest path %q must be relative to the repository root, with '/' separators", p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return badRequest("manifest path %q leaves the repository: remove the '..'", p)
		}
	}
	if path.Clean(p) != p {
		return badRequest("manifest path %q is not clean: write it as %q", p, path.Clean(p))
	}
	return nil
}

// ValidRepoURL checks an app's repository: a URL git can fetch (https://, http://, ssh://, git://, file://), an
// scp-like address (git@host:path) or an absolute path; no control characters, no leading '-' (git would read
// an option), and no git remote helpers such as ext:: that run commands.
func ValidRepoURL(u string) error {
	switch {
	case u == "":
		return nil // an app fed only by `node release push` has no repository
	case len(u) > 2048:
		return badRequest("repository URL is %d characters long; the most is 2048", len(u))
	case hasControl(u) || strings.ContainsAny(u, " \t"):
		return badRequest("repository URL %q holds a space or a control character", u)
	case strings.HasPrefix(u, "-"):
		return badRequest("repository URL %q may not start with '-'", u)
	case strings.Contains(u, "::"):
		return badRequest("repository URL %q uses a git remote helper (<transport>::); use https://, ssh://, git://, file:// or a path", u)
	}
	if scheme, _, ok := strings.Cut(u, "://"); ok {
		switch strings.ToLower(scheme) {
		case "https", "http", "ssh", "git", "file":
			return nil
		}
		return badRequest("repository URL %q has scheme %q; use https, http, ssh, git or file", u, scheme)
	}
	return nil // a path, or scp-like user@host:path
}

// ValidTTL checks a lifetime given by a user: positive and at most max.
func ValidTTL(what string, ttl, max time.Duration) error {
	if ttl <= 0 {
		return badRequest("%s must be positive, like 1h or 30m (got %v)", what, ttl)
	}
	if ttl > max {
		return badRequest("%s %v is longer than the most allowed, %v", what, ttl, max)
	}
	return nil
}

// ValidApp checks the fields of an app a user gives.
func ValidApp(a *App) error {
	if err := ValidName("app", a.Name); err != nil {
		return err
	}
	if err := ValidRepoURL(a.Repo); err != nil {
		return err
	}
	if err := ValidManifestPath(a.Manifest); err != nil {
		return err
	}
	if a.PollInterval < 0 || a.PollInterval > 0 && a.PollInterval < MinPollInterval {
		return badRequest("poll interval %v is too short: use 0 (no polling) or at least %v", time.Duration(a.PollInterval), time.Duration(MinPollInterval))
	}
	return nil
}

// ValidEnv checks the name of an environment a user gives and the names of its servers.
func ValidEnv(e *Env) error {
	if err := ValidName("environment", e.Name); err != nil {
		return err
	}
	for _, srv := range e.Servers {
		if err := ValidName("server", srv); err != nil {
			return err
		}
	}
	return nil
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}
