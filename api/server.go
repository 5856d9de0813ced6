package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// Config is the HTTP API's own settings; where it listens is the node's (node.Config.BindIP and HTTPPort), since
// the node advertises that address in gossip.
type Config struct {
	// AwaitServices: services will attach routes after the server starts (daemon.Main); until ServicesReady, a
	// request for a route nobody serves yet answers 503 "starting" instead of 404 "no API route".
	AwaitServices bool
	// MetricsOpen serves /metrics without a token.
	MetricsOpen bool
}

// Server is a node's HTTP API: the listener the node reserved, the http.Server with every limit on what a
// client can make the node hold (httplimits.go), the routes, token authentication, the one mapping from errors to
// HTTP statuses (errors.go) and the API's metrics. New starts it on an open node; Close stops it, before the
// node closes.
type Server struct {
	n   *node.Node
	cfg Config
	log *slog.Logger
	fsm *raftfsm.FSM

	httpSrv   *http.Server
	httpConns *connLimiter
	watchers  watchers
	mux       *http.ServeMux
	routesMu  sync.Mutex
	routeSet  map[string]*route // pattern → its current handler (api.go)
	// servicesReady: the services' routes are attached (Config.AwaitServices).
	servicesReady atomic.Bool
	// envRuntime adds the deployer's per-server report to environment reads (env_view.go).
	envRuntime atomic.Pointer[EnvRuntimeFunc]
	metrics    *metrics

	// ctx ends when the server starts closing: long-lived requests (event streams) end with it.
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New serves the HTTP API of n on the listener n reserved for it, with n's own routes (status, members, apps,
// environments, tokens, events, retention, the mesh's keys and CA, /healthz and /metrics). Services add theirs
// with Handle or a RouteGroup.
func New(n *node.Node, cfg Config) (*Server, error) {
	ln, err := n.TakeHTTPListener()
	if err != nil {
		return nil, err
	}
	srv := &Server{n: n, cfg: cfg, log: n.Logger(), fsm: n.FSM()}
	srv.ctx, srv.cancel = context.WithCancel(context.Background())
	srv.metrics = newMetrics(n.Registry(), srv)
	srv.httpConns = newConnLimiter(ln, httpMaxConns(), httpMaxConnsPerSource, srv.log.With("component", "api"))
	srv.mux = http.NewServeMux()
	srv.routes()
	// Every limit bounds what a client, even one without a token, can make the node hold (httplimits.go).
	srv.httpSrv = &http.Server{Handler: srv.mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: httpIdleTimeout,
		MaxHeaderBytes: httpMaxHeaderBytes, ConnState: srv.httpConns.connState,
		ErrorLog: node.StdLogger(srv.log.With("component", "api"))}
	srv.wg.Add(1)
	go func() {
		defer srv.wg.Done()
		if err := srv.httpSrv.Serve(srv.httpConns); err != nil && !errors.Is(err, http.ErrServerClosed) {
			srv.log.Error("HTTP API stopped", "err", err)
		}
	}()
	return srv, nil
}

// Close stops serving: long-lived streams end at once, requests in flight get 2 s to finish. The node keeps
// running; close it after.
func (srv *Server) Close() error {
	srv.closeOnce.Do(func() {
		srv.cancel() // ends long-lived streams (events), so Shutdown need not wait for them
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := srv.httpSrv.Shutdown(ctx); err != nil {
			_ = srv.httpSrv.Close()
		}
		cancel()
		srv.wg.Wait()
	})
	return nil
}
