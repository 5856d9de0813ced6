package api

import (
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// EnvRuntimeFunc adds to an environment's API view what its servers run (the deployer's report and drift). It
// is called under the state's read lock and must only read what it is given: members is gossip's view, read
// before the lock was taken (node.Members reads the state too, and a read lock taken again while a writer waits
// deadlocks).
type EnvRuntimeFunc func(s *raftfsm.State, e *raftfsm.Env, members []node.Member) any

// SetEnvRuntime sets (nil: clears) what GET /v1/envs/{env} shows under "runtime".
func (srv *Server) SetEnvRuntime(fn EnvRuntimeFunc) {
	if fn == nil {
		srv.envRuntime.Store(nil)
		return
	}
	srv.envRuntime.Store(&fn)
}

// EnvView is an environment as GET /v1/envs/{env} shows it: the record, with secret values redacted, and what
// its servers report they run.
type EnvView struct {
	raftfsm.Env
	Runtime any `json:"runtime,omitempty"`
}

// envView is e's view; rt and members are envRuntime's value and gossip's view, both read before the state's
// read lock was taken.
func envView(s *raftfsm.State, e *raftfsm.Env, rt *EnvRuntimeFunc, members []node.Member) EnvView {
	v := EnvView{Env: viewEnv(e)}
	if rt != nil {
		v.Runtime = (*rt)(s, e, members)
	}
	return v
}
