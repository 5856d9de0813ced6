package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/notify"
	"github.com/shoal-ci/shoal/raftfsm"
)

// TestNotifyLeaderKill9 runs real builds on a mesh of three node processes while the webhook receiver is down,
// so that every notification is recorded and still pending; then the leader is killed with SIGKILL and the
// receiver comes back. The new leader delivers every event exactly once, signed, under the idempotency key the
// old leader had used, and the delivery log on a survivor shows both leaders' attempts.
func TestNotifyLeaderKill9(t *testing.T) {
	needProcesses(t)
	var (
		up    atomic.Bool
		mu    sync.Mutex
		tried = map[string]int{}
		ok    = map[string]int{}
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		key := r.Header.Get("X-Shoal-Delivery")
		mu.Lock()
		defer mu.Unlock()
		tried[key]++
		if !up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if !notify.Verify("kill9", body, r.Header.Get("X-Shoal-Signature-256")) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		ok[key]++
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	counts := func(m map[string]int) (keys, total int) {
		mu.Lock()
		defer mu.Unlock()
		for _, n := range m {
			keys++
			total += n
		}
		return keys, total
	}

	repo := newTestRepo(t, t.TempDir(), "web.git")
	repo.commit("works", map[string]string{"shoal.yml": "build:\n  build: ['echo built']\npackage:\n  include: [shoal.yml]\n"})
	m := startPmesh(t, 3)
	leader := m.waitLeader(m.nodes...)
	cl := m.client(leader)
	bg := context.Background()
	if _, err := cl.Post(bg, "/v1/apps", map[string]any{"name": "web", "repo": repo.dir}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Post(bg, "/v1/subscriptions", map[string]any{"app": "web", "url": srv.URL, "secret": "kill9"}, nil); err != nil {
		t.Fatal(err)
	}
	const builds = 3
	var ids []string
	for range builds {
		var b raftfsm.Build
		if _, err := cl.Post(bg, "/v1/apps/web/builds", map[string]any{}, &b); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, b.ID)
	}
	m.eventually(60*time.Second, "the builds to succeed", func() (bool, string) {
		for _, id := range ids {
			var b raftfsm.Build
			if _, err := cl.Get(bg, "/v1/builds/"+id, &b); err != nil || b.State != raftfsm.BuildSucceeded {
				return false, fmt.Sprintf("%s: %s %v", id, b.State, err)
			}
		}
		return true, ""
	})
	// Each build's "succeeded" waits behind its "started", which the receiver refuses: three keys tried.
	m.eventually(30*time.Second, "the old leader to try every build's first event", func() (bool, string) {
		keys, _ := counts(tried)
		return keys == builds, fmt.Sprintf("%d keys tried", keys)
	})
	leader.proc.Kill()
	up.Store(true)
	var survivors []*pnode
	for _, n := range m.nodes {
		if n != leader {
			survivors = append(survivors, n)
		}
	}
	newLeader := m.waitLeader(survivors...)
	m.eventually(60*time.Second, "every event delivered by the new leader", func() (bool, string) {
		keys, _ := counts(ok)
		return keys == 2*builds, fmt.Sprintf("%d of %d delivered", keys, 2*builds)
	})
	if keys, total := counts(ok); keys != 2*builds || total != keys {
		t.Fatalf("%d deliveries accepted for %d keys: a notification was delivered twice or lost", total, keys)
	}
	var log []raftfsm.Delivery
	m.eventually(20*time.Second, "the log to record every delivery", func() (bool, string) {
		log = nil
		_, err := m.client(newLeader).Get(bg, "/v1/deliveries?app=web&state=delivered", &log)
		return err == nil && len(log) == 2*builds, fmt.Sprintf("%d delivered in the log (%v)", len(log), err)
	})
	for _, d := range log {
		last := d.Attempts[len(d.Attempts)-1]
		if last.Node != newLeader.name || last.Status != http.StatusOK {
			t.Fatalf("delivery %s: attempts %+v (old leader %s, new %s)", d.ID, d.Attempts, leader.name, newLeader.name)
		}
		if d.Event.Name == raftfsm.EventBuildStarted && d.Attempts[0].Node != leader.name {
			t.Fatalf("delivery %s: the old leader's attempts are not in the log: %+v", d.ID, d.Attempts)
		}
	}
}
