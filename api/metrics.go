package api

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the API's Prometheus collectors, registered on the node's registry (docs/metrics.md).
type metrics struct {
	apiRequests *prometheus.CounterVec
	apiDuration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer, srv *Server) *metrics {
	m := &metrics{
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_api_requests_total",
			Help: "HTTP API requests by route pattern and status code.",
		}, []string{"route", "code"}),
		apiDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoal_api_request_duration_seconds",
			Help:    "HTTP API request latency by route pattern (blocking reads included).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
		}, []string{"route"}),
	}
	reg.MustRegister(m.apiRequests, m.apiDuration)
	reg.MustRegister(limitCollectors(srv)...)
	return m
}

// limitCollectors report what the limits refused and what they hold (docs/metrics.md). They read the limiters
// when scraped.
func limitCollectors(srv *Server) []prometheus.Collector {
	conns := func(f func(l *connLimiter) float64) func() float64 {
		return func() float64 {
			if srv.httpConns == nil {
				return 0
			}
			return f(srv.httpConns)
		}
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shoal_http_connections",
			Help: "HTTP connections the node holds."}, conns(func(l *connLimiter) float64 { return float64(l.openConns()) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_http_connections_refused_total",
			Help: "HTTP connections refused at the per-address or total cap."}, conns(func(l *connLimiter) float64 { return float64(l.refused.Load()) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_http_connections_evicted_total",
			Help: "Idle HTTP connections closed to make room at the total cap."}, conns(func(l *connLimiter) float64 { return float64(l.evicted.Load()) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shoal_api_watchers",
			Help: "Blocking reads and event streams waiting now."}, func() float64 { return float64(srv.watchers.watching()) }),
	}
}
