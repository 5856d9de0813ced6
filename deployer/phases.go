package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-ci/shoal/internal/fsutil"
	"github.com/shoal-ci/shoal/internal/proc"
	"github.com/shoal-ci/shoal/manifest"
)

// Phase names, as OnPhase reports them and as the sections of Hooks are keyed (Distelli's names).
// Extract, Stop and Flip are the agent's own steps, not sections.
const (
	PhaseEnv           = "Env"
	PhasePreInstall    = "PreInstall"
	PhaseInstall       = "Install"
	PhaseExtract       = "Extract"
	PhaseTemplates     = "InstallTemplates"
	PhasePostInstall   = "PostInstall"
	PhaseStop          = "Stop"
	PhaseFlip          = "Flip"
	PhasePreStart      = "PreStart"
	PhaseExec          = "Exec"
	PhaseStart         = "Start"
	PhasePostStart     = "PostStart"
	PhasePreRestart    = "PreRestart"
	PhasePostRestart   = "PostRestart"
	PhasePreTerminate  = "PreTerminate"
	PhaseTerminate     = "Terminate"
	PhasePostTerminate = "PostTerminate"
)

// DefaultPhaseTimeout is Distelli's limit for every deploy phase.
const DefaultPhaseTimeout = 900 * time.Second

// scriptSections are the sections that become bin/shoal-<phase>.sh scripts.
var scriptSections = []string{PhasePreInstall, PhaseInstall, PhasePostInstall, PhasePreStart, PhaseExec,
	PhaseStart, PhasePostStart, PhasePreRestart, PhasePostRestart, PhasePreTerminate, PhaseTerminate,
	PhasePostTerminate}

// EnvVar is one manifest Env entry. Value is shell text, expanded when exported (so `date -u` and
// $(...) work, as in Distelli).
type EnvVar struct {
	Key   string
	Value string
}

// Hooks is the deploy half of a manifest, as the deployer needs it.
type Hooks struct {
	Env          []EnvVar
	Sections     map[string][]string      // by phase name: PreInstall, Install, Exec, ...; one shell line per item
	ProcessCount int                      // copies of Exec; 0 means 1
	Timeouts     map[string]time.Duration // by phase name; missing means DefaultPhaseTimeout
	// Templates are rendered after the release is unpacked (or Install ran) and before PostInstall.
	Templates []manifest.Template
}

func (h Hooks) has(section string) bool { return len(h.Sections[section]) > 0 }

func (h Hooks) timeout(phase string) time.Duration {
	if d, ok := h.Timeouts[phase]; ok && d > 0 {
		return d
	}
	return DefaultPhaseTimeout
}

// Lifecycle runs one release's deploy, restart or terminate on this node, in Distelli's order. The
// caller serializes operations per environment.
type Lifecycle struct {
	// Exported to every script as SHOAL_* (and the DISTELLI_* equivalents).
	App, Env, Release, Build, Commit, Branch, Node, Deployment string

	EnvDir     string // apps/<app>/<env>: holds `current`; the app home is EnvDir/current
	InstallDir string // this release's directory; for Restart and Terminate, empty means current's target
	RunDir     string // bin/ scripts and logs/ of this release; empty means InstallDir + ".shoal"

	Vars    []string // the environment's variables, KEY=value, literal; they override Hooks.Env
	BaseEnv []string // what every script starts from (PATH, HOME, LANG, ...); empty means a plain PATH
	Hooks   Hooks

	// OpenArchive returns the verified release archive (tar.gz). Not called when Install is present.
	OpenArchive func() (io.ReadCloser, error)
	// Supervisor is this (app, environment)'s Exec supervisor. Required when the old or new release
	// has an Exec section; a nil one means there is nothing to stop.
	Supervisor *Supervisor
	// Exec tunes supervision (MinStable, back-off, StopGrace, LogPath); the runner fills in the rest.
	// LogPath empty means EnvDir/exec.log.
	Exec ExecSpec

	OnPhase func(phase string) // called as each phase that has work begins; must not block
	Logger  *slog.Logger
}

// PhaseError is a failed phase: which one, its log, and the log's tail.
type PhaseError struct {
	Phase   string
	LogPath string
	Tail    string
	Err     error
}

func (e *PhaseError) Error() string {
	msg := fmt.Sprintf("%s failed: %v", e.Phase, e.Err)
	if e.LogPath != "" {
		msg += fmt.Sprintf(" (log %s)", e.LogPath)
	}
	if e.Tail != "" {
		msg += ": " + e.Tail
	}
	return msg
}

func (e *PhaseError) Unwrap() error { return e.Err }

func phaseErr(phase string, err error) error {
	var pe *PhaseError
	if errors.As(err, &pe) {
		return err
	}
	return &PhaseError{Phase: phase, Err: err}
}

// AppHome is where PreStart, Exec, Start and PostStart run: the `current` link of the environment.
func (l *Lifecycle) AppHome() string { return filepath.Join(l.EnvDir, CurrentLink) }

func (l *Lifecycle) runDir() string {
	if l.RunDir != "" {
		return l.RunDir
	}
	return l.InstallDir + ".shoal"
}

// ScriptPath is where the script of a section is written: RunDir/bin/shoal-<phase>.sh.
func (l *Lifecycle) ScriptPath(phase string) string {
	return filepath.Join(l.runDir(), "bin", "shoal-"+strings.ToLower(phase)+".sh")
}

// LogPath is where the output of a phase goes: RunDir/logs/<phase>.log.
func (l *Lifecycle) LogPath(phase string) string {
	return filepath.Join(l.runDir(), "logs", strings.ToLower(phase)+".log")
}

func (l *Lifecycle) logger() *slog.Logger {
	if l.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l.Logger
}

func (l *Lifecycle) begin(phase string) {
	l.logger().Info("deploy phase", "app", l.App, "env", l.Env, "release", l.Release, "phase", phase)
	if l.OnPhase != nil {
		l.OnPhase(phase)
	}
}

// Deploy installs the release into InstallDir and makes it current: Env, PreInstall, Install or
// extraction, InstallTemplates, PostInstall, stop the old Exec, flip, PreStart, Exec or Start, PostStart. A failure
// before the flip leaves the old release current and (unless the stop itself failed) running.
func (l *Lifecycle) Deploy(ctx context.Context) error {
	if l.EnvDir == "" || l.InstallDir == "" {
		return errors.New("deploy: EnvDir and InstallDir are required")
	}
	if cur, err := Current(l.EnvDir); err == nil && sameDir(cur, l.InstallDir) {
		return fmt.Errorf("deploy: %s is the active release; install into a new directory", l.InstallDir)
	}
	// Whatever a failed or interrupted attempt left here is not to be trusted: start clean.
	for _, d := range []string{l.InstallDir, l.InstallDir + ".extract", l.runDir()} {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("deploy: clear %s: %w", d, err)
		}
	}
	if err := os.MkdirAll(l.InstallDir, 0o755); err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	if err := l.writeScripts(); err != nil {
		return phaseErr(PhaseEnv, err)
	}
	if err := l.runEnv(ctx, l.InstallDir); err != nil {
		return err
	}
	if err := l.runSection(ctx, PhasePreInstall, l.InstallDir); err != nil {
		return err
	}
	if l.Hooks.has(PhaseInstall) {
		if err := l.runSection(ctx, PhaseInstall, l.InstallDir); err != nil {
			return err
		}
	} else if err := l.extract(); err != nil {
		return phaseErr(PhaseExtract, err)
	}
	if err := l.renderTemplates(ctx); err != nil {
		return err
	}
	if err := l.runSection(ctx, PhasePostInstall, l.InstallDir); err != nil {
		return err
	}
	if err := l.stopExec(ctx); err != nil {
		return err
	}
	l.begin(PhaseFlip)
	if err := FlipCurrent(l.EnvDir, l.InstallDir); err != nil {
		return phaseErr(PhaseFlip, err)
	}
	return l.start(ctx)
}

// Restart stops and starts the current release: Env, PreRestart, stop Exec, PreStart, Exec or Start,
// PostStart, PostRestart. Scripts are written again, so changed variables take effect.
func (l *Lifecycle) Restart(ctx context.Context) error {
	if err := l.useCurrent(); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	if err := l.writeScripts(); err != nil {
		return phaseErr(PhaseEnv, err)
	}
	if err := l.runEnv(ctx, l.AppHome()); err != nil {
		return err
	}
	if err := l.runSection(ctx, PhasePreRestart, l.AppHome()); err != nil {
		return err
	}
	if err := l.stopExec(ctx); err != nil {
		return err
	}
	if err := l.start(ctx); err != nil {
		return err
	}
	return l.runSection(ctx, PhasePostRestart, l.AppHome())
}

// Terminate runs Env, PreTerminate, Terminate, stops the Exec process, then PostTerminate. The
// release's files and `current` stay, as in Distelli.
func (l *Lifecycle) Terminate(ctx context.Context) error {
	if err := l.useCurrent(); err != nil {
		return fmt.Errorf("terminate: %w", err)
	}
	if err := l.writeScripts(); err != nil {
		return phaseErr(PhaseEnv, err)
	}
	if err := l.runEnv(ctx, l.AppHome()); err != nil {
		return err
	}
	for _, phase := range []string{PhasePreTerminate, PhaseTerminate} {
		if err := l.runSection(ctx, phase, l.AppHome()); err != nil {
			return err
		}
	}
	if err := l.stopExec(ctx); err != nil {
		return err
	}
	return l.runSection(ctx, PhasePostTerminate, l.AppHome())
}

func (l *Lifecycle) useCurrent() error {
	if l.EnvDir == "" {
		return errors.New("EnvDir is required")
	}
	if l.InstallDir != "" {
		return nil
	}
	cur, err := Current(l.EnvDir)
	if err != nil {
		return fmt.Errorf("no release is installed in %s: %w", l.EnvDir, err)
	}
	l.InstallDir = cur
	return nil
}

func (l *Lifecycle) start(ctx context.Context) error {
	if err := l.runSection(ctx, PhasePreStart, l.AppHome()); err != nil {
		return err
	}
	// Exec overrides Start when both are present, as in Distelli.
	if l.Hooks.has(PhaseExec) {
		if l.Supervisor == nil {
			return phaseErr(PhaseExec, errors.New("the release has an Exec section but no supervisor was given"))
		}
		l.begin(PhaseExec)
		if err := l.Supervisor.Start(l.ExecSpec()); err != nil {
			return phaseErr(PhaseExec, err)
		}
	} else if err := l.runSection(ctx, PhaseStart, l.AppHome()); err != nil {
		return err
	}
	return l.runSection(ctx, PhasePostStart, l.AppHome())
}

// ExecSpec is what the release's Exec section runs as under the Supervisor.
func (l *Lifecycle) ExecSpec() ExecSpec {
	spec := l.Exec
	spec.Script = l.ScriptPath(PhaseExec)
	spec.Dir = l.AppHome()
	spec.Env = l.baseEnv()
	spec.Count = l.Hooks.ProcessCount
	if spec.LogPath == "" {
		spec.LogPath = filepath.Join(l.EnvDir, "exec.log")
	}
	return spec
}

// HealthSpec completes a health check for this release: a command runs in the app home with the
// scripts' environment (shoal-env.sh is sourced first), like the hooks.
func (l *Lifecycle) HealthSpec(h HealthSpec) HealthSpec {
	if h.Command != "" {
		h.Command = ". " + shellQuote(filepath.Join(l.runDir(), "bin", "shoal-env.sh")) + "\n" + h.Command
		h.Dir = l.AppHome()
		h.Env = l.baseEnv()
	}
	return h
}

// RemoveRelease deletes an installed release with its scripts and logs and any leftovers of an
// interrupted install, refusing the one `current` points at. The deployer calls it for releases past
// the ones it keeps.
func RemoveRelease(envDir, installDir string) error {
	if cur, err := Current(envDir); err == nil && sameDir(cur, installDir) {
		return fmt.Errorf("remove release %s: it is the active release", installDir)
	}
	for _, d := range []string{installDir, installDir + ".shoal", installDir + ".extract", installDir + ".extract.partial"} {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("remove release %s: %w", installDir, err)
		}
	}
	return fsutil.SyncDir(filepath.Dir(installDir))
}

func (l *Lifecycle) stopExec(ctx context.Context) error {
	if l.Supervisor == nil {
		return nil
	}
	l.begin(PhaseStop)
	ctx, cancel := context.WithTimeout(ctx, l.Hooks.timeout(PhaseStop))
	defer cancel()
	if err := l.Supervisor.Stop(ctx); err != nil {
		return phaseErr(PhaseStop, err)
	}
	return nil
}

// extract unpacks the archive next to InstallDir and moves it in. InstallDir is normally still empty
// (PreInstall runs there before the release exists), so the move is one rename; if PreInstall left
// files, the release's entries are moved in beside them.
func (l *Lifecycle) extract() error {
	if l.OpenArchive == nil {
		return errors.New("the release has no Install section and no archive was given")
	}
	l.begin(PhaseExtract)
	rc, err := l.OpenArchive()
	if err != nil {
		return fmt.Errorf("open release archive: %w", err)
	}
	defer rc.Close()
	staging := l.InstallDir + ".extract"
	if err := Extract(rc, staging); err != nil {
		return err
	}
	defer os.RemoveAll(staging)
	left, err := os.ReadDir(l.InstallDir)
	if err != nil {
		return err
	}
	if len(left) == 0 {
		if err := os.Remove(l.InstallDir); err != nil {
			return err
		}
		if err := os.Rename(staging, l.InstallDir); err != nil {
			return err
		}
		return fsutil.SyncDir(filepath.Dir(l.InstallDir))
	}
	entries, err := os.ReadDir(staging)
	if err != nil {
		return err
	}
	for _, e := range entries {
		dst := filepath.Join(l.InstallDir, e.Name())
		if _, err := os.Lstat(dst); err == nil {
			return fmt.Errorf("PreInstall created %s, which the release also contains; have PreInstall write elsewhere", dst)
		}
		if err := os.Rename(filepath.Join(staging, e.Name()), dst); err != nil {
			return err
		}
	}
	return fsutil.SyncDir(l.InstallDir)
}

var envKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// shellQuote makes s one literal shell word.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// envScript is bin/shoal-env.sh: Shoal's variables, Distelli's names for them, the manifest's Env
// (expanded by the shell) and the environment's variables (literal, last so they win).
func (l *Lifecycle) envScript() (string, error) {
	var b strings.Builder
	b.WriteString("# Generated by shoal: the environment of every script of this release.\n")
	export := func(k, v string) { fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(v)) }
	for _, kv := range [][2]string{
		{"SHOAL_APP", l.App}, {"SHOAL_ENV", l.Env}, {"SHOAL_RELEASE", l.Release}, {"SHOAL_BUILD", l.Build},
		{"SHOAL_COMMIT", l.Commit}, {"SHOAL_BRANCH", l.Branch}, {"SHOAL_APPHOME", l.AppHome()},
		{"SHOAL_INSTALLHOME", l.InstallDir}, {"SHOAL_NODE", l.Node}, {"SHOAL_DEPLOYMENT", l.Deployment},
		{"DISTELLI_APPNAME", l.App}, {"DISTELLI_ENV", l.Env}, {"DISTELLI_RELVERSION", l.Release},
		{"DISTELLI_BUILDNUM", l.Build}, {"DISTELLI_RELREVISION", l.Commit}, {"DISTELLI_RELBRANCH", l.Branch},
		{"DISTELLI_APPHOME", l.AppHome()}, {"DISTELLI_INSTALLHOME", l.InstallDir},
	} {
		export(kv[0], kv[1])
	}
	for _, e := range l.Hooks.Env {
		if !envKey.MatchString(e.Key) {
			return "", fmt.Errorf("manifest Env name %q is not a valid variable name", e.Key)
		}
		// Double quotes keep spaces and still expand $VAR, $(cmd) and `cmd`, as Distelli's did.
		fmt.Fprintf(&b, "export %s=\"%s\"\n", e.Key, e.Value)
	}
	for _, kv := range l.Vars {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !envKey.MatchString(k) {
			return "", fmt.Errorf("environment variable %q is not NAME=value with a valid name", kv)
		}
		export(k, v)
	}
	return b.String(), nil
}

// writeScripts writes shoal-env.sh and one script per section. Each is replaced by rename, so a bash
// already running an old copy keeps reading the old file.
func (l *Lifecycle) writeScripts() error {
	bin := filepath.Join(l.runDir(), "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(l.runDir(), "logs"), 0o755); err != nil {
		return err
	}
	env, err := l.envScript()
	if err != nil {
		return err
	}
	envPath := filepath.Join(bin, "shoal-env.sh")
	if err := fsutil.WriteAtomic(envPath, []byte(env), 0o644); err != nil {
		return err
	}
	for _, section := range scriptSections {
		if !l.Hooks.has(section) {
			continue
		}
		dir := l.InstallDir
		switch section {
		case PhasePreInstall, PhaseInstall, PhasePostInstall:
		default:
			dir = l.AppHome()
		}
		var b strings.Builder
		fmt.Fprintf(&b, "#!/bin/bash\n# Generated by shoal: %s of %s/%s release %s.\nset -e\n", section, l.App, l.Env, l.Release)
		fmt.Fprintf(&b, ". %s\ncd %s\n", shellQuote(envPath), shellQuote(dir))
		for _, line := range l.Hooks.Sections[section] {
			b.WriteString(line)
			b.WriteString("\n")
		}
		if err := fsutil.WriteAtomic(l.ScriptPath(section), []byte(b.String()), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// runEnv checks that the environment script runs (its $(...) may fail) before anything else does.
func (l *Lifecycle) runEnv(ctx context.Context, dir string) error {
	return l.runScript(ctx, PhaseEnv, filepath.Join(l.runDir(), "bin", "shoal-env.sh"), dir)
}

func (l *Lifecycle) runSection(ctx context.Context, phase, dir string) error {
	if !l.Hooks.has(phase) {
		return nil
	}
	return l.runScript(ctx, phase, l.ScriptPath(phase), dir)
}

// runScript runs `bash -e script` in dir with its own log and time limit. The script gets a session of
// its own: a timeout or an interruption stops everything it started (SIGTERM, then SIGKILL after the grace:
// proc.StopOnCancel, the builder's policy too), while daemons that a Start section leaves behind on success
// live on.
func (l *Lifecycle) runScript(ctx context.Context, phase, script, dir string) error {
	l.begin(phase)
	logPath := l.LogPath(phase)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return phaseErr(phase, err)
	}
	defer logf.Close()
	limit := l.Hooks.timeout(phase)
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", script)
	cmd.Dir = dir
	cmd.Env = l.baseEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	proc.StopOnCancel(cmd, proc.DefaultGrace) // SIGTERM to the group, SIGKILL after the grace
	err = cmd.Run()
	if err == nil {
		return nil
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %s", limit)
	} else if ctx.Err() != nil {
		err = fmt.Errorf("interrupted: %w", ctx.Err())
	}
	return &PhaseError{Phase: phase, LogPath: logPath, Tail: fileTail(logPath, 1024), Err: err}
}

// baseEnv is the environment every script starts from, with the agent's own directory taken out of
// PATH: the agent binary is called `node` and must never shadow Node.js.
func (l *Lifecycle) baseEnv() []string {
	env := l.BaseEnv
	if len(env) == 0 {
		env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if p, ok := strings.CutPrefix(kv, "PATH="); ok {
			kv = "PATH=" + withoutAgentDir(p)
		}
		out = append(out, kv)
	}
	return out
}

func withoutAgentDir(path string) string {
	self, err := os.Executable()
	if err != nil {
		return path
	}
	selfInfo, err := os.Stat(self)
	if err != nil {
		return path
	}
	var keep []string
	for _, dir := range filepath.SplitList(path) {
		if fi, err := os.Stat(filepath.Join(dir, filepath.Base(self))); err == nil && os.SameFile(fi, selfInfo) {
			continue
		}
		keep = append(keep, dir)
	}
	return strings.Join(keep, string(filepath.ListSeparator))
}

// fileTail returns the last n bytes of a file, trimmed, for error messages.
func fileTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(fi.Size()-n, 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, n))
	if err != nil {
		return ""
	}
	s := strings.TrimSpace(string(b))
	if off > 0 {
		s = "…" + s
	}
	return s
}

// sameDir reports whether two paths name the same directory.
func sameDir(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	if err1 != nil || err2 != nil {
		return errors.Is(err1, fs.ErrNotExist) && errors.Is(err2, fs.ErrNotExist) && filepath.Clean(a) == filepath.Clean(b)
	}
	return os.SameFile(fa, fb)
}
