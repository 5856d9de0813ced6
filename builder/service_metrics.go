package builder

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-ci/shoal/raftfsm"
)

// Build results as shoal_builds_total counts them. The first three are the states the FSM records; the others
// are outcomes only this node sees.
const (
	resultSucceeded = raftfsm.BuildSucceeded
	resultFailed    = raftfsm.BuildFailed
	resultCancelled = raftfsm.BuildCancelled
	// resultFenced: the build ran to the end but the FSM refused its result, because the leader term it ran
	// under was over (a newer leader owns the build).
	resultFenced = "fenced"
	// resultInterrupted: leadership ended (or the node stopped) while the build ran; the next leader runs it.
	resultInterrupted = "interrupted"
	// resultUnrecorded: the result could not be written before the deadline (no leader for 30 s); the next
	// leader runs the build again.
	resultUnrecorded = "unrecorded"
)

// Webhook results as shoal_webhook_requests_total counts them.
const (
	hookQueued          = "queued"
	hookDuplicate       = "duplicate"
	hookIgnored         = "ignored"
	hookBadSignature    = "bad_signature"
	hookBadRequest      = "bad_request"
	hookUnknownProvider = "unknown_provider"
	hookUnknownApp      = "unknown_app"
	hookError           = "error"
)

type metrics struct {
	builds   *prometheus.CounterVec
	duration prometheus.Histogram
	webhooks *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, fsm *raftfsm.FSM) (*metrics, error) {
	m := &metrics{
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_builds_total",
			Help: "Builds this node ran as leader, by app and result (succeeded, failed, cancelled, fenced, interrupted, unrecorded).",
		}, []string{"app", "result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_build_duration_seconds",
			Help:    "Time from a build's start on this node to its result (fetch, scripts, packaging, publishing).",
			Buckets: []float64{0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600},
		}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_webhook_requests_total",
			Help: "Webhook requests this node received, by provider (github, gitea, gitlab, unknown) and result.",
		}, []string{"provider", "result"}),
	}
	queue := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "shoal_build_queue_depth",
		Help: "Builds queued and not yet started, as this node's replicated state shows them.",
	}, func() float64 {
		n := 0
		fsm.Read(func(s *raftfsm.State) {
			for _, b := range s.LiveBuilds() {
				if b.State == raftfsm.BuildQueued {
					n++
				}
			}
		})
		return float64(n)
	})
	var done []prometheus.Collector
	for _, c := range []prometheus.Collector{m.builds, m.duration, m.webhooks, queue} {
		if err := reg.Register(c); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("builder metrics are already registered on this node: attach the builder once")
			}
			return nil, fmt.Errorf("register builder metrics: %w", err)
		}
		done = append(done, c)
	}
	return m, nil
}
