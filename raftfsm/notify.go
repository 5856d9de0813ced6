package raftfsm

import (
	"cmp"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Notification commands (notify package): subscriptions, forge settings, the events the leader derived from
// build and deployment changes, and each delivery attempt. They live in this file, and register themselves in the
// command table below, so that the notification model reads in one place.
const (
	CmdNotifySubscription CommandType = 44
	CmdNotifyForge        CommandType = 45
	CmdNotifyEvents       CommandType = 46
	CmdNotifyAttempt      CommandType = 47
)

// Event names a subscription can ask for.
const (
	EventBuildStarted        = "build.started"
	EventBuildSucceeded      = "build.succeeded"
	EventBuildFailed         = "build.failed"
	EventBuildCancelled      = "build.cancelled"
	EventDeployStarted       = "deployment.started"
	EventDeploySucceeded     = "deployment.succeeded"
	EventDeployFailed        = "deployment.failed"
	EventDeployRolledBack    = "deployment.rolled_back"
	EventApprovalWaiting     = "approval.waiting"
	NotifyKindWebhook        = "webhook"
	NotifyKindSlack          = "slack"
	DeliveryPending          = "pending"
	DeliveryDelivered        = "delivered"
	DeliveryFailed           = "failed"
	DeliveryCancelled        = "cancelled"
	ForgeTarget              = "forge"
	maxNotifyAttempts        = 32
	minSeenLimit             = 1024
	maxFinishedDeliveries    = 2000
	deliveryPruneSlack       = 200
	maxSubscriptionsPerApp   = 64
	maxEventsPerNotifyRecord = 1024
)

// EventNames lists every event name, in the order the docs give them.
var EventNames = []string{EventBuildStarted, EventBuildSucceeded, EventBuildFailed, EventBuildCancelled,
	EventDeployStarted, EventDeploySucceeded, EventDeployFailed, EventDeployRolledBack, EventApprovalWaiting}

// Forge kinds.
var ForgeKinds = []string{"github", "gitea", "gitlab"}

// Subscription sends an app's events (all of them, or Events) to a webhook or a Slack incoming webhook. With Env
// set it gets only that environment's deployment events. Secret signs webhook bodies; it is never shown back.
type Subscription struct {
	ID        string    `json:"id"`
	App       string    `json:"app"`
	Env       string    `json:"env,omitempty"`
	Kind      string    `json:"kind"`
	URL       string    `json:"url"`
	Secret    string    `json:"secret,omitempty"`
	Events    []string  `json:"events,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	Meta
}

// Forge is where an app's builds report their commit status. Token is the forge's API token; never shown back.
type Forge struct {
	App  string `json:"app"`
	Kind string `json:"kind"`
	// URL is the forge's base URL (https://api.github.com, https://gitea.example.com, https://gitlab.com).
	URL string `json:"url"`
	// Repo is owner/name on GitHub and Gitea, the project id or path (group/project) on GitLab.
	Repo  string `json:"repo"`
	Token string `json:"token,omitempty"`
	// Context names the status on the commit (GitLab's "name"); DashboardURL is the dashboard's base the
	// status links to (default: the leader's own /ui/).
	Context      string `json:"context"`
	DashboardURL string `json:"dashboard_url,omitempty"`
	Meta
}

// Event is one thing that happened to a build or a deployment, as the leader derived it from the state. Key is
// unique for what happened (build:web-3:started:1), so deriving it twice records it once.
type Event struct {
	Key        string           `json:"key"`
	Name       string           `json:"event"`
	App        string           `json:"app"`
	Env        string           `json:"env,omitempty"`
	Index      uint64           `json:"index"`
	At         time.Time        `json:"at"`
	URL        string           `json:"url,omitempty"`
	Build      *EventBuild      `json:"build,omitempty"`
	Deployment *EventDeployment `json:"deployment,omitempty"`
}

// EventBuild is the build an event is about.
type EventBuild struct {
	ID      string `json:"id"`
	Number  uint64 `json:"number"`
	Commit  string `json:"commit"`
	Ref     string `json:"ref,omitempty"`
	Branch  string `json:"branch,omitempty"`
	Message string `json:"message,omitempty"`
	Trigger string `json:"trigger"`
	State   string `json:"state"`
	Attempt int    `json:"attempt"`
	Error   string `json:"error,omitempty"`
	Release string `json:"release,omitempty"`
	// PullRequest is the pull/merge request a build of trigger pull_request is for.
	PullRequest int `json:"pull_request,omitempty"`
}

// EventDeployment is the deployment an event is about.
type EventDeployment struct {
	ID         string `json:"id"`
	Kind       string `json:"kind"`
	Env        string `json:"env"`
	Release    string `json:"release,omitempty"`
	Previous   string `json:"previous,omitempty"`
	State      string `json:"state"`
	Error      string `json:"error,omitempty"`
	By         string `json:"by,omitempty"`
	ApprovedBy string `json:"approved_by,omitempty"`
}

// Delivery is one event on its way to one target (a subscription, or the app's forge). Its ID is the idempotency
// key the receiver sees; Attempts is the delivery log.
type Delivery struct {
	ID string `json:"id"`
	// Seq orders deliveries as their events happened; a target gets a record's events in this order.
	Seq      uint64    `json:"seq"`
	Target   string    `json:"target"`
	Kind     string    `json:"kind"`
	App      string    `json:"app"`
	Event    Event     `json:"event"`
	State    string    `json:"state"`
	Attempts []Attempt `json:"attempts"`
	NextAt   time.Time `json:"next_at,omitzero"`
	Meta
}

// Attempt is one try at a delivery: the HTTP status the receiver answered (0 when none) or the error.
type Attempt struct {
	N      int       `json:"n"`
	At     time.Time `json:"at"`
	Node   string    `json:"node"`
	Status int       `json:"status,omitempty"`
	Error  string    `json:"error,omitempty"`
	Millis int64     `json:"ms"`
}

// NotifyState is the notification part of the replicated state.
type NotifyState struct {
	Subs       map[string]*Subscription `json:"subscriptions"`
	Forges     map[string]*Forge        `json:"forges"`
	Deliveries map[string]*Delivery     `json:"deliveries"`
	// Seen holds the keys of the recorded events of each build and deployment (by EventRecord of the key), so
	// an event is recorded once however often it is derived. Entries of records no longer in the state are
	// dropped when Seen grows past SeenLimit.
	Seen      map[string][]string `json:"seen"`
	SeenLimit int                 `json:"seen_limit"`
	// Scanned is the state index through which the leader has derived events.
	Scanned uint64 `json:"scanned"`
	// Seq is the Seq of the last delivery created.
	Seq uint64 `json:"seq"`
}

// NotifySubscription creates, replaces (same ID) or deletes a subscription. An empty Secret on replace keeps
// the stored one.
type NotifySubscription struct {
	Sub    Subscription `json:"Sub"`
	Create bool         `json:"Create"`
	Delete bool         `json:"Delete"`
}

// NotifyForge sets or deletes an app's forge. An empty Token on replace keeps the stored one.
type NotifyForge struct {
	Forge  Forge `json:"Forge"`
	Delete bool  `json:"Delete"`
}

// NotifyEvents records events the leader derived, and queues a delivery of each to every target it matches.
type NotifyEvents struct {
	Scanned uint64    `json:"Scanned"`
	Events  []Event   `json:"Events"`
	At      time.Time `json:"At"`
}

// NotifyAttempt records one delivery attempt. Attempt.N must follow the recorded attempts, so two leaders cannot
// both record the same try. Done marks the delivery delivered; GiveUp failed; otherwise NextAt schedules a retry.
type NotifyAttempt struct {
	ID      string    `json:"ID"`
	Attempt Attempt   `json:"Attempt"`
	Done    bool      `json:"Done"`
	GiveUp  bool      `json:"GiveUp"`
	NextAt  time.Time `json:"NextAt"`
}

func (*NotifySubscription) Type() CommandType { return CmdNotifySubscription }
func (*NotifyForge) Type() CommandType        { return CmdNotifyForge }
func (*NotifyEvents) Type() CommandType       { return CmdNotifyEvents }
func (*NotifyAttempt) Type() CommandType      { return CmdNotifyAttempt }

func (s *State) notify() *NotifyState {
	if s.Notify == nil {
		s.Notify = &NotifyState{}
	}
	n := s.Notify
	if n.Subs == nil {
		n.Subs = map[string]*Subscription{}
	}
	if n.Forges == nil {
		n.Forges = map[string]*Forge{}
	}
	if n.Deliveries == nil {
		n.Deliveries = map[string]*Delivery{}
	}
	if n.Seen == nil {
		n.Seen = map[string][]string{}
	}
	return n
}

// EventRecord is the record part of an event key: "build:web-3" of "build:web-3:started:1".
func EventRecord(key string) string {
	kind, rest, _ := strings.Cut(key, ":")
	id, _, _ := strings.Cut(rest, ":")
	return kind + ":" + id
}

// recordExists reports whether the build or deployment an event record names is still in the state.
func (s *State) recordExists(record string) bool {
	kind, id, _ := strings.Cut(record, ":")
	switch kind {
	case "build":
		return s.Builds[id] != nil
	case "deploy":
		return s.Deploys[id] != nil
	}
	return false
}

func checkHTTPURL(what, raw string) *Error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return badRequest("%s %q is not an http:// or https:// URL", what, raw)
	}
	return nil
}

func applyNotifySubscription(s *State, index uint64, c *NotifySubscription) (any, *Error) {
	sub := c.Sub
	if sub.ID == "" {
		return nil, badRequest("a subscription needs an id")
	}
	var old *Subscription
	if s.Notify != nil {
		old = s.Notify.Subs[sub.ID]
	}
	if c.Delete {
		if old == nil {
			return nil, notFound("subscription %q does not exist", sub.ID)
		}
		n := s.notify()
		delete(n.Subs, sub.ID)
		for _, d := range n.Deliveries {
			if d.Target == sub.ID && d.State == DeliveryPending {
				d.State, d.NextAt, d.ModifyIndex = DeliveryCancelled, time.Time{}, index
			}
		}
		return nil, nil
	}
	switch {
	case c.Create && old != nil:
		return nil, conflict("subscription %q already exists", sub.ID)
	case !c.Create && old == nil:
		return nil, notFound("subscription %q does not exist", sub.ID)
	case old != nil && old.App != sub.App:
		return nil, badRequest("subscription %q belongs to app %q and cannot move to %q", sub.ID, old.App, sub.App)
	}
	if _, ok := s.Apps[sub.App]; !ok {
		return nil, notFound("app %q does not exist: create it first", sub.App)
	}
	if sub.Env != "" {
		e, ok := s.Envs[sub.Env]
		if !ok {
			return nil, notFound("environment %q does not exist", sub.Env)
		}
		if e.App != sub.App {
			return nil, badRequest("environment %q belongs to app %q, not %q", sub.Env, e.App, sub.App)
		}
	}
	switch sub.Kind {
	case "":
		sub.Kind = NotifyKindWebhook
	case NotifyKindWebhook, NotifyKindSlack:
	default:
		return nil, badRequest("subscription kind %q is not one of webhook, slack", sub.Kind)
	}
	if err := checkHTTPURL("subscription URL", sub.URL); err != nil {
		return nil, err
	}
	for _, e := range sub.Events {
		if !slices.Contains(EventNames, e) {
			return nil, badRequest("event %q is not one of %s", e, strings.Join(EventNames, ", "))
		}
	}
	sub.Events = slices.Clone(sub.Events)
	slices.Sort(sub.Events)
	sub.Events = slices.Compact(sub.Events)
	n := s.notify()
	if old != nil {
		if sub.Secret == "" {
			sub.Secret = old.Secret
		}
		sub.CreatedAt, sub.CreateIndex = old.CreatedAt, old.CreateIndex
	} else {
		count := 0
		for _, o := range n.Subs {
			if o.App == sub.App {
				count++
			}
		}
		if count >= maxSubscriptionsPerApp {
			return nil, conflict("app %q already has %d subscriptions, the most it may have: delete one first", sub.App, count)
		}
		sub.CreateIndex = index
	}
	sub.ModifyIndex = index
	n.Subs[sub.ID] = &sub
	return &sub, nil
}

func applyNotifyForge(s *State, index uint64, c *NotifyForge) (any, *Error) {
	f := c.Forge
	var old *Forge
	if s.Notify != nil {
		old = s.Notify.Forges[f.App]
	}
	if c.Delete {
		if old == nil {
			return nil, notFound("app %q has no forge set", f.App)
		}
		n := s.notify()
		delete(n.Forges, f.App)
		for _, d := range n.Deliveries {
			if d.App == f.App && d.Target == ForgeTarget && d.State == DeliveryPending {
				d.State, d.NextAt, d.ModifyIndex = DeliveryCancelled, time.Time{}, index
			}
		}
		return nil, nil
	}
	if _, ok := s.Apps[f.App]; !ok {
		return nil, notFound("app %q does not exist", f.App)
	}
	if !slices.Contains(ForgeKinds, f.Kind) {
		return nil, badRequest("forge kind %q is not one of %s", f.Kind, strings.Join(ForgeKinds, ", "))
	}
	if err := checkHTTPURL("forge URL", f.URL); err != nil {
		return nil, err
	}
	if f.DashboardURL != "" {
		if err := checkHTTPURL("dashboard URL", f.DashboardURL); err != nil {
			return nil, err
		}
	}
	owner, name, ok := strings.Cut(f.Repo, "/")
	switch {
	case f.Repo == "":
		return nil, badRequest("a forge needs the repository: owner/name (GitHub, Gitea) or the project id or path (GitLab)")
	case f.Kind != "gitlab" && (!ok || owner == "" || name == "" || strings.Contains(name, "/")):
		return nil, badRequest("repository %q is not owner/name", f.Repo)
	}
	if f.Context == "" {
		f.Context = "shoal"
	}
	if f.Token == "" && old != nil {
		f.Token = old.Token
	}
	if f.Token == "" {
		return nil, badRequest("a forge needs an API token that may set commit statuses")
	}
	f.Meta = Meta{CreateIndex: index, ModifyIndex: index}
	if old != nil {
		f.CreateIndex = old.CreateIndex
	}
	s.notify().Forges[f.App] = &f
	return &f, nil
}

// NotifyTargets lists the ids of the targets an event goes to: the subscriptions that match it (same app, the
// same environment when the subscription names one, one of its events when it lists some, created before the
// event happened) and "forge" for a build event of an app with a forge.
func (s *State) NotifyTargets(ev *Event) []string {
	if s.Notify == nil {
		return nil
	}
	a := s.Apps[ev.App]
	if a == nil {
		return nil
	}
	var out []string
	for id, sub := range s.Notify.Subs {
		if sub.App == ev.App && (sub.Env == "" || sub.Env == ev.Env) &&
			(len(sub.Events) == 0 || slices.Contains(sub.Events, ev.Name)) &&
			sub.CreateIndex < ev.Index && sub.CreateIndex > a.CreateIndex {
			out = append(out, id)
		}
	}
	if f := s.Notify.Forges[ev.App]; f != nil && ev.Build != nil && f.CreateIndex < ev.Index && f.CreateIndex > a.CreateIndex {
		out = append(out, ForgeTarget)
	}
	slices.Sort(out)
	return out
}

// EventRecorded reports whether an event of that key has been recorded.
func (s *State) EventRecorded(key string) bool {
	return s.Notify != nil && slices.Contains(s.Notify.Seen[EventRecord(key)], key)
}

func applyNotifyEvents(s *State, index uint64, c *NotifyEvents) (any, *Error) {
	if len(c.Events) > maxEventsPerNotifyRecord {
		return nil, badRequest("at most %d events per record", maxEventsPerNotifyRecord)
	}
	for i := range c.Events {
		ev := &c.Events[i]
		if ev.Key == "" || !slices.Contains(EventNames, ev.Name) {
			return nil, badRequest("event %q (%q) needs a key and a known name", ev.Key, ev.Name)
		}
	}
	n := s.notify()
	var created []string
	for _, ev := range c.Events {
		if s.EventRecorded(ev.Key) {
			continue
		}
		rec := EventRecord(ev.Key)
		n.Seen[rec] = append(n.Seen[rec], ev.Key)
		for _, target := range s.NotifyTargets(&ev) {
			var kind string
			if target == ForgeTarget {
				kind = "forge:" + n.Forges[ev.App].Kind
			} else {
				kind = n.Subs[target].Kind
			}
			n.Seq++
			d := &Delivery{ID: ev.Key + ":" + target, Seq: n.Seq, Target: target, Kind: kind, App: ev.App, Event: ev,
				State: DeliveryPending, Attempts: []Attempt{}, NextAt: c.At, Meta: Meta{CreateIndex: index, ModifyIndex: index}}
			n.Deliveries[d.ID] = d
			created = append(created, d.ID)
		}
	}
	if len(n.Seen) > max(n.SeenLimit, minSeenLimit) {
		for rec := range n.Seen {
			if !s.recordExists(rec) {
				delete(n.Seen, rec)
			}
		}
		n.SeenLimit = 2 * len(n.Seen)
	}
	n.Scanned = max(n.Scanned, c.Scanned)
	pruneDeliveries(n)
	return created, nil
}

// pruneDeliveries keeps the newest finished deliveries (by Seq, so every node drops the same ones); pending
// ones are always kept.
func pruneDeliveries(n *NotifyState) {
	if len(n.Deliveries) <= maxFinishedDeliveries+deliveryPruneSlack {
		return
	}
	var done []*Delivery
	for _, d := range n.Deliveries {
		if d.State != DeliveryPending {
			done = append(done, d)
		}
	}
	slices.SortFunc(done, func(a, b *Delivery) int {
		return cmp.Compare(a.Seq, b.Seq)
	})
	for _, d := range done[:max(0, len(done)-maxFinishedDeliveries)] {
		delete(n.Deliveries, d.ID)
	}
}

func applyNotifyAttempt(s *State, index uint64, c *NotifyAttempt) (any, *Error) {
	var d *Delivery
	if s.Notify != nil {
		d = s.Notify.Deliveries[c.ID]
	}
	if d == nil {
		return nil, notFound("delivery %q does not exist", c.ID)
	}
	if d.State != DeliveryPending {
		return nil, conflict("delivery %q is %s, not pending", c.ID, d.State)
	}
	if want := len(d.Attempts) + 1; c.Attempt.N != want {
		return nil, conflict("delivery %q: attempt %d recorded out of turn (the next is %d)", c.ID, c.Attempt.N, want)
	}
	if c.Attempt.N > maxNotifyAttempts {
		return nil, badRequest("a delivery has at most %d attempts", maxNotifyAttempts)
	}
	d.Attempts = append(d.Attempts, c.Attempt)
	switch {
	case c.Done:
		d.State, d.NextAt = DeliveryDelivered, time.Time{}
	case c.GiveUp:
		d.State, d.NextAt = DeliveryFailed, time.Time{}
	default:
		d.NextAt = c.NextAt
	}
	d.ModifyIndex = index
	return d, nil
}
