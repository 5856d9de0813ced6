package deployer

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fast gives checks short intervals; Deadline stays generous unless a test is about it.
func fast(spec HealthSpec) HealthSpec {
	spec.Interval = 5 * time.Millisecond
	spec.Timeout = 5 * time.Second
	if spec.Deadline == 0 {
		spec.Deadline = 20 * time.Second
	}
	return spec
}

func serve(t *testing.T, answer func(n int64) (int, string)) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, body := answer(n.Add(1))
		w.WriteHeader(code)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestHealthHTTPPasses(t *testing.T) {
	srv, n := serve(t, func(int64) (int, string) { return 204, "" })
	if err := WaitHealthy(context.Background(), fast(HealthSpec{URL: srv.URL})); err != nil {
		t.Fatal(err)
	}
	if n.Load() != 1 {
		t.Fatalf("%d checks; with no MinHealthy the first pass is enough", n.Load())
	}
}

func TestHealthHTTPFailureSaysWhy(t *testing.T) {
	srv, _ := serve(t, func(int64) (int, string) { return 503, "database unreachable" })
	err := WaitHealthy(context.Background(), fast(HealthSpec{URL: srv.URL, Deadline: 100 * time.Millisecond}))
	var he *HealthError
	if !errors.As(err, &he) {
		t.Fatalf("got %v, want a HealthError", err)
	}
	for _, want := range []string{"503", "database unreachable", srv.URL} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if he.Checks < 1 || he.Err != nil {
		t.Fatalf("checks %d, ctx err %v", he.Checks, he.Err)
	}
}

func TestHealthRedirectIsNotHealthy(t *testing.T) {
	srv, _ := serve(t, func(int64) (int, string) { return 302, "" })
	if err := WaitHealthy(context.Background(), fast(HealthSpec{URL: srv.URL, Deadline: 50 * time.Millisecond})); err == nil {
		t.Fatal("a 302 counted as healthy")
	}
}

func TestHealthFlappingNeverReachesMinHealthy(t *testing.T) {
	srv, _ := serve(t, func(n int64) (int, string) {
		if n%2 == 1 {
			return 200, "ok"
		}
		return 500, "flap"
	})
	// Every pass follows a failure, so the continuous-pass clock restarts at each pass and never
	// reaches MinHealthy, however slow or fast the machine is.
	err := WaitHealthy(context.Background(), fast(HealthSpec{URL: srv.URL, MinHealthy: 20 * time.Millisecond,
		Deadline: 300 * time.Millisecond}))
	if err == nil || !strings.Contains(err.Error(), "flap") {
		t.Fatalf("got %v, want a failure naming the last flap", err)
	}
}

func TestHealthFlappingResetsThenSettles(t *testing.T) {
	srv, n := serve(t, func(n int64) (int, string) {
		if n <= 4 && n%2 == 0 {
			return 500, "flap"
		}
		return 200, "ok"
	})
	if err := WaitHealthy(context.Background(), fast(HealthSpec{URL: srv.URL, MinHealthy: 20 * time.Millisecond})); err != nil {
		t.Fatal(err)
	}
	// The passes at checks 1 and 3 were cut short; the streak that counts starts at 5 and needs a
	// second passing check to show it lasted.
	if n.Load() < 6 {
		t.Fatalf("healthy after %d checks; the failures at 2 and 4 should have reset the clock", n.Load())
	}
}

func TestHealthPassingButNotLongEnough(t *testing.T) {
	srv, _ := serve(t, func(int64) (int, string) { return 200, "ok" })
	err := WaitHealthy(context.Background(), fast(HealthSpec{URL: srv.URL, MinHealthy: time.Hour,
		Deadline: 50 * time.Millisecond}))
	var he *HealthError
	if !errors.As(err, &he) || he.PassingFor == 0 || !strings.Contains(err.Error(), "passing for") {
		t.Fatalf("got %v, want a HealthError that says it was passing", err)
	}
}

func TestHealthCommand(t *testing.T) {
	dir := t.TempDir()
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin", "MARK=ready"}
	spec := fast(HealthSpec{Command: `test -f "$MARK"`, Dir: dir, Env: env, Deadline: 50 * time.Millisecond})
	if err := WaitHealthy(context.Background(), spec); err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("got %v, want exit status 1", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ready"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WaitHealthy(context.Background(), spec); err != nil {
		t.Fatal(err)
	}

	spec = fast(HealthSpec{Command: "echo starting; echo 'cannot bind :8080' >&2; exit 7", Env: env,
		Deadline: 50 * time.Millisecond})
	err := WaitHealthy(context.Background(), spec)
	if err == nil || !strings.Contains(err.Error(), "exit status 7") || !strings.Contains(err.Error(), "cannot bind :8080") {
		t.Fatalf("got %v, want the exit code and the output tail", err)
	}
}

func TestHealthCommandTimeoutKillsIt(t *testing.T) {
	spec := fast(HealthSpec{Command: "sleep 60 & wait", Env: []string{"PATH=/usr/bin:/bin"},
		Deadline: 50 * time.Millisecond})
	spec.Timeout = 50 * time.Millisecond
	err := WaitHealthy(context.Background(), spec)
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("got %v, want a timeout", err)
	}
}

func TestHealthContextCancel(t *testing.T) {
	srv, _ := serve(t, func(int64) (int, string) { return 500, "no" })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := WaitHealthy(ctx, fast(HealthSpec{URL: srv.URL}))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if err := WaitHealthy(context.Background(), HealthSpec{}); err == nil {
		t.Fatal("a spec with neither URL nor Command was accepted")
	}
}
