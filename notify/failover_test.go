package notify

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/raftfsm"
)

// The leader is killed between the events and their delivery: the receiver is down while the old leader tries,
// so every delivery is recorded as pending with a failed attempt; it comes back after the kill, and the new
// leader delivers each event exactly once, under the idempotency key the old leader used.
func TestLeaderKilledBeforeDelivery(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node mesh")
	}
	m := newMesh(t, 3, testOptions())
	m.app("web")
	var up atomic.Bool
	rc := newReceiver(t, func(*http.Request, int) int {
		if up.Load() {
			return http.StatusOK
		}
		return http.StatusBadGateway
	})
	m.subscribe(map[string]any{"app": "web", "url": rc.URL, "secret": "k"})
	var ids []string
	for i := range 3 {
		ids = append(ids, m.startBuild("web", "c0ffee"+string(rune('a'+i))))
	}
	m.finishBuild(ids[0], raftfsm.BuildSucceeded)
	const events = 4

	leader := m.Leader()
	// Build 0's "succeeded" waits behind its "started": three deliveries are tried, all four are pending.
	testutil.Until(t, 20*time.Second, "every delivery that may go tried and failed once", func() bool {
		tried, pending := 0, 0
		leader.FSM().Read(func(s *raftfsm.State) {
			if s.Notify == nil {
				return
			}
			for _, d := range s.Notify.Deliveries {
				if d.State == raftfsm.DeliveryPending {
					pending++
					if len(d.Attempts) > 0 {
						tried++
					}
				}
			}
		})
		return tried == 3 && pending == events
	})
	old := leader.Name()
	for i, n := range m.Nodes {
		if n == leader {
			m.kill(i)
		}
	}
	up.Store(true)
	testutil.Until(t, 30*time.Second, "every event delivered by the new leader", func() bool { return len(rc.ok()) >= events })

	seen := map[string]int{}
	for _, r := range rc.ok() {
		seen[r.Header.Get("X-Shoal-Delivery")]++
		if !Verify("k", r.Body, r.Header.Get("X-Shoal-Signature-256")) {
			t.Fatal("a redelivery is not signed")
		}
	}
	if len(seen) != events {
		t.Fatalf("want %d distinct deliveries, got %v", events, seen)
	}
	for key, n := range seen {
		if n != 1 {
			t.Fatalf("delivery %s succeeded %d times", key, n)
		}
	}
	// The log shows the old leader's failed tries and the new leader's success.
	newLeader := m.Leader().Name()
	testutil.Until(t, 10*time.Second, "the log to show every delivery delivered", func() bool {
		return len(m.deliveries("app=web&state=delivered")) == events
	})
	for _, d := range m.deliveries("app=web") {
		first, last := d.Attempts[0], d.Attempts[len(d.Attempts)-1]
		if d.Event.Name == raftfsm.EventBuildSucceeded {
			first.Node = old // it waited behind its build's "started": the old leader never tried it
		}
		if d.State != raftfsm.DeliveryDelivered || first.Node != old || last.Node != newLeader || last.Status != 200 {
			t.Fatalf("delivery %s: %s, attempts %+v (old leader %s, new %s)", d.ID, d.State, d.Attempts, old, newLeader)
		}
	}
}

// Events that happen while a leader is dying are not lost: the new leader derives them from the replicated
// state, from where the last one left off.
func TestEventsDuringLeaderChange(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node mesh")
	}
	m := newMesh(t, 3, testOptions())
	m.app("web")
	rc := newReceiver(t, nil)
	m.subscribe(map[string]any{"app": "web", "url": rc.URL, "events": []string{"build.started"}})
	m.startBuild("web", "a1")
	testutil.Until(t, 20*time.Second, "the first event delivered and recorded", func() bool {
		return len(rc.ok()) == 1 && len(m.deliveries("state=delivered")) == 1
	})
	// Stop the leader's notifier first: the next events are applied while no one derives them.
	var li int
	for i, n := range m.Nodes {
		if n != nil && n.IsLeader() {
			li = i
		}
	}
	m.services[li].Close()
	m.startBuild("web", "a2")
	m.startBuild("web", "a3")
	m.Kill(li)
	testutil.Until(t, 30*time.Second, "the events the old leader never derived", func() bool { return len(rc.ok()) >= 3 })
	seen := map[string]bool{}
	for _, r := range rc.ok() {
		seen[r.Header.Get("X-Shoal-Delivery")] = true
	}
	if len(seen) != 3 || len(rc.ok()) != 3 {
		t.Fatalf("want 3 distinct deliveries once each, got %d requests for %v", len(rc.ok()), seen)
	}
}
