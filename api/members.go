package api

import (
	"context"
	"net/http"
	"time"
)

func (srv *Server) getMembers(w http.ResponseWriter, r *http.Request) error {
	if err := srv.BeginRead(r); err != nil {
		return err
	}
	srv.WriteJSON(w, http.StatusOK, srv.n.Members())
	return nil
}

func (srv *Server) postLeave(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	if err := srv.n.Leave(ctx); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"left": srv.n.Name()})
	return nil
}

// postRemoveMember removes a member that cannot leave by itself (node.RemoveMember).
func (srv *Server) postRemoveMember(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if err := srv.n.RemoveMember(r.Context(), name, TokenOf(r).Name, ForRequest(r)); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"removed": name})
	return nil
}
