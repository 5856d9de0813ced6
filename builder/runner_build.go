package builder

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-ci/shoal/manifest"
	"github.com/shoal-ci/shoal/raftfsm"
)

// publishTimeout bounds how long a finished build tries to record its result while the mesh has no leader.
const publishTimeout = 30 * time.Second

// maxNotes bounds the release notes kept from ReleaseNotesCmd: they live in the replicated state.
const maxNotes = 16 << 10

// versionRE is what a custom version may look like: it names the release in URLs and directories.
var versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,62}$`)

// outcome is what a build attempt produced. An empty state means it was interrupted and records nothing.
type outcome struct {
	state   string
	err     string
	release *raftfsm.Release
}

func failed(format string, a ...any) outcome {
	return outcome{state: raftfsm.BuildFailed, err: fmt.Sprintf(format, a...)}
}

// attempt is one run of a build on this node.
type attempt struct {
	r   *runner
	j   *job
	b   raftfsm.Build
	log *buildLog
	red *Redactor // the runner's own lines, with the build's secrets hidden

	m       *manifest.Manifest
	mfile   string // the manifest's path in the checkout; always packaged, since each server reads it from the release
	src     string
	info    BuildInfo
	vars    []Var
	env     []string
	secrets []string
}

// run is one job: start the build under this term, run it, publish the result, count it.
func (r *runner) run(j *job, b raftfsm.Build) {
	lg, err := r.s.logs.open(b.ID)
	if err != nil {
		r.log.Error("cannot write build logs: fix the data dir", "build", b.ID, "err", err)
		return
	}
	defer lg.Close()
	// A build server's build was started by the leader's assignment; the leader's own builds start here.
	if !r.remote {
		if !r.begin(j, &b) {
			return
		}
		r.mu.Lock()
		j.started = true
		r.mu.Unlock()
	}

	start := time.Now()
	a := &attempt{r: r, j: j, b: b, log: lg, red: NewRedactor(lg, nil)}
	o := a.execute()
	result := r.publish(a, o)
	r.s.m.builds.WithLabelValues(b.App, result).Inc()
	r.s.m.duration.Observe(time.Since(start).Seconds())
	r.log.Info("build ended", "build", b.ID, "attempt", b.Attempt, "result", result, "took", time.Since(start).Round(time.Millisecond))
}

// say writes one line of the runner's own into the build log.
func (a *attempt) say(format string, args ...any) {
	fmt.Fprintf(a.red, "==> "+format+"\n", args...)
	a.red.Flush()
}

// stopped is the outcome of a build whose context ended: a cancel request is recorded as cancelled; anything
// else (leadership lost, node stopping) records nothing, and the next leader runs the build again.
func (a *attempt) stopped() outcome {
	cause := context.Cause(a.j.ctx)
	if errors.Is(cause, errCancelRequested) {
		a.say("cancelled by request: the build's processes were stopped")
		return outcome{state: raftfsm.BuildCancelled, err: "cancelled by request"}
	}
	a.say("stopped: %v; the build's processes were stopped and the build is queued again", cause)
	return outcome{}
}

func (a *attempt) execute() outcome {
	s, b := a.r.s, a.b
	ctx := a.j.ctx
	app, ok := s.app(b.App)
	if !ok {
		return failed("app %q no longer exists", b.App)
	}
	ref := firstNonEmpty(b.Commit, b.Ref, app.Branch)
	a.say("build %s (attempt %d) on node %s, leader term %d, started %s", b.ID, b.Attempt, s.n.Name(), b.Term,
		time.Now().UTC().Format(time.RFC3339))
	a.say("trigger %s; branch %s; ref %s; commit %s", b.Trigger, dashIfEmpty(b.Branch), dashIfEmpty(b.Ref), dashIfEmpty(b.Commit))

	work := filepath.Join(s.workDir, fmt.Sprintf("%s.%d", b.ID, b.Attempt))
	if err := os.RemoveAll(work); err != nil {
		return failed("clear the work dir: %v", err)
	}
	defer func() {
		if err := os.RemoveAll(work); err != nil {
			a.r.log.Warn("could not remove a build's work dir", "dir", work, "err", err)
		}
	}()
	a.src = filepath.Join(work, "src")

	a.say("fetching %s at %s", redactURL(app.Repo), ref)
	if err := Fetch(ctx, app.Repo, ref, a.src); err != nil {
		if ctx.Err() != nil {
			return a.stopped()
		}
		a.say("fetch failed: %v", err)
		return failed("fetch %s: %v", ref, err)
	}
	sha, subject, author, err := CommitInfo(ctx, a.src)
	if err != nil {
		if ctx.Err() != nil {
			return a.stopped()
		}
		return failed("read the fetched commit: %v", err)
	}
	if b.Commit != "" && sha != b.Commit {
		a.say("the repository gave commit %s for %s", sha, b.Commit)
		return failed("fetched commit %s, not the %s this build is for", sha, b.Commit)
	}
	a.say("commit %s: %s (%s)", sha, subject, author)

	m, file, err := manifest.Load(a.src, app.Manifest)
	if err != nil {
		a.say("the manifest cannot be used:")
		fmt.Fprintln(a.red, err.Error())
		a.red.Flush()
		first, _, _ := strings.Cut(err.Error(), "\n")
		if n := strings.Count(err.Error(), "\n"); n > 0 {
			first += fmt.Sprintf(" (and %d more problems: see the build log)", n)
		}
		return failed("manifest: %s", first)
	}
	a.m, a.mfile = m, file
	a.say("manifest %s (%s format)", file, m.Format)
	for _, w := range m.Warnings {
		a.say("warning: %s", w)
	}
	if m.Format == manifest.FormatShoal && m.App != "" && m.App != b.App {
		a.say("%s says `app: %s`, but this build is for app %s", file, m.App, b.App)
		return failed("%s is for app %q, not %q: fix `app:` or point this app at another manifest", file, m.App, b.App)
	}

	a.info = BuildInfo{App: b.App, Build: strconv.FormatUint(b.Number, 10), Commit: sha, Branch: b.Branch,
		Ref: firstNonEmpty(b.Ref, sha), CommitMessage: subject, CommitAuthor: author}
	a.vars = sortedVars(app.BuildVars)
	if err := a.setEnv(); err != nil {
		return failed("%v", err)
	}
	return a.scripts()
}

// setEnv computes the scripts' environment from a.info; the log redacts the secret values from here on.
func (a *attempt) setEnv() error {
	env, secrets, err := BuildEnv(a.info, a.vars)
	if err != nil {
		return err
	}
	a.red.Flush()
	a.env, a.secrets, a.red = env, secrets, NewRedactor(a.log, secrets)
	return nil
}

// scripts runs the build sections, then packages the release.
func (a *attempt) scripts() outcome {
	failure := ""
	for _, sec := range []string{"PreBuild", "Build", "PreRelease"} {
		res, ran, err := a.section(sec, nil)
		if err != nil {
			failure = fmt.Sprintf("%s could not run: %v", sec, err)
			break
		}
		if res.Cancelled {
			return a.stopped()
		}
		if ran && !res.Succeeded() {
			failure = describe(sec, res, a.m.Timeout(sec))
			break
		}
	}
	if failure != "" {
		res, _, err := a.section("AfterBuildFailure", nil)
		if res.Cancelled {
			return a.stopped()
		}
		if err != nil || !res.Succeeded() {
			a.say("AfterBuildFailure did not succeed either (the build's error stays %q)", failure)
		}
		return failed("%s", failure)
	}
	if res, ran, err := a.section("AfterBuildSuccess", nil); err != nil || res.Cancelled || (ran && !res.Succeeded()) {
		if res.Cancelled {
			return a.stopped()
		}
		if err != nil {
			return failed("AfterBuildSuccess could not run: %v", err)
		}
		return failed("%s", describe("AfterBuildSuccess", res, a.m.Timeout("AfterBuildSuccess")))
	}

	version := ""
	var out bytes.Buffer
	res, ran, err := a.section("CustomVersionCmd", &out)
	switch {
	case res.Cancelled:
		return a.stopped()
	case err != nil:
		return failed("CustomVersionCmd could not run: %v", err)
	case ran && !res.Succeeded():
		return failed("%s", describe("CustomVersionCmd", res, a.m.Timeout("CustomVersionCmd")))
	case ran:
		version = lastLine(out.String())
		if version != "" && !versionRE.MatchString(version) {
			return failed("CustomVersionCmd printed %q, which cannot be a version: use letters, digits, '.', '_', '+' or '-' (at most 63)", version)
		}
		if version != "" {
			a.say("release version %s (from CustomVersionCmd)", version)
			a.info.Release = version
			if err := a.setEnv(); err != nil {
				return failed("%v", err)
			}
		}
	}
	out.Reset()
	notes := ""
	res, ran, err = a.section("ReleaseNotesCmd", &out)
	switch {
	case res.Cancelled:
		return a.stopped()
	case err != nil:
		return failed("ReleaseNotesCmd could not run: %v", err)
	case ran && !res.Succeeded():
		return failed("%s", describe("ReleaseNotesCmd", res, a.m.Timeout("ReleaseNotesCmd")))
	case ran:
		notes = strings.TrimSpace(out.String())
		if len(notes) > maxNotes {
			notes = notes[:maxNotes]
			a.say("release notes cut to %d bytes", maxNotes)
		}
	}

	// Every script has run. A cancel request still wins; a lost leadership does not stop the build here: its
	// result goes to the FSM, which refuses it if this term is over.
	if errors.Is(context.Cause(a.j.ctx), errCancelRequested) {
		return a.stopped()
	}
	rel, err := a.pack()
	if err != nil {
		a.say("packaging failed: %v", err)
		return failed("package the release: %v", err)
	}
	rel.Version, rel.Notes = version, notes
	return outcome{state: raftfsm.BuildSucceeded, release: rel}
}

// section runs one manifest section; ran is false when the manifest has none. A build whose context has ended
// runs nothing more: the result says Cancelled.
func (a *attempt) section(name string, capture io.Writer) (res Result, ran bool, err error) {
	lines := a.m.Script(name)
	if len(lines) == 0 {
		return Result{}, false, nil
	}
	if a.j.ctx.Err() != nil {
		return Result{Cancelled: true}, true, nil
	}
	timeout := a.m.Timeout(name)
	a.say("%s (time limit %s)", name, timeout)
	var out io.Writer = a.log
	if capture != nil {
		out = io.MultiWriter(a.log, capture)
	}
	res, err = RunScript(a.j.ctx, Script{Name: name, Lines: lines, Dir: a.src, Env: a.env, Timeout: timeout,
		Out: out, Secrets: a.secrets, KillGrace: a.r.s.opts.KillGrace})
	switch {
	case err != nil:
		a.say("%s could not start: %v", name, err)
	case res.TimedOut:
		a.say("%s timed out after %s: its process group was stopped", name, timeout)
	case res.Cancelled:
	case res.ExitCode != 0:
		a.say("%s failed with exit code %d after %s", name, res.ExitCode, res.Duration.Round(time.Millisecond))
	default:
		a.say("%s done in %s", name, res.Duration.Round(time.Millisecond))
	}
	return res, true, err
}

func describe(section string, res Result, timeout time.Duration) string {
	if res.TimedOut {
		return fmt.Sprintf("%s timed out after %s", section, timeout)
	}
	return fmt.Sprintf("%s failed with exit code %d", section, res.ExitCode)
}

// pack archives the files the manifest includes and stores the archive in the node's artifact store.
func (a *attempt) pack() (*raftfsm.Release, error) {
	s := a.r.s
	out := filepath.Join(filepath.Dir(a.src), "release.tar.gz")
	// The deploy sections travel with the release: every server reads the manifest from the archive, at the
	// path the app names, so it is packaged whether or not PkgInclude lists it.
	inc := append(slices.Clone(a.m.PkgInclude), manifest.Include{Glob: a.mfile})
	art, err := Package(a.src, inc, a.m.PkgExclude, out, s.opts.PieceSize)
	if err != nil {
		return nil, err
	}
	for _, g := range art.Unmatched {
		a.say("warning: PkgInclude %q matched no file", g)
	}
	f, err := os.Open(art.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	meta := art.Meta()
	if err := s.store.Put(meta, f); err != nil {
		return nil, fmt.Errorf("store the archive: %w", err)
	}
	a.say("release archive: %d bytes, sha256 %s, %d pieces of %d bytes", art.Size, art.Digest, len(art.Pieces), art.PieceSize)
	return &raftfsm.Release{Digest: meta.Digest, Size: meta.Size, PieceSize: meta.PieceSize, Pieces: meta.Pieces,
		Holders: []string{s.n.Name()}, CreatedAt: time.Now().UTC()}, nil
}

// publish records the outcome through Raft with the term the build started under, and tells the log what
// became of it. It returns the result shoal_builds_total counts.
func (r *runner) publish(a *attempt, o outcome) string {
	if o.state == "" {
		return resultInterrupted
	}
	me, term := r.s.n.Name(), a.b.Term
	cmd := &raftfsm.BuildFinish{ID: a.b.ID, Term: term, State: o.state, Error: o.err, Release: o.release, At: time.Now().UTC(),
		Message: a.info.CommitMessage}
	if r.remote {
		cmd.Node, cmd.Attempt = me, a.b.Attempt
	}
	// Not the leadership's context: a deposed leader still tries, and the FSM refuses it.
	ctx, cancel := context.WithTimeout(r.s.ctx, publishTimeout)
	defer cancel()
	backoff := 50 * time.Millisecond
	for {
		res, err := r.s.n.Apply(ctx, cmd)
		if err == nil {
			if cmd.State == raftfsm.BuildSucceeded {
				var rel raftfsm.Release
				_ = json.Unmarshal(res.Value, &rel)
				a.say("build succeeded: release %s (commit %s)", rel.Version, rel.Commit)
			} else {
				a.say("build %s: %s (recorded)", cmd.State, cmd.Error)
			}
			return cmd.State
		}
		if raftfsm.KindOf(err) != "" {
			cur, ok := r.current(ctx, a.b.ID)
			mine := ok && cur.Term == term && cur.Node == me && cur.Attempt == a.b.Attempt
			switch {
			case mine && cur.Finished():
				// An earlier try was applied though its answer was lost.
				a.say("build %s (recorded)", cur.State)
				return cur.State
			case mine && cur.State == raftfsm.BuildRunning && cmd.Release != nil:
				a.say("the release was refused: %v", err)
				cmd.State, cmd.Error, cmd.Release = raftfsm.BuildFailed, "release refused: "+err.Error(), nil
				continue
			default:
				a.say("this node's result (%s) was refused: %v", o.state, err)
				if r.remote {
					a.say("this build server no longer holds the lease on build %s (attempt %d): this attempt's result is discarded", a.b.ID, a.b.Attempt)
					r.log.Warn("build result refused: this build server lost its lease", "build", a.b.ID, "attempt", a.b.Attempt, "err", err)
					return resultFenced
				}
				a.say("leader term %d is over and a newer leader owns build %s: this attempt's result is discarded", term, a.b.ID)
				r.log.Warn("build result refused: this node no longer leads the term the build ran under",
					"build", a.b.ID, "term", term, "err", err)
				return resultFenced
			}
		}
		if ctx.Err() != nil {
			a.say("could not record the result (%v); the next leader runs this build again", err)
			r.log.Error("could not record a build result", "build", a.b.ID, "err", err)
			return resultUnrecorded
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		backoff = min(backoff*2, time.Second)
	}
}

// current reads a build's record after catching up with the leader, falling back to the local state.
func (r *runner) current(ctx context.Context, id string) (raftfsm.Build, bool) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = r.s.n.ConsistentRead(cctx)
	return r.s.build(id)
}

func sortedVars(in map[string]raftfsm.Var) []Var {
	out := make([]Var, 0, len(in))
	for k, v := range in {
		out = append(out, Var{Name: k, Value: v.Value, Secret: v.Secret})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// lastLine is the last non-blank line of s, trimmed: a version command may print progress before the version.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
