package builder

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/transport"
)

// Member is the cluster side of the node the builder runs on: the replicated state and the one write path,
// gossip's view of the mesh (build servers are members tagged `build`), leadership, and the node's endpoint
// (the build_log RPC), tags, data dir, logger and registry. *node.Node satisfies it; the unit tests use a fake
// whose state is a real FSM (internal/fakenode).
type Member interface {
	Name() string
	FSM() *raftfsm.FSM
	Apply(ctx context.Context, c raftfsm.Command, opts ...node.ApplyOption) (*node.Applied, error)
	ConsistentRead(ctx context.Context) error
	OnLeader(fn func(ctx context.Context, term uint64))
	Members() []node.Member
	Tags() map[string]string
	Endpoint() *transport.Endpoint
	DataDir() string
	Logger() *slog.Logger
	Registry() *prometheus.Registry
}

// API is the HTTP side of the node: where the builder's routes go, how reads begin and how answers and
// writes are made. *api.Server satisfies it.
type API interface {
	RouteGroup() *routeGroup
	BeginRead(r *http.Request) error
	WriteJSON(w http.ResponseWriter, status int, v any)
	Write(w http.ResponseWriter, r *http.Request, status int, c raftfsm.Command) error
}

// routeGroup is the HTTP side's group of routes (API.RouteGroup), which Close takes away.
type routeGroup = api.RouteGroup

var (
	_ Member = (*node.Node)(nil)
	_ API    = (*api.Server)(nil)
)
