package notify

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// Defaults of Options.
const (
	DefaultRetryBase   = time.Second
	DefaultRetryMax    = 5 * time.Minute
	DefaultMaxAttempts = 10
	DefaultTimeout     = 10 * time.Second
	// maxInFlight bounds the deliveries one leader sends at once.
	maxInFlight = 16
)

// Options configure the notifier; zero values take the defaults above.
type Options struct {
	// Client sends webhooks and forge statuses (default: one with Timeout per request).
	Client *http.Client
	// RetryBase is the wait after the first failed attempt; it doubles with every attempt up to RetryMax.
	RetryBase, RetryMax time.Duration
	// MaxAttempts is how many tries a delivery gets before it is marked failed.
	MaxAttempts int
	Timeout     time.Duration
	// DashboardURL is the dashboard's base that events link to (default: http://<the leader's HTTP address>/ui/).
	DashboardURL string
	Logger       *slog.Logger
}

// Service derives events and delivers them while its node leads, and serves the notification API on every node.
type Service struct {
	api  *api.RouteGroup // its API routes, taken away by Close
	n    *node.Node
	srv  *api.Server
	opts Options
	log  *slog.Logger
	m    *metrics

	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// Attach registers the notification API on srv (n's API server) and the leader hook that delivers. Close stops
// the leader work.
func Attach(n *node.Node, srv *api.Server, opts Options) (*Service, error) {
	if opts.RetryBase <= 0 {
		opts.RetryBase = DefaultRetryBase
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = DefaultRetryMax
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Client == nil {
		// A redirect is an answer like any other non-2xx: following it would re-send the body, and its signature,
		// to an address the subscription does not name.
		opts.Client = &http.Client{Timeout: opts.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if opts.Logger == nil {
		opts.Logger = n.Logger()
	}
	m, err := newMetrics(n.Registry())
	if err != nil {
		return nil, err
	}
	s := &Service{n: n, srv: srv, opts: opts, log: opts.Logger.With("component", "notify"), m: m}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.routes()
	n.OnLeader(s.lead)
	return s, nil
}

// Close stops the leader work; deliveries in flight end unrecorded and the next leader sends them again (with
// the same idempotency key).
func (s *Service) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.api.Close()
	s.cancel()
	s.wg.Wait()
}

// lead runs while this node leads: one loop derives and records events, one delivers. Both end with the
// leadership or the service.
func (s *Service) lead(leaderCtx context.Context, term uint64) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(leaderCtx)
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.record(ctx) }()
	go func() { defer wg.Done(); newDeliverer(s).run(ctx) }()
	wg.Wait()
}

// dashboard is the dashboard base URL events link to.
func (s *Service) dashboard() string {
	if s.opts.DashboardURL != "" {
		return s.opts.DashboardURL
	}
	for _, m := range s.n.Members() {
		if m.Name == s.n.Name() && m.HTTP != "" {
			return "http://" + m.HTTP + "/ui/"
		}
	}
	return "http://" + s.n.HTTPAddr() + "/ui/"
}

// record derives events from every change of the state and records the new ones that have somewhere to go.
// It starts from the index the last leader derived through, so nothing that happened in between is lost.
func (s *Service) record(ctx context.Context) {
	var cursor uint64
	s.n.FSM().Read(func(st *raftfsm.State) {
		if st.Notify != nil {
			cursor = st.Notify.Scanned
		}
	})
	retry := time.Duration(0)
	for {
		changed := s.n.FSM().Changed()
		var (
			evs []raftfsm.Event
			idx uint64
		)
		now := time.Now().UTC()
		dash := s.dashboard()
		s.n.FSM().Read(func(st *raftfsm.State) {
			idx = st.Index
			// Nothing to derive for while no one subscribes: an event matches only targets older than it.
			if st.Notify == nil || len(st.Notify.Subs) == 0 && len(st.Notify.Forges) == 0 {
				return
			}
			for _, ev := range derive(st, cursor, dash, now) {
				if !st.EventRecorded(ev.Key) && len(st.NotifyTargets(&ev)) > 0 {
					evs = append(evs, ev)
				}
			}
		})
		ok := true
		for len(evs) > 0 && ctx.Err() == nil {
			batch := evs[:min(len(evs), 256)]
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := s.n.Apply(wctx, &raftfsm.NotifyEvents{Scanned: idx, Events: batch, At: now}, node.OnCommit)
			cancel()
			if err != nil {
				s.log.Warn("record events", "err", err, "events", len(evs))
				ok = false
				break
			}
			s.m.events.Add(float64(len(batch)))
			evs = evs[len(batch):]
		}
		if ok {
			cursor, retry = idx, 0
		} else {
			retry = min(max(2*retry, 100*time.Millisecond), 5*time.Second)
			changed = nil
		}
		var wait <-chan time.Time
		if retry > 0 {
			wait = time.After(retry)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-wait:
		}
	}
}

type metrics struct {
	events     prometheus.Counter
	attempts   *prometheus.CounterVec
	deliveries *prometheus.CounterVec
	latency    prometheus.Histogram
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		events: prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_notify_events_total",
			Help: "Events this node recorded as leader for delivery."}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_notify_attempts_total",
			Help: "Delivery attempts this node made as leader, by target kind and outcome (ok, error)."}, []string{"kind", "outcome"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_notify_deliveries_total",
			Help: "Deliveries this node finished as leader, by target kind and state (delivered, failed)."}, []string{"kind", "state"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "shoal_notify_delivery_seconds",
			Help:    "Time from an event to its delivery, for deliveries that succeeded.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.events, m.attempts, m.deliveries, m.latency} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
