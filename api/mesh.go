package api

import (
	"net/http"
	"time"

	"github.com/shoal-ci/shoal/errs"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// postRotateGossipKey serves `node gossip-key rotate`.
func (srv *Server) postRotateGossipKey(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Overlap raftfsm.Duration `json:"overlap"`
	}
	if r.ContentLength != 0 {
		if err := decode(r, &in); err != nil {
			return err
		}
	}
	overlap := time.Duration(in.Overlap)
	if overlap == 0 {
		overlap = node.DefaultKeyOverlap
	}
	if overlap < 0 || overlap > 24*time.Hour {
		return errs.New(errs.BadRequest, "overlap %s is out of range: give a duration from 1s to 24h, like 1m", overlap)
	}
	ctx, cancel := contextWithTimeout(r, 15*time.Second)
	defer cancel()
	res, err := srv.n.RotateGossipKey(ctx, overlap)
	if err != nil {
		return err
	}
	srv.log.Info("gossip key rotated", "component", "gossip", "overlap", overlap, "by", TokenOf(r).Name)
	writeJSON(w, http.StatusOK, map[string]any{"index": res.Index, "previous_key_accepted_until": time.Now().Add(overlap).UTC()})
	return nil
}

func (srv *Server) getCA(w http.ResponseWriter, r *http.Request) error {
	if err := srv.BeginRead(r); err != nil {
		return err
	}
	srv.WriteJSON(w, http.StatusOK, srv.n.CAStatus())
	return nil
}

// postRotateCA serves `node ca rotate`: without finish it starts a rotation (a new CA that every member trusts at
// once and gets a certificate from); with finish it makes the new CA the signing one, refusing while a member of
// the Raft configuration has no certificate from it, unless forced.
func (srv *Server) postRotateCA(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Finish bool             `json:"finish"`
		Force  bool             `json:"force"`
		Grace  raftfsm.Duration `json:"grace"`
	}
	if r.ContentLength != 0 {
		if err := decode(r, &in); err != nil {
			return err
		}
	}
	ctx, cancel := contextWithTimeout(r, 15*time.Second)
	defer cancel()
	if !in.Finish {
		next, err := srv.n.StartCARotation(ctx, TokenOf(r).Name)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"stage": raftfsm.CAStageStart, "next_ca_hash": next})
		return nil
	}
	grace := time.Duration(in.Grace)
	if grace == 0 {
		grace = node.DefaultCAGrace
	}
	st, err := srv.n.FinishCARotation(ctx, grace, in.Force, TokenOf(r).Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"stage": raftfsm.CAStageFinish, "ca_hash": st.NextCAHash, "old_ca_trusted_until": time.Now().Add(grace).UTC(),
		"without": st.Missing})
	return nil
}
