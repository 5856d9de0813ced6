package deployer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/cbroglie/mustache"
	"gopkg.in/yaml.v3"

	"github.com/shoal-ci/shoal/internal/fsutil"
	"github.com/shoal-ci/shoal/internal/proc"
)

// InstallView names the data files of InstallTemplates: a comma-separated list of JSON or YAML files relative to
// the install home, read in order (a later file's keys win). Distelli's DISTELLI_INSTALLVIEW is read when
// SHOAL_INSTALLVIEW is not set. Set either in the manifest's Env or as an environment variable, typically a
// different file per environment.
const (
	InstallView         = "SHOAL_INSTALLVIEW"
	DistelliInstallView = "DISTELLI_INSTALLVIEW"
)

// maxTemplateSize bounds a template, a partial and a data file: they are configuration, not payload.
const maxTemplateSize = 4 << 20

// renderTemplates renders the release's InstallTemplates with Mustache, as Distelli's agent did between the
// unpacking and PostInstall. The data is the environment every script of the release sees (shoal-env.sh run by
// bash, so the manifest's Env is expanded as the hooks see it), overlaid by the data files the install view
// names. A data file may hold `partials:`, a map from a partial's name to its file (relative to the install home),
// for {{> name}}. {{VAR}} is HTML-escaped as Mustache says; {{&VAR}} and {{{VAR}}} are not. A template is
// rendered to a file of its own base name in its output directory, or in place; every path stays inside the
// install home.
func (l *Lifecycle) renderTemplates(ctx context.Context) error {
	if len(l.Hooks.Templates) == 0 {
		return nil
	}
	l.begin(PhaseTemplates)
	logPath := l.LogPath(PhaseTemplates)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return phaseErr(PhaseTemplates, err)
	}
	defer logf.Close()
	fail := func(err error) error {
		fmt.Fprintf(logf, "error: %v\n", err)
		return &PhaseError{Phase: PhaseTemplates, LogPath: logPath, Tail: err.Error(), Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, l.Hooks.timeout(PhaseTemplates))
	defer cancel()
	env, err := l.scriptEnv(ctx)
	if err != nil {
		return fail(err)
	}
	data := map[string]any{}
	for k, v := range env {
		data[k] = v
	}
	view := env[InstallView]
	if view == "" {
		view = env[DistelliInstallView]
	}
	partials := map[string]string{}
	for _, name := range strings.Split(view, ",") {
		name = strings.Trim(strings.TrimSpace(name), `"'`)
		if name == "" {
			continue
		}
		if err := l.readView(name, data, partials); err != nil {
			return fail(err)
		}
		fmt.Fprintf(logf, "data: %s\n", name)
	}
	provider := &mustache.StaticProvider{Partials: partials}
	for _, t := range l.Hooks.Templates {
		src, err := l.inside(t.Path)
		if err != nil {
			return fail(fmt.Errorf("template %s: %w", t.Path, err))
		}
		text, err := readLimited(src)
		if err != nil {
			return fail(fmt.Errorf("template %s: %w (is it in PkgInclude?)", t.Path, err))
		}
		out, err := mustache.RenderPartials(string(text), provider, data)
		if err != nil {
			return fail(fmt.Errorf("template %s: %w", t.Path, err))
		}
		dest := t.Path
		if t.Dir != "" {
			dest = filepath.Join(t.Dir, filepath.Base(t.Path))
		}
		target, err := l.inside(dest)
		if err != nil {
			return fail(fmt.Errorf("template %s: output %s: %w", t.Path, dest, err))
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return fail(err)
		}
		mode := os.FileMode(0o644)
		if fi, err := os.Stat(src); err == nil {
			mode = fi.Mode().Perm()
		}
		if err := fsutil.WriteAtomic(target, []byte(out), mode); err != nil {
			return fail(fmt.Errorf("template %s: write %s: %w", t.Path, dest, err))
		}
		fmt.Fprintf(logf, "rendered %s -> %s (%d bytes)\n", t.Path, dest, len(out))
	}
	return nil
}

// scriptEnv is the environment the release's scripts run with: shoal-env.sh sourced by bash in the install home.
func (l *Lifecycle) scriptEnv(ctx context.Context) (map[string]string, error) {
	envPath := filepath.Join(l.runDir(), "bin", "shoal-env.sh")
	cmd := exec.CommandContext(ctx, "bash", "-e", "-c", `. "$1" && env -0`, "bash", envPath)
	cmd.Dir = l.InstallDir
	cmd.Env = l.baseEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	proc.StopOnCancel(cmd, time.Second) // SIGTERM to the group, SIGKILL after the grace
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("evaluate the release's environment: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	env := map[string]string{}
	for _, kv := range bytes.Split(out, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok && k != "" {
			env[k] = v
		}
	}
	return env, nil
}

// readView merges one data file into data (its top-level keys win) and its partials into partials.
func (l *Lifecycle) readView(name string, data map[string]any, partials map[string]string) error {
	path, err := l.inside(name)
	if err != nil {
		return fmt.Errorf("install view %s: %w", name, err)
	}
	raw, err := readLimited(path)
	if err != nil {
		return fmt.Errorf("install view %s: %w (is it in PkgInclude?)", name, err)
	}
	var view map[string]any
	if err := yaml.Unmarshal(raw, &view); err != nil {
		return fmt.Errorf("install view %s is not JSON or YAML with a mapping at its top: %w", name, err)
	}
	if p, ok := view["partials"]; ok {
		m, ok := p.(map[string]any)
		if !ok {
			return fmt.Errorf("install view %s: partials must map a partial's name to its file", name)
		}
		names := make([]string, 0, len(m))
		for k := range m {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			file, ok := m[k].(string)
			if !ok {
				return fmt.Errorf("install view %s: partial %q must name a file", name, k)
			}
			pp, err := l.inside(file)
			if err != nil {
				return fmt.Errorf("install view %s: partial %q: %w", name, k, err)
			}
			text, err := readLimited(pp)
			if err != nil {
				return fmt.Errorf("install view %s: partial %q: %w", name, k, err)
			}
			partials[k] = string(text)
		}
		delete(view, "partials")
	}
	for k, v := range view {
		data[k] = v
	}
	return nil
}

// inside resolves rel against the install home and refuses a path that leaves it, also through a symlink.
func (l *Lifecycle) inside(rel string) (string, error) {
	if filepath.IsAbs(rel) {
		return "", errors.New("is an absolute path: paths are relative to the install home")
	}
	root, err := filepath.EvalSymlinks(l.InstallDir)
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, rel)
	if !within(root, p) {
		return "", errors.New("leaves the install home")
	}
	// The deepest existing ancestor, links resolved, must still be inside.
	for q := p; ; q = filepath.Dir(q) {
		if r, err := filepath.EvalSymlinks(q); err == nil {
			if !within(root, r) {
				return "", errors.New("leaves the install home through a symbolic link")
			}
			break
		}
		if q == root {
			break
		}
	}
	return p, nil
}

func within(root, p string) bool {
	r, err := filepath.Rel(root, p)
	return err == nil && r != ".." && !strings.HasPrefix(r, ".."+string(filepath.Separator))
}

// readLimited reads a file of at most maxTemplateSize bytes.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTemplateSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxTemplateSize {
		return nil, fmt.Errorf("is over %d bytes", maxTemplateSize)
	}
	return b, nil
}
