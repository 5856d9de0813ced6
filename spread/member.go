package spread

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

// Member is the cluster side of the node the service runs on: the replicated state and the one write path,
// gossip's view of the mesh, and the node's endpoint, data dir, logger and registry. *node.Node satisfies it;
// the unit tests use a fake whose state is a real FSM (internal/fakenode).
type Member interface {
	Name() string
	FSM() *raftfsm.FSM
	Apply(ctx context.Context, c raftfsm.Command, opts ...node.ApplyOption) (*node.Applied, error)
	ConsistentRead(ctx context.Context) error
	IsLeader() bool
	Members() []node.Member
	MemberStatus(name string) string
	Endpoint() *transport.Endpoint
	DataDir() string
	Logger() *slog.Logger
	Registry() *prometheus.Registry
}

// API is the HTTP side of the node: where the service's routes go and how its answers are written.
// *api.Server satisfies it.
type API interface {
	RouteGroup() *routeGroup
	WriteJSON(w http.ResponseWriter, status int, v any)
}

// routeGroup is the HTTP side's group of routes (API.RouteGroup), which Close takes away.
type routeGroup = api.RouteGroup

var (
	_ Member = (*node.Node)(nil)
	_ API    = (*api.Server)(nil)
)
