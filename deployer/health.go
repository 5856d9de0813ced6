package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-ci/shoal/internal/proc"
)

// Health check defaults.
const (
	DefaultHealthInterval = 2 * time.Second
	DefaultHealthTimeout  = 5 * time.Second
	DefaultHealthDeadline = 5 * time.Minute
)

// HealthSpec describes a health check: an HTTP URL (healthy on a 2xx answer) or a command run with
// `bash -e -c` (healthy on exit 0). It must pass at every check for MinHealthy before the node counts as
// healthy, and Deadline bounds the whole wait.
type HealthSpec struct {
	URL     string
	Command string
	Dir     string   // working directory of Command
	Env     []string // environment of Command; nothing is inherited from the agent

	Interval   time.Duration // between checks; 0 means DefaultHealthInterval
	Timeout    time.Duration // per check; 0 means DefaultHealthTimeout
	MinHealthy time.Duration // continuous passing required; 0 means the first pass is enough
	Deadline   time.Duration // 0 means DefaultHealthDeadline
}

// HealthError is what WaitHealthy returns when the check did not pass: the last failure says why.
type HealthError struct {
	Check       string        // what was checked: the URL or the command
	Checks      int           // how many checks ran
	LastFailure string        // status code or exit code and the tail of the output
	PassingFor  time.Duration // how long it had been passing when time ran out (0 if failing)
	MinHealthy  time.Duration
	Deadline    time.Duration
	Err         error // context.DeadlineExceeded or context.Canceled when ctx ended the wait
}

func (e *HealthError) Error() string {
	var b strings.Builder
	if e.Err != nil {
		fmt.Fprintf(&b, "health check %s interrupted (%v) after %d checks", e.Check, e.Err, e.Checks)
	} else {
		fmt.Fprintf(&b, "health check %s did not pass within %s (%d checks)", e.Check, e.Deadline, e.Checks)
	}
	if e.PassingFor > 0 {
		fmt.Fprintf(&b, "; passing for %s of the required %s", e.PassingFor.Round(time.Millisecond), e.MinHealthy)
	}
	if e.LastFailure != "" {
		fmt.Fprintf(&b, "; last failure: %s", e.LastFailure)
	}
	return b.String()
}

func (e *HealthError) Unwrap() error { return e.Err }

// WaitHealthy runs the check every Interval until it has passed continuously for MinHealthy (nil), the
// Deadline passes or ctx ends (a *HealthError saying what failed last). A failure resets the clock.
func WaitHealthy(ctx context.Context, spec HealthSpec) error {
	if (spec.URL == "") == (spec.Command == "") {
		return errors.New("health check: set exactly one of URL and Command")
	}
	if spec.Interval <= 0 {
		spec.Interval = DefaultHealthInterval
	}
	if spec.Timeout <= 0 {
		spec.Timeout = DefaultHealthTimeout
	}
	if spec.Deadline <= 0 {
		spec.Deadline = DefaultHealthDeadline
	}
	herr := &HealthError{Check: spec.URL, MinHealthy: spec.MinHealthy, Deadline: spec.Deadline}
	check := func(ctx context.Context) string { return checkHTTP(ctx, spec.URL) }
	if spec.Command != "" {
		herr.Check = fmt.Sprintf("`%s`", spec.Command)
		check = func(ctx context.Context) string { return checkCommand(ctx, spec) }
	}

	deadline := time.NewTimer(spec.Deadline)
	defer deadline.Stop()
	var passingSince time.Time
	for {
		tctx, cancel := context.WithTimeout(ctx, spec.Timeout)
		failure := check(tctx)
		cancel()
		herr.Checks++
		now := time.Now()
		if failure == "" {
			if passingSince.IsZero() {
				passingSince = now
			}
			if now.Sub(passingSince) >= spec.MinHealthy {
				return nil
			}
		} else {
			passingSince = time.Time{}
			herr.LastFailure = failure
		}
		wait := time.NewTimer(spec.Interval)
		select {
		case <-ctx.Done():
			wait.Stop()
			herr.Err = ctx.Err()
		case <-deadline.C:
			wait.Stop()
		case <-wait.C:
			continue
		}
		if !passingSince.IsZero() {
			herr.PassingFor = time.Since(passingSince)
		}
		return herr
	}
}

// healthClient does not keep connections: each check must reach the service afresh, as a new client
// (or a load balancer) would.
var healthClient = &http.Client{
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse // a redirect is an answer; 3xx is not healthy
	},
}

func checkHTTP(ctx context.Context, url string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err.Error()
	}
	resp, err := healthClient.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	tail := newTailBuffer(512)
	_, _ = io.Copy(tail, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Sprintf("status %s: %s", resp.Status, tail.String())
	}
	return ""
}

func checkCommand(ctx context.Context, spec HealthSpec) string {
	// -e as in every hook: a multi-line check fails at its first failing line, not only its last.
	cmd := exec.CommandContext(ctx, "bash", "-e", "-c", spec.Command)
	cmd.Dir = spec.Dir
	cmd.Env = spec.Env
	if cmd.Env == nil {
		cmd.Env = []string{} // explicit: never the agent's environment
	}
	out := newTailBuffer(1024)
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so a timeout kills what the command started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	proc.StopOnCancel(cmd, time.Second) // SIGTERM to the group, SIGKILL after the grace
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	switch {
	case err == nil:
		return ""
	case ctx.Err() != nil:
		return fmt.Sprintf("timed out after %s: %s", spec.Timeout, out.String())
	default:
		return fmt.Sprintf("%v: %s", err, out.String())
	}
}

// tailBuffer keeps the last n bytes written to it: the end of a log is where the reason is.
type tailBuffer struct {
	n   int
	buf []byte
	cut bool
}

func newTailBuffer(n int) *tailBuffer { return &tailBuffer{n: n} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.n {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.n:]...)
		t.cut = true
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	s := strings.TrimSpace(string(t.buf))
	if t.cut {
		s = "…" + s
	}
	if s == "" {
		return "(no output)"
	}
	return s
}
