package raftfsm

import (
	"bytes"
	"io"
	"testing"
	"time"
)

func notifyFixture(t *testing.T) *applier {
	a := newApplier(t)
	a.ok(&AppPut{App: App{Name: "web"}, Create: true})
	a.ok(&AppPut{App: App{Name: "api"}, Create: true})
	a.ok(&EnvPut{Env: Env{Name: "prod", App: "web"}, Create: true})
	return a
}

// Subscriptions and forges are checked when written, and a rejected one changes nothing.
func TestNotifyRejections(t *testing.T) {
	a := notifyFixture(t)
	sub := func(mut func(*Subscription)) *NotifySubscription {
		s := Subscription{ID: "s1", App: "web", URL: "https://example.com/hook"}
		mut(&s)
		return &NotifySubscription{Sub: s, Create: true}
	}
	a.rejected(sub(func(s *Subscription) { s.ID = "" }), KindBadRequest)
	a.rejected(sub(func(s *Subscription) { s.App = "nope" }), KindNotFound)
	a.rejected(sub(func(s *Subscription) { s.Env = "nope" }), KindNotFound)
	a.rejected(sub(func(s *Subscription) { s.App, s.Env = "api", "prod" }), KindBadRequest)
	a.rejected(sub(func(s *Subscription) { s.Kind = "pager" }), KindBadRequest)
	a.rejected(sub(func(s *Subscription) { s.URL = "mailto:ops@example.com" }), KindBadRequest)
	a.rejected(sub(func(s *Subscription) { s.Events = []string{"build.started", "build.exploded"} }), KindBadRequest)
	a.rejected(&NotifySubscription{Sub: Subscription{ID: "s1", App: "web", URL: "https://x"}}, KindNotFound)
	a.rejected(&NotifySubscription{Sub: Subscription{ID: "s1"}, Delete: true}, KindNotFound)
	a.ok(sub(func(s *Subscription) { s.Secret = "k" }))
	a.rejected(sub(func(*Subscription) {}), KindConflict)
	a.rejected(&NotifySubscription{Sub: Subscription{ID: "s1", App: "api", URL: "https://x"}}, KindBadRequest)
	// A replace without a secret keeps it.
	a.ok(&NotifySubscription{Sub: Subscription{ID: "s1", App: "web", URL: "https://example.com/v2"}})
	a.f.Read(func(s *State) {
		if s.Notify.Subs["s1"].Secret != "k" || s.Notify.Subs["s1"].Kind != NotifyKindWebhook {
			t.Fatalf("replace: %+v", s.Notify.Subs["s1"])
		}
	})

	forge := func(mut func(*Forge)) *NotifyForge {
		f := Forge{App: "web", Kind: "github", URL: "https://api.github.com", Repo: "acme/web", Token: "t"}
		mut(&f)
		return &NotifyForge{Forge: f}
	}
	a.rejected(forge(func(f *Forge) { f.App = "nope" }), KindNotFound)
	a.rejected(forge(func(f *Forge) { f.Kind = "bitbucket" }), KindBadRequest)
	a.rejected(forge(func(f *Forge) { f.URL = "api.github.com" }), KindBadRequest)
	a.rejected(forge(func(f *Forge) { f.Repo = "web" }), KindBadRequest)
	a.rejected(forge(func(f *Forge) { f.Token = "" }), KindBadRequest)
	a.rejected(forge(func(f *Forge) { f.DashboardURL = "ci" }), KindBadRequest)
	a.ok(forge(func(f *Forge) { f.Kind, f.Repo = "gitlab", "group/sub/web" }))
	a.ok(forge(func(f *Forge) { f.Token = "" })) // keeps the token
	a.f.Read(func(s *State) {
		if f := s.Notify.Forges["web"]; f.Token != "t" || f.Context != "shoal" || f.Kind != "github" {
			t.Fatalf("forge: %+v", f)
		}
	})
	a.rejected(&NotifyEvents{Events: []Event{{Key: "k", Name: "build.exploded"}}}, KindBadRequest)
	a.rejected(&NotifyAttempt{ID: "nope", Attempt: Attempt{N: 1}}, KindNotFound)
}

// An event is recorded once however often it is proposed, goes to the targets that match it, and its attempts
// are recorded in turn: a repeated or skipped attempt number is refused.
func TestNotifyEventsAndAttempts(t *testing.T) {
	a := notifyFixture(t)
	a.ok(&NotifySubscription{Sub: Subscription{ID: "all", App: "web", URL: "https://x"}, Create: true})
	a.ok(&NotifySubscription{Sub: Subscription{ID: "prod", App: "web", Env: "prod", URL: "https://x"}, Create: true})
	a.ok(&NotifySubscription{Sub: Subscription{ID: "fails", App: "web", URL: "https://x", Events: []string{EventBuildFailed}}, Create: true})
	a.ok(&NotifySubscription{Sub: Subscription{ID: "api", App: "api", URL: "https://x"}, Create: true})
	a.ok(&NotifyForge{Forge: Forge{App: "web", Kind: "gitea", URL: "https://git.example.com", Repo: "acme/web", Token: "t"}})
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	build := Event{Key: "build:web-1:started:1", Name: EventBuildStarted, App: "web", Index: a.index + 1, Build: &EventBuild{ID: "web-1", Commit: "abc"}}
	deploy := Event{Key: "deploy:d1:started", Name: EventDeployStarted, App: "web", Env: "prod", Index: a.index + 1, Deployment: &EventDeployment{ID: "d1"}}
	r := a.ok(&NotifyEvents{Scanned: 9, Events: []Event{build, deploy}, At: at})
	got := *as[[]string](t, r)
	want := []string{"build:web-1:started:1:all", "build:web-1:started:1:forge", "deploy:d1:started:all", "deploy:d1:started:prod"}
	if len(got) != len(want) {
		t.Fatalf("deliveries %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("deliveries %v, want %v", got, want)
		}
	}
	// Proposed again (a second leader derived it too): nothing new.
	if r := a.ok(&NotifyEvents{Scanned: 10, Events: []Event{build}, At: at}); len(*as[[]string](t, r)) != 0 {
		t.Fatal("an event was recorded twice")
	}
	a.f.Read(func(s *State) {
		if s.Notify.Scanned != 10 || s.Notify.Deliveries["build:web-1:started:1:forge"].Kind != "forge:gitea" {
			t.Fatalf("scanned %d, forge delivery %+v", s.Notify.Scanned, s.Notify.Deliveries["build:web-1:started:1:forge"])
		}
	})
	id := "build:web-1:started:1:all"
	a.rejected(&NotifyAttempt{ID: id, Attempt: Attempt{N: 2}}, KindConflict)
	a.ok(&NotifyAttempt{ID: id, Attempt: Attempt{N: 1, Status: 503}, NextAt: at.Add(time.Second)})
	a.rejected(&NotifyAttempt{ID: id, Attempt: Attempt{N: 1, Status: 200}, Done: true}, KindConflict)
	a.ok(&NotifyAttempt{ID: id, Attempt: Attempt{N: 2, Status: 200}, Done: true})
	a.rejected(&NotifyAttempt{ID: id, Attempt: Attempt{N: 3, Status: 200}, Done: true}, KindConflict)
	a.ok(&NotifyAttempt{ID: "deploy:d1:started:all", Attempt: Attempt{N: 1, Error: "refused"}, GiveUp: true})
	// Deleting a subscription cancels its pending deliveries; a subscription made after an event never gets it.
	a.ok(&NotifySubscription{Sub: Subscription{ID: "prod"}, Delete: true})
	happened := a.index
	a.ok(&NotifySubscription{Sub: Subscription{ID: "late", App: "web", URL: "https://x"}, Create: true})
	old := Event{Key: "build:web-1:succeeded", Name: EventBuildSucceeded, App: "web", Index: happened, Build: &EventBuild{ID: "web-1"}}
	a.ok(&NotifyEvents{Events: []Event{old}, At: at})
	a.f.Read(func(s *State) {
		d := s.Notify.Deliveries
		if d[id].State != DeliveryDelivered || len(d[id].Attempts) != 2 || d["deploy:d1:started:all"].State != DeliveryFailed ||
			d["deploy:d1:started:prod"].State != DeliveryCancelled || d["build:web-1:succeeded:late"] != nil || d["build:web-1:succeeded:all"] == nil {
			t.Fatalf("deliveries: %+v", d)
		}
	})

	// Replayed, or restored from a snapshot and replayed, the log gives the same state.
	want2, _ := a.f.MarshalState()
	snap, _ := a.f.Snapshot()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	replay := New()
	for _, l := range a.log {
		replay.Apply(l)
	}
	if got, _ := replay.MarshalState(); !bytes.Equal(got, want2) {
		t.Fatal("replay differs")
	}
	restored := New()
	if err := restored.Restore(io.NopCloser(&sink.buf)); err != nil {
		t.Fatal(err)
	}
	if got, _ := restored.MarshalState(); !bytes.Equal(got, want2) {
		t.Fatal("snapshot round trip differs")
	}
}

// The delivery log keeps the newest finished deliveries and every pending one.
func TestNotifyPrune(t *testing.T) {
	a := notifyFixture(t)
	a.ok(&NotifySubscription{Sub: Subscription{ID: "s", App: "web", URL: "https://x"}, Create: true})
	total := maxFinishedDeliveries + deliveryPruneSlack + 50
	var evs []Event
	for i := range total {
		evs = append(evs, Event{Key: "build:web-" + itoa(i) + ":cancelled", Name: EventBuildCancelled, App: "web", Index: a.index + 1})
		if len(evs) == 500 || i == total-1 {
			a.ok(&NotifyEvents{Events: evs})
			evs = nil
		}
	}
	for i := range total - 1 {
		a.ok(&NotifyAttempt{ID: "build:web-" + itoa(i) + ":cancelled:s", Attempt: Attempt{N: 1, Status: 200}, Done: true})
	}
	a.ok(&NotifyEvents{Events: []Event{{Key: "one:more", Name: EventBuildCancelled, App: "web", Index: a.index + 1}}})
	a.f.Read(func(s *State) {
		d := s.Notify.Deliveries
		if len(d) != maxFinishedDeliveries+2 || d["build:web-"+itoa(total-1)+":cancelled:s"] == nil || d["build:web-0:cancelled:s"] != nil {
			t.Fatalf("after pruning: %d deliveries", len(d))
		}
	})
}

func itoa(i int) string {
	return string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676))
}
