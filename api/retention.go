package api

import (
	"net/http"

	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// RetentionView is GET /v1/retention: the stored settings and the limits in force (defaults filled in).
type RetentionView struct {
	Set       *raftfsm.Retention `json:"set"`
	Effective raftfsm.Retention  `json:"effective"`
}

func (srv *Server) apiRetention() {
	srv.Handle("GET /v1/retention", raftfsm.RoleReader, func(w http.ResponseWriter, r *http.Request) error {
		if err := srv.BeginRead(r); err != nil {
			return err
		}
		var v RetentionView
		srv.fsm.Read(func(s *raftfsm.State) {
			if s.Retention != nil {
				c := *s.Retention
				v.Set = &c
			}
			v.Effective = s.Limits()
		})
		srv.WriteJSON(w, http.StatusOK, v)
		return nil
	})
	srv.Handle("PUT /v1/retention", raftfsm.RoleAdmin, func(w http.ResponseWriter, r *http.Request) error {
		var in raftfsm.Retention
		if err := decode(r, &in); err != nil {
			return err
		}
		res, err := srv.n.Apply(r.Context(), &raftfsm.RetentionSet{Retention: in}, ForRequest(r), node.OnCommit)
		if err != nil {
			return err
		}
		return writeRecord(srv, w, http.StatusOK, res, func(e *raftfsm.Retention) raftfsm.Retention { return *e })
	})
}
