package deployer

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

// Member is the cluster side of the node the deployer runs on: the replicated state, the one write path and
// the node's readiness (Ready, ConsistentRead), gossip's view of the mesh and this node's tags (who is in an
// environment), leadership (the orchestrator), the endpoint (the log RPCs), and the node's data dir, logger,
// registry and lifetime. *node.Node satisfies it; the unit tests use a fake whose state is a real FSM
// (internal/fakenode).
type Member interface {
	Name() string
	FSM() *raftfsm.FSM
	Apply(ctx context.Context, c raftfsm.Command, opts ...node.ApplyOption) (*node.Applied, error)
	ConsistentRead(ctx context.Context) error
	Ready() bool
	OnLeader(fn func(ctx context.Context, term uint64))
	Members() []node.Member
	Tags() map[string]string
	Endpoint() *transport.Endpoint
	DataDir() string
	Logger() *slog.Logger
	Registry() *prometheus.Registry
	Done() <-chan struct{}
}

// API is the HTTP side of the node: where the deploy routes go, how reads begin and how answers and writes are
// made. *api.Server satisfies it.
type API interface {
	RouteGroup() *routeGroup
	BeginRead(r *http.Request) error
	WriteJSON(w http.ResponseWriter, status int, v any)
	Write(w http.ResponseWriter, r *http.Request, status int, c raftfsm.Command) error
	SetEnvRuntime(fn api.EnvRuntimeFunc)
}

// routeGroup is the HTTP side's group of routes (API.RouteGroup), which Close takes away.
type routeGroup = api.RouteGroup

var (
	_ Member = (*node.Node)(nil)
	_ API    = (*api.Server)(nil)
)
