package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shoal-ci/shoal/errs"
	"github.com/shoal-ci/shoal/raftfsm"
)

// Handler is an API handler: it writes a response or returns an error that becomes a JSON error.
type Handler func(w http.ResponseWriter, r *http.Request) error

// roleRank orders roles: a token may do what its role and every lower role may.
var roleRank = map[string]int{raftfsm.RoleReader: 1, raftfsm.RoleDeployer: 2, raftfsm.RoleAdmin: 3}

type ctxKey int

const tokenKey ctxKey = 1

// TokenOf returns the API token that authorised the request.
func TokenOf(r *http.Request) *raftfsm.Token {
	t, _ := r.Context().Value(tokenKey).(*raftfsm.Token)
	return t
}

// maxBody bounds request bodies; API requests are small JSON documents.
const maxBody = 1 << 20

func (n *Node) startHTTP() error {
	ln, err := net.Listen("tcp", hostPort(n.cfg.BindIP, n.cfg.HTTPPort))
	if err != nil {
		return fmt.Errorf("listen HTTP on %s: %w", hostPort(n.cfg.BindIP, n.cfg.HTTPPort), err)
	}
	n.httpLn = ln
	n.httpConns = newConnLimiter(ln, httpMaxConns(), httpMaxConnsPerSource, n.log.With("component", "api"))
	n.mux = http.NewServeMux()
	n.routes()
	// Every limit bounds what a client, even one without a token, can make the node hold (httplimits.go).
	n.httpSrv = &http.Server{Handler: n.mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: httpIdleTimeout,
		MaxHeaderBytes: httpMaxHeaderBytes, ConnState: n.httpConns.connState,
		ErrorLog: memberlistLogger(n.log.With("component", "api"))}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.httpSrv.Serve(n.httpConns); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("HTTP API stopped", "err", err)
		}
	}()
	return nil
}

// Handle registers an API route that needs a token of at least role ("" for none). Request bodies are limited
// to 1 MiB; HandleLimit sets another bound. Handling a pattern again replaces its handler (a service attached
// again to the same node); a service's RouteGroup takes its routes away when it stops.
func (n *Node) Handle(pattern, role string, h Handler) { n.HandleLimit(pattern, role, maxBody, h) }

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
func (n *Node) HandleLimit(pattern, role string, limit int64, h Handler) {
	n.handle(pattern, role, limit, h)
}

// handle registers or replaces the handler of pattern, and returns the route and what it now holds.
func (n *Node) handle(pattern, role string, limit int64, h Handler) (*route, *routeHandler) {
	n.routesMu.Lock()
	defer n.routesMu.Unlock()
	if n.routeSet == nil {
		n.routeSet = map[string]*route{}
	}
	rt := n.routeSet[pattern]
	if rt == nil {
		rt = &route{}
		n.routeSet[pattern] = rt
		n.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
			var code int
			if cur := rt.h.Load(); cur != nil {
				code = n.serve(rec, r, cur.role, cur.limit, cur.h)
			} else {
				code = n.writeErrorFor(rec, r, errs.New(CodeUnavailable,
					"%s is served by a service that is not running on this node now: try another node", pattern))
			}
			if code == 0 {
				code = rec.status
			}
			n.metrics.apiRequests.WithLabelValues(pattern, strconv.Itoa(code)).Inc()
			n.metrics.apiDuration.WithLabelValues(pattern).Observe(time.Since(start).Seconds())
		})
	}
	cur := &routeHandler{role: role, limit: limit, h: h}
	rt.h.Store(cur)
	return rt, cur
}

func (n *Node) serve(w http.ResponseWriter, r *http.Request, role string, limit int64, h Handler) int {
	if role != "" {
		tok, err := n.authenticate(r, role)
		if err != nil {
			return n.writeErrorFor(w, r, err)
		}
		r = r.WithContext(context.WithValue(r.Context(), tokenKey, tok))
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	if err := h(w, r); err != nil {
		return n.writeErrorFor(w, r, err)
	}
	return 0
}

func (n *Node) authenticate(r *http.Request, role string) (*raftfsm.Token, error) {
	text := r.Header.Get("X-Shoal-Token")
	if h := r.Header.Get("Authorization"); text == "" && strings.HasPrefix(h, "Bearer ") {
		text = strings.TrimPrefix(h, "Bearer ")
	}
	if text == "" {
		return nil, errs.New(errs.Unauthorized, "this request needs an API token: pass --token or set SHOAL_TOKEN (header Authorization: Bearer <token>)")
	}
	lookup := func() (tok *raftfsm.Token) {
		n.fsm.Read(func(s *raftfsm.State) {
			if t := checkAPIToken(s, text); t != nil {
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
		err := n.ConsistentRead(ctx)
		cancel()
		if err != nil {
			// Not caught up, and no leader to catch up with: the token may be one this node has not applied
			// yet, so say "retry", not "wrong token".
			return nil, errs.New(CodeNoLeader, "this node could not catch up with the leader to check the API token (%v); retry in a moment", err)
		}
		tok = lookup()
	}
	if tok == nil && !n.Ready() {
		// The token may be one this node has not replayed yet: say "retry", not "wrong token".
		return nil, errs.New(CodeNoLeader, "this node is still loading the mesh state after a restart; retry in a moment")
	}
	if tok == nil {
		return nil, errs.New(errs.Unauthorized, "the API token is not valid (wrong, revoked, or from another mesh): check --token / SHOAL_TOKEN")
	}
	if roleRank[tok.Role] < roleRank[role] {
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
func (n *Node) WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("X-Shoal-Index", strconv.FormatUint(n.fsm.Index(), 10))
	writeJSON(w, status, v)
}

// BeginRead prepares a read: with ?consistent it first makes it linearizable; with ?index=N it blocks until the
// state moves past N (or ?wait, default 5 minutes at most, runs out). Reads are otherwise served from local state.
func (n *Node) BeginRead(r *http.Request) error {
	return n.beginRead(r, true)
}

// beginRead is BeginRead; needState false serves a node that has not loaded the mesh's state yet (status).
func (n *Node) beginRead(r *http.Request, needState bool) error {
	q := r.URL.Query()
	// A node that restarted serves its snapshot until it has replayed its log with the leader: a plain read
	// there would show records long gone or miss ones long there (a 404 for an app that exists). Say "retry".
	if needState && !q.Has("consistent") && !n.Ready() {
		return errs.New(CodeNoLeader, "this node is still loading the mesh state after a restart; retry in a moment, or ask another node")
	}
	// Read-your-writes on any node: a client that wrote at index N (the X-Shoal-Index of the answer) sends
	// X-Shoal-Min-Index: N, and this node waits until its state includes N (bounded: a node cut off from the
	// leader serves what it has after 5 s).
	if v := firstOf(r.Header.Get("X-Shoal-Min-Index"), q.Get("min_index")); v != "" {
		idx, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return errs.New(errs.BadRequest, "min index %q is not a number", v)
		}
		n.WaitApplied(r.Context(), idx)
	}
	// Read-your-writes on this node for clients that do not carry the index (a new CLI process for each
	// command): every write this node answered is in the state a plain read sees. A forwarded write is answered
	// when the leader commits it, and a follower applies it up to Raft's CommitTimeout later; a read that comes
	// in between waits for it (bounded like min_index).
	n.WaitApplied(r.Context(), n.answered.Load())
	if q.Has("consistent") {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		if err := n.ConsistentRead(ctx); err != nil {
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
		if idx >= n.fsm.Index() {
			// This read will wait: it takes one of the token's watcher slots until its request ends.
			release, err := n.watchers.acquire(tokenID(r), n.cfg.Name)
			if err != nil {
				return err
			}
			context.AfterFunc(r.Context(), release)
		}
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		defer cancel()
		n.fsm.Wait(ctx, idx)
	}
	return nil
}

// Write applies a command from an API request and answers with the written record.
func (n *Node) Write(w http.ResponseWriter, r *http.Request, status int, c raftfsm.Command) error {
	res, err := n.Apply(r.Context(), c, ForRequest(r), OnCommit)
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

func (n *Node) routes() {
	n.mux.HandleFunc("GET /healthz", n.getHealthz)
	metricsRole := raftfsm.RoleReader
	if n.cfg.MetricsOpen {
		metricsRole = ""
	}
	prom := promhttp.HandlerFor(n.cfg.Registry, promhttp.HandlerOpts{})
	n.Handle("GET /metrics", metricsRole, func(w http.ResponseWriter, r *http.Request) error {
		prom.ServeHTTP(w, r)
		return nil
	})
	n.Handle("GET /v1/status", raftfsm.RoleReader, n.getStatus)
	n.Handle("GET /v1/members", raftfsm.RoleReader, n.getMembers)
	n.Handle("POST /v1/leave", raftfsm.RoleAdmin, n.postLeave)
	n.Handle("POST /v1/members/{name}/remove", raftfsm.RoleAdmin, n.postRemoveMember)
	n.Handle("POST /v1/mesh/gossip-key/rotate", raftfsm.RoleAdmin, n.postRotateGossipKey)
	n.Handle("GET /v1/mesh/ca", raftfsm.RoleAdmin, n.getCA)
	n.Handle("POST /v1/mesh/ca/rotate", raftfsm.RoleAdmin, n.postRotateCA)
	n.apiApps()
	n.apiEnvs()
	n.apiRetention()
	n.apiTokens()
	n.apiEvents()
	n.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if n.cfg.AwaitServices && !n.servicesReady.Load() {
			// The services' routes are not attached yet: a route of theirs is not missing, only early.
			writeError(w, errs.New(errs.Unavailable, "node %s is starting its services; retry in a moment", n.cfg.Name))
			return
		}
		writeError(w, errs.New(raftfsm.KindNotFound, "no API route %s %s: see docs/api.md", r.Method, r.URL.Path))
	})
}

// Status is the answer of GET /v1/status.
type Status struct {
	Node         string `json:"node"`
	Mesh         string `json:"mesh"`
	State        string `json:"state"`
	Leader       string `json:"leader"`
	LeaderAddr   string `json:"leader_addr"`
	Term         uint64 `json:"term"`
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	Voters       int    `json:"voters"`
	NonVoters    int    `json:"nonvoters"`
	Members      int    `json:"members"`
	Version      string `json:"version"`
}

// Version is the build's version, set by the linker (-X) in release builds.
var Version = "dev"

func (n *Node) getStatus(w http.ResponseWriter, r *http.Request) error {
	if err := n.beginRead(r, false); err != nil {
		return err
	}
	st := n.Status()
	n.WriteJSON(w, http.StatusOK, st)
	return nil
}

// Status describes this node and the mesh as it sees them.
func (n *Node) Status() Status {
	leader, addr := n.Leader()
	st := Status{Node: n.cfg.Name, Mesh: n.stored.Mesh, State: stateName(n.raft.State()), Leader: leader, LeaderAddr: addr,
		Term: n.raft.CurrentTerm(), AppliedIndex: n.raft.AppliedIndex(), CommitIndex: n.raft.CommitIndex(), Version: Version}
	for _, m := range n.Members() {
		if m.Status == StatusAlive || m.Status == StatusSuspect {
			st.Members++
		}
		switch m.Role {
		case "voter":
			st.Voters++
		case "nonvoter":
			st.NonVoters++
		}
	}
	return st
}

func (n *Node) getMembers(w http.ResponseWriter, r *http.Request) error {
	if err := n.BeginRead(r); err != nil {
		return err
	}
	n.WriteJSON(w, http.StatusOK, n.Members())
	return nil
}

func (n *Node) postLeave(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	if err := n.Leave(ctx); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"left": n.cfg.Name})
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
	n      *Node
	mu     sync.Mutex
	routes map[*route]*routeHandler
}

// RouteGroup starts a group of routes.
func (n *Node) RouteGroup() *RouteGroup { return &RouteGroup{n: n, routes: map[*route]*routeHandler{}} }

// Handle is Node.Handle for a route of the group.
func (g *RouteGroup) Handle(pattern, role string, h Handler) {
	g.HandleLimit(pattern, role, maxBody, h)
}

// HandleLimit is Node.HandleLimit for a route of the group.
func (g *RouteGroup) HandleLimit(pattern, role string, limit int64, h Handler) {
	rt, cur := g.n.handle(pattern, role, limit, h)
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
func (n *Node) ServicesReady() { n.servicesReady.Store(true) }
