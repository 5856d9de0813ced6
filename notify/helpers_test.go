package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// mesh is an in-process cluster with the notifier attached to every node, as cmd/node attaches it.
type mesh struct {
	*meshtest.Cluster
	t        testing.TB
	services []*Service
}

// testOptions retry fast, so that a receiver that fails and recovers is seen within a test.
func testOptions() Options {
	return Options{RetryBase: 50 * time.Millisecond, RetryMax: time.Second, MaxAttempts: 6, Timeout: 5 * time.Second,
		DashboardURL: "http://dash.test/ui/"}
}

func newMesh(t testing.TB, size int, opts Options) *mesh {
	t.Helper()
	c := meshtest.New(t, size, nil)
	m := &mesh{Cluster: c, t: t}
	for _, n := range c.Nodes {
		s, err := Attach(n, c.API(n), opts)
		if err != nil {
			t.Fatal(err)
		}
		m.services = append(m.services, s)
		t.Cleanup(s.Close)
	}
	return m
}

// kill stops node i (its notifier first, as the binary's shutdown order does).
func (m *mesh) kill(i int) {
	m.services[i].Close()
	m.Kill(i)
}

// any is a live node.
func (m *mesh) live() *node.Node {
	for _, n := range m.Nodes {
		if n != nil {
			return n
		}
	}
	m.t.Fatal("no live node")
	return nil
}

func (m *mesh) apply(c raftfsm.Command) *node.Applied {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	res, err := m.live().Apply(ctx, c)
	if err != nil {
		m.t.Fatalf("%T: %v", c, err)
	}
	return res
}

func (m *mesh) app(name string) {
	m.t.Helper()
	m.apply(&raftfsm.AppPut{App: raftfsm.App{Name: name, Repo: "/srv/git/" + name + ".git"}, Create: true})
}

func (m *mesh) term() uint64 {
	var term uint64
	m.Leader().FSM().Read(func(s *raftfsm.State) { term = s.Term })
	return term
}

// startBuild queues a build and starts it as the leader's builder would: a build.started event.
func (m *mesh) startBuild(app, commit string) string {
	m.t.Helper()
	res := m.apply(&raftfsm.BuildQueue{App: app, Commit: commit, Branch: "main", Ref: "refs/heads/main", Trigger: "manual", At: time.Now().UTC()})
	var b raftfsm.Build
	if err := json.Unmarshal(res.Value, &b); err != nil {
		m.t.Fatal(err)
	}
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		_, err := m.live().Apply(ctx, &raftfsm.BuildStart{ID: b.ID, Term: m.term(), Node: "builder", At: time.Now().UTC()})
		cancel()
		if err == nil {
			return b.ID
		}
		if raftfsm.KindOf(err) != raftfsm.KindConflict {
			m.t.Fatalf("start build %s: %v", b.ID, err)
		}
		// A new leader's epoch came in between: start it under the new term.
	}
	m.t.Fatalf("build %s never started", b.ID)
	return ""
}

func (m *mesh) finishBuild(id, state string) {
	m.t.Helper()
	var term uint64
	m.Leader().FSM().Read(func(s *raftfsm.State) { term = s.Builds[id].Term })
	f := &raftfsm.BuildFinish{ID: id, Term: term, State: state, At: time.Now().UTC()}
	if state == raftfsm.BuildSucceeded {
		f.Release = &raftfsm.Release{Digest: "sha256:00", Size: 0, PieceSize: 1 << 20, CreatedAt: time.Now().UTC()}
	}
	if state == raftfsm.BuildFailed {
		f.Error = "make: *** [test] Error 1"
	}
	m.apply(f)
}

// api calls the HTTP API of a live node with the admin token.
func (m *mesh) api(method, path string, in any) (int, []byte) {
	m.t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+m.live().HTTPAddr()+path, body)
	req.Header.Set("Authorization", "Bearer "+m.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		m.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func (m *mesh) subscribe(in map[string]any) SubscriptionView {
	m.t.Helper()
	status, body := m.api("POST", "/v1/subscriptions", in)
	if status != http.StatusCreated {
		m.t.Fatalf("subscribe: %d %s", status, body)
	}
	var v SubscriptionView
	if err := json.Unmarshal(body, &v); err != nil {
		m.t.Fatal(err)
	}
	return v
}

func (m *mesh) deliveries(query string) []raftfsm.Delivery {
	m.t.Helper()
	status, body := m.api("GET", "/v1/deliveries?limit=1000&"+query, nil)
	if status != http.StatusOK {
		m.t.Fatalf("deliveries: %d %s", status, body)
	}
	var out []raftfsm.Delivery
	if err := json.Unmarshal(body, &out); err != nil {
		m.t.Fatal(err)
	}
	return out
}

// received is one request a receiver got, and what it answered.
type received struct {
	Method, Path string
	Header       http.Header
	Body         []byte
	Status       int
	At           time.Time
}

// receiver is a real HTTP server on loopback. answer decides the status of each request (200 when nil), given
// how many requests with the same X-Shoal-Delivery it has seen before.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	got    []received
	seen   map[string]int
	answer func(r *http.Request, before int) int
}

func newReceiver(t testing.TB, answer func(r *http.Request, before int) int) *receiver {
	rc := &receiver{seen: map[string]int{}, answer: answer}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		key := r.Header.Get("X-Shoal-Delivery")
		if key == "" {
			key = r.URL.Path + string(body)
		}
		before := rc.seen[key]
		rc.seen[key]++
		answer := rc.answer
		rc.mu.Unlock()
		status := http.StatusOK
		if answer != nil {
			status = answer(r, before)
		}
		rc.mu.Lock()
		rc.got = append(rc.got, received{Method: r.Method, Path: r.URL.EscapedPath(), Header: r.Header.Clone(), Body: body, Status: status, At: time.Now()})
		rc.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.Close)
	return rc
}

// requests returns a copy of what the receiver got so far.
func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

// ok returns the requests the receiver answered with a 2xx.
func (rc *receiver) ok() []received {
	var out []received
	for _, r := range rc.requests() {
		if r.Status/100 == 2 {
			out = append(out, r)
		}
	}
	return out
}
