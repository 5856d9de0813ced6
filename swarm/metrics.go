package swarm

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a piece transfer fails, the label of shoal_blob_piece_failures_total.
const (
	reasonBadHash   = "bad_hash"      // a peer sent bytes that do not match the piece's sha256
	reasonProtocol  = "protocol"      // a peer broke the protocol (wrong length, malformed header)
	reasonMissing   = "missing"       // a peer no longer had a piece it had announced
	reasonTransfer  = "transfer"      // the stream or connection failed mid-piece
	reasonLocalCorr = "local_corrupt" // this node's stored copy failed verification when it was about to serve it
	reasonStalled   = "stalled"       // a transfer made no progress for its stall limit and was given up (either side)
)

// Metrics are the swarm's Prometheus collectors, shared by a node's Server and its downloads.
type Metrics struct {
	sent          prometheus.Counter
	received      prometheus.Counter
	failures      *prometheus.CounterVec
	fetchDuration prometheus.Histogram
	peersInUse    prometheus.Gauge
	refused       *prometheus.CounterVec
	paceRate      prometheus.Gauge
}

// NewMetrics creates the collectors and registers them on reg (nil: not exported). Registering on a registry
// that already has them reuses the registered ones, so a Server and any number of fetches can share one registry.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_blob_sent_bytes_total", Help: "Piece bytes sent to peers.",
		}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_blob_received_bytes_total", Help: "Piece bytes received from peers, good or bad.",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_blob_piece_failures_total", Help: "Piece transfers that failed, by reason.",
		}, []string{"reason"}),
		fetchDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_blob_fetch_duration_seconds",
			Help:    "Time to download one artifact, from start (or resume) to the verified archive.",
			Buckets: prometheus.ExponentialBuckets(0.25, 2, 13), // 0.25 s .. 17 min
		}),
		peersInUse: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_blob_peers_in_use", Help: "Peers that downloads are currently connected to.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_blob_requests_refused_total",
			Help: "Piece requests this node's server turned away: busy (the piece is being sent to another peer) or full (upload queue full).",
		}, []string{"reason"}),
		paceRate: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_blob_upload_pacing_rate_bytes",
			Help: "With --upload-limit auto: the upload rate, in bytes per second, that delay-based pacing allows now (0: pacing off).",
		}),
	}
	for _, r := range []string{reasonBadHash, reasonProtocol, reasonMissing, reasonTransfer, reasonLocalCorr, reasonStalled} {
		m.failures.WithLabelValues(r) // export zeroes, so rates work from the start
	}
	m.refused.WithLabelValues(codeBusy)
	m.refused.WithLabelValues(codeFull)
	if reg == nil {
		return m, nil
	}
	var err error
	m.sent = register(reg, m.sent, &err)
	m.received = register(reg, m.received, &err)
	m.failures = register(reg, m.failures, &err)
	m.fetchDuration = register(reg, m.fetchDuration, &err)
	m.peersInUse = register(reg, m.peersInUse, &err)
	m.refused = register(reg, m.refused, &err)
	m.paceRate = register(reg, m.paceRate, &err)
	return m, err
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C, errp *error) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		*errp = errors.Join(*errp, err)
	}
	return c
}
