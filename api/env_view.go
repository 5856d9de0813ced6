package api

import (
	"github.com/shoal-ci/shoal/raftfsm"
)

// EnvRuntimeFunc adds to an environment's API view what its servers run (the deployer's report and drift). It
// is called under the state's read lock and must only read.
type EnvRuntimeFunc func(s *raftfsm.State, e *raftfsm.Env) any

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

func (srv *Server) envView(s *raftfsm.State, e *raftfsm.Env) EnvView {
	v := EnvView{Env: viewEnv(e)}
	if fn := srv.envRuntime.Load(); fn != nil {
		v.Runtime = (*fn)(s, e)
	}
	return v
}
