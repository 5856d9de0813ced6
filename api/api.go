package api

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shoal-ci/shoal/errs"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// Handler is an API handler: it writes a response or returns an error that becomes a JSON error.
type Handler func(w http.ResponseWriter, r *http.Request) error

// TokenOf returns the API token that authorised the request.
func TokenOf(r *http.Request) *raftfsm.Token {
	return node.TokenFrom(r.Context())
}

// maxBody bounds request bodies; API requests are small JSON documents.
const maxBody = 1 << 20

// Handle registers an API route that needs a token of at least role ("" for none). Request bodies are limited
// to 1 MiB; HandleLimit sets another bound. Handling a pattern again replaces its handler (a service attached
// again to the same node); a service's RouteGroup takes its routes away when it stops.
func (srv *Server) Handle(pattern, role string, h Handler) {
	srv.HandleLimit(pattern, role, maxBody, h)
}

// route is one registered pattern: the mux takes a pattern once, so its current handler is swapped here.
type route struct {
	h atomic.Pointer[routeHandler]
}

type routeHandler struct {
	role  string
	limit int64
	h     Handler
}

// HandleLimit is Handle with a request body limit of limit bytes.
func (srv *Server) HandleLimit(pattern, role string, limit int64, h Handler) {
	srv.handle(pattern, role, limit, h)
}

// handle registers or replaces the handler of pattern, and returns the route and what it now holds.
func (srv *Server) handle(pattern, role string, limit int64, h Handler) (*route, *routeHandler) {
	srv.routesMu.Lock()
	defer srv.routesMu.Unlock()
	if srv.routeSet == nil {
		srv.routeSet = map[string]*route{}
	}
	rt := srv.routeSet[pattern]
	if rt == nil {
		rt = &route{}
		srv.routeSet[pattern] = rt
		srv.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
			var code int
			if cur := rt.h.Load(); cur != nil {
				code = srv.serve(rec, r, cur.role, cur.limit, cur.h)
			} else {
				code = srv.writeErrorFor(rec, r, errs.New(node.CodeUnavailable,
					"%s is served by a service that is not running on this node now: try another node", pattern))
			}
			if code == 0 {
				code = rec.status
			}
			srv.metrics.apiRequests.WithLabelValues(pattern, strconv.Itoa(code)).Inc()
			srv.metrics.apiDuration.WithLabelValues(pattern).Observe(time.Since(start).Seconds())
		})
	}
	cur := &routeHandler{role: role, limit: limit, h: h}
	rt.h.Store(cur)
	return rt, cur
}

func (srv *Server) serve(w http.ResponseWriter, r *http.Request, role string, limit int64, h Handler) int {
	if role != "" {
		tok, err := srv.authenticate(r, role)
		if err != nil {
			return srv.writeErrorFor(w, r, err)
		}
		r = r.WithContext(node.WithToken(r.Context(), tok))
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	if err := h(w, r); err != nil {
		return srv.writeErrorFor(w, r, err)
	}
	return 0
}

func (srv *Server) authenticate(r *http.Request, role string) (*raftfsm.Token, error) {
	text := r.Header.Get("X-Shoal-Token")
	if h := r.Header.Get("Authorization"); text == "" && strings.HasPrefix(h, "Bearer ") {
		text = strings.TrimPrefix(h, "Bearer ")
	}
	if text == "" {
		return nil, errs.New(errs.Unauthorized, "this request needs an API token: pass --token or set SHOAL_TOKEN (header Authorization: Bearer <token>)")
	}
	lookup := func() (tok *raftfsm.Token) {
		srv.fsm.Read(func(s *raftfsm.State) {
			if t := node.CheckAPIToken(s, text); t != nil {
				c := *t
				tok = &c
			}
		})
		return tok
	}
	tok := lookup()
	if tok == nil {
		// This node may not have applied the token's creation yet (it just joined, restarted, or the token is a
		// few milliseconds old): catch up with the leader before saying the token is wrong.
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		err := srv.n.ConsistentRead(ctx)
		cancel()
		if err != nil {
			// Not caught up, and no leader to catch up with: the token may be one this node has not applied
			// yet, so say "retry", not "wrong token".
			return nil, errs.New(node.CodeNoLeader, "this node could not catch up with the leader to check the API token (%v); retry in a moment", err)
		}
		tok = lookup()
	}
	if tok == nil && !srv.n.Ready() {
		// The token may be one this node has not replayed yet: say "retry", not "wrong token".
		return nil, errs.New(node.CodeNoLeader, "this node is still loading the mesh state after a restart; retry in a moment")
	}
	if tok == nil {
		return nil, errs.New(errs.Unauthorized, "the API token is not valid (wrong, revoked, or from another mesh): check --token / SHOAL_TOKEN")
	}
	if !node.RoleAllows(tok.Role, role) {
		return nil, errs.New(errs.Forbidden, "token %q has role %s; this needs %s", tok.Name, tok.Role, role)
	}
	return tok, nil
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer (for SSE deadlines).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// tokenID is the id of the token that authorised r, "" when none did.
func tokenID(r *http.Request) string {
	if t := TokenOf(r); t != nil {
		return t.ID
	}
	return ""
}

// Decode is decode for handlers registered by other packages.
func Decode(r *http.Request, v any) error { return decode(r, v) }

// WriteJSON writes v with the state index header.
func (srv *Server) WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("X-Shoal-Index", strconv.FormatUint(srv.fsm.Index(), 10))
	writeJSON(w, status, v)
}

// BeginRead prepares a read: with ?consistent it first makes it linearizable; with ?index=N it blocks until the
// state moves past N (or ?wait, default 5 minutes at most, runs out). Reads are otherwise served from local state.
func (srv *Server) BeginRead(r *http.Request) error {
	return srv.beginRead(r, true)
}

// beginRead is BeginRead; needState false serves a node that has not loaded the mesh's state yet (status).
func (srv *Server) beginRead(r *http.Request, needState bool) error {
	q := r.URL.Query()
	// A node that restarted serves its snapshot until it has replayed its log with the leader: a plain read
	// there would show records long gone or miss ones long there (a 404 for an app that exists). Say "retry".
	if needState && !q.Has("consistent") && !srv.n.Ready() {
		return errs.New(node.CodeNoLeader, "this node is still loading the mesh state after a restart; retry in a moment, or ask another node")
	}
	// Read-your-writes on any node: a client that wrote at index N (the X-Shoal-Index of the answer) sends
	// X-Shoal-Min-Index: N, and this node waits until its state includes N (bounded: a node cut off from the
	// leader serves what it has after 5 s).
	if v := firstOf(r.Header.Get("X-Shoal-Min-Index"), q.Get("min_index")); v != "" {
		idx, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return errs.New(errs.BadRequest, "min index %q is not a number", v)
		}
		srv.n.WaitApplied(r.Context(), idx)
	}
	// Read-your-writes on this node for clients that do not carry the index (a new CLI process for each
	// command): every write this node answered is in the state a plain read sees. A forwarded write is answered
	// when the leader commits it, and a follower applies it up to Raft's CommitTimeout later; a read that comes
	// in between waits for it (bounded like min_index).
	srv.n.WaitApplied(r.Context(), srv.n.Answered())
	if q.Has("consistent") {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		if err := srv.n.ConsistentRead(ctx); err != nil {
			return err
		}
	}
	if s := q.Get("index"); s != "" {
		idx, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return errs.New(errs.BadRequest, "index %q is not a number", s)
		}
		wait := 5 * time.Minute
		if ws := q.Get("wait"); ws != "" {
			d, err := time.ParseDuration(ws)
			if err != nil || d <= 0 {
				return errs.New(errs.BadRequest, "wait %q is not a duration like 30s", ws)
			}
			wait = min(d, 10*time.Minute)
		}
		if idx >= srv.fsm.Index() {
			// This read will wait: it takes one of the token's watcher slots until its request ends.
			release, err := srv.watchers.acquire(tokenID(r), srv.n.Name())
			if err != nil {
				return err
			}
			context.AfterFunc(r.Context(), release)
		}
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		defer cancel()
		srv.fsm.Wait(ctx, idx)
	}
	return nil
}

// Write applies a command from an API request and answers with the written record.
func (srv *Server) Write(w http.ResponseWriter, r *http.Request, status int, c raftfsm.Command) error {
	res, err := srv.n.Apply(r.Context(), c, ForRequest(r), node.OnCommit)
	if err != nil {
		return err
	}
	w.Header().Set("X-Shoal-Index", strconv.FormatUint(res.Index, 10))
	if len(res.Value) == 0 {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err = w.Write(append(res.Value, '\n'))
	return err
}

func (srv *Server) routes() {
	srv.mux.HandleFunc("GET /healthz", srv.getHealthz)
	metricsRole := raftfsm.RoleReader
	if srv.cfg.MetricsOpen {
		metricsRole = ""
	}
	prom := promhttp.HandlerFor(srv.n.Registry(), promhttp.HandlerOpts{})
	srv.Handle("GET /metrics", metricsRole, func(w http.ResponseWriter, r *http.Request) error {
		prom.ServeHTTP(w, r)
		return nil
	})
	srv.Handle("GET /v1/status", raftfsm.RoleReader, srv.getStatus)
	srv.Handle("GET /v1/members", raftfsm.RoleReader, srv.getMembers)
	srv.Handle("POST /v1/leave", raftfsm.RoleAdmin, srv.postLeave)
	srv.Handle("POST /v1/members/{name}/remove", raftfsm.RoleAdmin, srv.postRemoveMember)
	srv.Handle("POST /v1/mesh/gossip-key/rotate", raftfsm.RoleAdmin, srv.postRotateGossipKey)
	srv.Handle("GET /v1/mesh/ca", raftfsm.RoleAdmin, srv.getCA)
	srv.Handle("POST /v1/mesh/ca/rotate", raftfsm.RoleAdmin, srv.postRotateCA)
	srv.apiApps()
	srv.apiEnvs()
	srv.apiRetention()
	srv.apiTokens()
	srv.apiEvents()
	srv.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if srv.cfg.AwaitServices && !srv.servicesReady.Load() {
			// The services' routes are not attached yet: a route of theirs is not missing, only early.
			writeError(w, errs.New(errs.Unavailable, "node %s is starting its services; retry in a moment", srv.n.Name()))
			return
		}
		writeError(w, errs.New(raftfsm.KindNotFound, "no API route %s %s: see docs/api.md", r.Method, r.URL.Path))
	})
}

func (srv *Server) getStatus(w http.ResponseWriter, r *http.Request) error {
	if err := srv.beginRead(r, false); err != nil {
		return err
	}
	st := srv.n.Status()
	srv.WriteJSON(w, http.StatusOK, st)
	return nil
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// RouteGroup is the routes of one service: they are registered through it and taken away together when the
// service stops (Close), so no route outlives the service that answers it. A route another group has handled
// since is left to that group.
type RouteGroup struct {
	srv    *Server
	mu     sync.Mutex
	routes map[*route]*routeHandler
}

// RouteGroup starts a group of routes.
func (srv *Server) RouteGroup() *RouteGroup {
	return &RouteGroup{srv: srv, routes: map[*route]*routeHandler{}}
}

// Handle is Server.Handle for a route of the group.
func (g *RouteGroup) Handle(pattern, role string, h Handler) {
	g.HandleLimit(pattern, role, maxBody, h)
}

// HandleLimit is Server.HandleLimit for a route of the group.
func (g *RouteGroup) HandleLimit(pattern, role string, limit int64, h Handler) {
	rt, cur := g.srv.handle(pattern, role, limit, h)
	g.mu.Lock()
	g.routes[rt] = cur
	g.mu.Unlock()
}

// Close takes the group's routes away: they answer 503 until a service handles them again.
func (g *RouteGroup) Close() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for rt, cur := range g.routes {
		rt.h.CompareAndSwap(cur, nil)
	}
	clear(g.routes)
}

// ServicesReady says that the services of a node opened with Config.AwaitServices have attached their routes:
// from now on a request for a route nobody serves is a 404, not a 503 "starting".
func (srv *Server) ServicesReady() { srv.servicesReady.Store(true) }

// RequestWriteTimeout bounds the write of an API request (ForRequest).
const RequestWriteTimeout = 15 * time.Second

// ForRequest makes a write (node.Apply) that of an API request: bounded by the request (pass r.Context() as the
// write's context), and by RequestWriteTimeout.
func ForRequest(r *http.Request) node.ApplyOption { return node.WithTimeout(RequestWriteTimeout) }

func contextWithTimeout(r *http.Request, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), d)
}
