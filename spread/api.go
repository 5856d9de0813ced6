package spread

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/errs"
	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/swarm"
)

// MaxUpload bounds an uploaded release archive.
const MaxUpload = 4 << 30

// DefaultPieceSize is the piece size of uploaded archives, as of built ones.
const DefaultPieceSize = 256 << 10

// routes adds the release upload and the on-demand fetch to the node's API.
func (s *Service) routes() {
	s.api = s.http.RouteGroup()
	s.api.HandleLimit("POST /v1/apps/{app}/releases", raftfsm.RoleDeployer, MaxUpload, s.postRelease)
	s.api.Handle("POST /v1/apps/{app}/releases/{version}/fetch", raftfsm.RoleAdmin, s.postFetch)
}

// postRelease takes a release archive built elsewhere (the body, a tar.gz), stores it on this node and records
// the release; ?version= sets a custom version and ?notes= its notes. Like `distelli push`. The same archive
// pushed again under an existing release's version makes this node hold that release again (200).
func (s *Service) postRelease(w http.ResponseWriter, r *http.Request) error {
	app := r.PathValue("app")
	exists := func() (ok bool) {
		s.n.FSM().Read(func(st *raftfsm.State) { ok = st.Apps[app] != nil })
		return ok
	}
	if !exists() {
		// This node may not have applied the app's creation yet: catch up with the leader before saying no.
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		if err := s.n.ConsistentRead(ctx); err != nil {
			return err
		}
	}
	if !exists() {
		return errs.New(errs.NotFound, "app %q does not exist: create it first", app)
	}
	q := r.URL.Query()
	if v := q.Get("version"); v != "" {
		if err := raftfsm.ValidName("release", v); err != nil {
			return err // before a byte of the archive is stored
		}
	}
	meta, err := s.store.Import(r.Body, DefaultPieceSize)
	if err != nil {
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			return errs.New(errs.TooLarge, "the archive is larger than %d bytes", MaxUpload)
		case errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT):
			s.n.Logger().Error("release upload refused: the disk is full", "component", "spread", "app", app, "err", err)
			return errs.New(errs.DiskFull, "node %s has no disk space left for the archive: free space in its data dir, or push through another node", s.n.Name())
		}
		return errs.New(errs.BadRequest, "store the uploaded archive: %v", err)
	}
	if v := q.Get("version"); v != "" {
		// The same archive pushed again for an existing release (whose archive was collected everywhere)
		// restores it: this node becomes a holder again.
		var same *raftfsm.Release
		s.n.FSM().Read(func(st *raftfsm.State) {
			if x := st.Releases[raftfsm.ReleaseKey(app, v)]; x != nil && x.Digest == meta.Digest {
				c := *x
				same = &c
			}
		})
		if same != nil {
			res, err := s.n.Apply(r.Context(), &raftfsm.ReleaseHolders{App: app, Version: same.Version, Node: s.n.Name()}, api.ForRequest(r))
			if err != nil {
				return err
			}
			s.markRecent(same.Digest)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Shoal-Index", strconv.FormatUint(res.Index, 10))
			w.WriteHeader(http.StatusOK)
			_, err = w.Write(append(res.Value, '\n'))
			return err
		}
	}
	rel := raftfsm.Release{App: app, Version: q.Get("version"), Notes: q.Get("notes"), Digest: meta.Digest, Size: meta.Size,
		PieceSize: meta.PieceSize, Pieces: meta.Pieces, Holders: []string{s.n.Name()}, CreatedAt: time.Now().UTC()}
	if tok := api.TokenOf(r); tok != nil {
		rel.Notes = firstNonEmpty(rel.Notes, "uploaded by token "+tok.Name)
	}
	res, err := s.n.Apply(r.Context(), &raftfsm.ReleaseCreate{Release: rel}, api.ForRequest(r))
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Shoal-Index", strconv.FormatUint(res.Index, 10))
	w.WriteHeader(http.StatusCreated)
	_, err = w.Write(append(res.Value, '\n'))
	return err
}

// holderRecordWait bounds how long POST .../fetch waits, once the archive is whole, to record this node as a
// holder: without a Raft majority that never happens, and the request should say so rather than hang.
var holderRecordWait = 30 * time.Second // a variable for tests

// FetchResult answers POST .../fetch.
type FetchResult struct {
	Node    string  `json:"node"`
	Digest  string  `json:"digest"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
}

// postFetch makes this node download a release now (to pre-warm a server, or to measure the spread).
func (s *Service) postFetch(w http.ResponseWriter, r *http.Request) error {
	lookup := func() (rel *raftfsm.Release) {
		s.n.FSM().Read(func(st *raftfsm.State) {
			if x := st.Releases[raftfsm.ReleaseKey(r.PathValue("app"), r.PathValue("version"))]; x != nil {
				c := *x
				rel = &c
			}
		})
		return rel
	}
	rel := lookup()
	if rel == nil {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		if err := s.n.ConsistentRead(ctx); err != nil {
			return err
		}
		rel = lookup()
	}
	if rel == nil {
		return errs.New(errs.NotFound, "app %q has no release %q", r.PathValue("app"), r.PathValue("version"))
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Hour)
	defer cancel()
	start := time.Now()
	if err := s.fetchRelease(ctx, rel, nil, holderRecordWait); err != nil {
		if errors.Is(err, swarm.ErrNoHolder) || errors.Is(err, raftfsm.ErrNoLiveHolder) {
			return errs.New(errs.Unavailable, "%v", err)
		}
		return err
	}
	s.http.WriteJSON(w, http.StatusOK, FetchResult{Node: s.n.Name(), Digest: rel.Digest, Bytes: rel.Size, Seconds: time.Since(start).Seconds()})
	return nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
