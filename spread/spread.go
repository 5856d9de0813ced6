// Package spread puts the artifact store and the peer-to-peer piece exchange to work in a node: it serves pieces,
// downloads releases from every peer that has some, copies each new release to enough nodes that losing its
// builder loses nothing, and collects old releases no environment uses.
package spread

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/artifact"
	"github.com/shoal-ci/shoal/errs"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/swarm"
	"github.com/shoal-ci/shoal/transport"
)

// Options configure a node's spread service. The zero value is usable.
type Options struct {
	// Store is the node's artifact store (default: a store in the data dir's blobs/).
	Store *artifact.Store
	// MinHolders is how many nodes must hold a release whole before it counts as available (default 2; a mesh
	// with fewer live nodes needs them all).
	MinHolders int
	// Keep is how many releases per app are kept on disk besides those an environment uses (default 5).
	Keep int
	// UploadLimit and DownloadLimit cap this node's piece traffic in bytes per second (0: none).
	UploadLimit, DownloadLimit int64
	// UploadPacing paces the upload by the queueing delay it causes instead (swarm.WithDelayPacing); it
	// overrides UploadLimit.
	UploadPacing bool
	// InFlight is the number of piece requests in flight per peer (default 4).
	InFlight int
	// Peers is how many other nodes one download lists as sources at a time (default 16; see peersFor).
	Peers int
	// GCInterval is how often old releases are collected (default 1 minute).
	GCInterval time.Duration
}

// DefaultPeers is Options.Peers' default: enough sources for the swarm to mix (the spread benchmarks of 16 and
// 32 hosts keep their figures) and few enough connections per node for a mesh of hundreds.
const DefaultPeers = 16

// Service is one node's spread service.
type Service struct {
	api    *api.RouteGroup // its API routes, taken away by Close
	n      *node.Node
	srv    *api.Server
	opts   Options
	store  *artifact.Store
	server *swarm.Server
	down   *swarm.Limiter
	log    *slog.Logger

	mu       sync.Mutex
	fetching map[string]*download // digest → the download in progress
	recent   map[string]time.Time // digest → when this node last recorded itself a holder (see keeper)
	ownStore bool                 // the store was opened here, so Close closes it

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// download is one download in progress, shared by every Fetch of its release.
type download struct {
	done chan struct{} // closed when it ends
	err  error         // how it ended, set before done is closed
}

// Attach starts the spread service on n: the piece server on the blob ALPN, the replicator and the collector.
func Attach(n *node.Node, srv *api.Server, opts Options) (*Service, error) {
	if opts.MinHolders <= 0 {
		opts.MinHolders = 2
	}
	if opts.Keep <= 0 {
		opts.Keep = 5
	}
	if opts.Peers <= 0 {
		opts.Peers = DefaultPeers
	}
	if opts.GCInterval <= 0 {
		opts.GCInterval = time.Minute
	}
	log := n.Logger().With("component", "spread")
	store := opts.Store
	if store == nil {
		var err error
		if store, err = artifact.New(filepath.Join(n.DataDir(), "blobs"), log); err != nil {
			return nil, err
		}
	}
	var sopts []swarm.ServerOption
	switch {
	case opts.UploadPacing:
		sopts = append(sopts, swarm.WithDelayPacing())
	case opts.UploadLimit > 0:
		sopts = append(sopts, swarm.WithUploadLimit(swarm.NewLimiter(opts.UploadLimit)))
	}
	s := &Service{
		n: n, srv: srv, opts: opts, store: store, log: log, fetching: map[string]*download{}, recent: map[string]time.Time{}, ownStore: opts.Store == nil,
		server: swarm.NewServer(store, log, n.Registry(), sopts...),
	}
	if opts.DownloadLimit > 0 {
		s.down = swarm.NewLimiter(opts.DownloadLimit)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	n.Endpoint().Handle(transport.ALPNBlob, s.server.HandleConn)
	s.routes()
	s.wg.Add(2)
	go s.replicate()
	go s.collect()
	return s, nil
}

// Close stops the service's goroutines and waits for them (downloads in progress are cancelled; they resume
// from the store next time).
func (s *Service) Close() {
	s.api.Close()
	s.cancel()
	s.wg.Wait()
	if s.ownStore {
		if err := s.store.Close(); err != nil {
			s.log.Warn("close artifact store", "err", err)
		}
	}
}

// Store returns the node's artifact store.
func (s *Service) Store() *artifact.Store { return s.store }

// Open opens a complete, verified archive.
func (s *Service) Open(digest string) (io.ReadCloser, error) { return s.store.Open(digest) }

// MetaOf returns the artifact description recorded in a release.
func MetaOf(r *raftfsm.Release) artifact.Meta {
	return artifact.Meta{Digest: r.Digest, Size: r.Size, PieceSize: r.PieceSize, Pieces: r.Pieces}
}

// Available reports whether a release is held whole by enough nodes to survive the loss of any one of them:
// MinHolders, or every live node when the mesh is smaller than that.
func (s *Service) Available(r *raftfsm.Release) bool {
	need := s.opts.MinHolders
	if live := s.liveCount(); live < need {
		need = live
	}
	return len(r.Holders) >= need
}

func (s *Service) liveCount() int {
	k := 0
	for _, m := range s.n.Members() {
		if m.Status == node.StatusAlive {
			k++
		}
	}
	return max(k, 1)
}

// Fetch makes the release's archive present and verified in this node's store, downloading the missing pieces
// from every live peer at once, and records this node as a holder. Concurrent calls for one release share one
// download. progress, if set, is told the bytes held as pieces arrive.
//
// A release that no live server holds cannot be fetched: Fetch returns at once (or as soon as the last live
// holder goes) with an error that wraps raftfsm.ErrNoLiveHolder and names the app, the release and its holders.
func (s *Service) Fetch(ctx context.Context, r *raftfsm.Release, progress func(done, total int64)) error {
	return s.fetchRelease(ctx, r, progress, 0)
}

// fetchRelease is Fetch; with recordWait > 0, recording this node as a holder may take that long, after which
// the record is left to the background (see record) and the error says so.
func (s *Service) fetchRelease(ctx context.Context, r *raftfsm.Release, progress func(done, total int64), recordWait time.Duration) (err error) {
	meta := MetaOf(r)
	if !s.store.Complete(meta.Digest) {
		if err := s.noLiveHolder(r.App, r.Version); err != nil {
			return err
		}
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		stop := s.watchHolders(ctx, cancel, r.App, r.Version)
		defer stop()
		defer func() {
			if cause := context.Cause(ctx); errors.Is(cause, raftfsm.ErrNoLiveHolder) && ctx.Err() != nil {
				err = cause
			}
		}()
	}
	for {
		s.mu.Lock()
		d, busy := s.fetching[meta.Digest]
		if !busy {
			d = &download{done: make(chan struct{})}
			s.fetching[meta.Digest] = d
			s.mu.Unlock()
			d.err = s.fetch(ctx, meta, progress, s.peersFor(r.App, r.Version))
			s.mu.Lock()
			delete(s.fetching, meta.Digest)
			s.mu.Unlock()
			close(d.done)
			if d.err != nil {
				return d.err
			}
			return s.record(ctx, r, recordWait)
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-d.done:
		}
		if s.store.Complete(meta.Digest) {
			return s.record(ctx, r, recordWait)
		}
		if errors.Is(d.err, swarm.ErrNoHolder) {
			return d.err // the shared download found no holder a moment ago: another try would only wait as long again
		}
	}
}

// record records this node as a holder of r, within wait if it is positive: a mesh without a Raft majority
// cannot commit the record, and an API fetch should answer rather than wait for one. The archive is safe on disk
// by then, so the record goes on in the background.
func (s *Service) record(ctx context.Context, r *raftfsm.Release, wait time.Duration) error {
	if wait <= 0 {
		return s.recordHolder(ctx, r)
	}
	rctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	err := s.recordHolder(rctx, r)
	if err == nil || rctx.Err() == nil {
		return err
	}
	s.wg.Go(func() {
		if err := s.recordHolder(s.ctx, r); err != nil && s.ctx.Err() == nil {
			s.log.Warn("could not record this node as a holder", "app", r.App, "version", r.Version, "err", err)
		}
	})
	return errs.New(errs.Unavailable, "release %s %s is held whole on this node, but recording it as a holder "+
		"did not succeed within %s (%v); it goes on in the background: check that the mesh has a leader (GET /v1/status)",
		r.App, r.Version, wait, err)
}

func (s *Service) fetch(ctx context.Context, meta artifact.Meta, progress func(done, total int64), peers func() []string) error {
	if s.store.Complete(meta.Digest) {
		return nil
	}
	fctx, cancel := context.WithCancel(ctx)
	var reporter sync.WaitGroup
	defer reporter.Wait() // no progress call after Fetch returns
	defer cancel()
	if progress != nil {
		reporter.Add(1)
		go func() {
			defer reporter.Done()
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-fctx.Done():
					return
				case <-t.C:
					if have := s.store.Have(meta.Digest); have != nil {
						progress(min(int64(have.Count())*meta.PieceSize, meta.Size), meta.Size)
					}
				}
			}
		}()
	}
	err := swarm.Fetch(fctx, swarm.FetchConfig{
		Store: s.store, Dialer: s.n.Endpoint(), Logger: s.log, Metrics: s.server.Metrics(),
		InFlight: s.opts.InFlight, DownloadLimit: s.down,
	}, meta, peers)
	if err != nil {
		return fmt.Errorf("download release archive %.12s: %w", meta.Digest, err)
	}
	cancel()
	reporter.Wait()
	if progress != nil {
		progress(meta.Size, meta.Size)
	}
	return nil
}

// peersFor returns the peer list of one download of release app/version: the QUIC addresses of up to
// Options.Peers other live members (16 by default), half of them at most among the release's recorded holders
// (whole copies), the rest among the others (nodes still downloading serve what they have). Each node ranks the
// candidates by a hash of the digest, its own name and theirs, so the choice is stable from one call to the next
// (a peer stays listed while it lives) and differs from node to node: the downloads of a large mesh form a
// random graph of bounded degree instead of every node connecting to every other, whose handshakes and
// connections grew as N² and did not fit 200 in-process nodes on 2 cores (docs/scale.md).
func (s *Service) peersFor(app, version string) func() []string {
	key := raftfsm.ReleaseKey(app, version)
	ranks := map[string]string{} // name → rank, computed once per download
	return func() []string {
		var digest string
		held := map[string]bool{}
		s.n.FSM().Read(func(st *raftfsm.State) {
			if r := st.Releases[key]; r != nil {
				digest = r.Digest
				for _, h := range r.Holders {
					held[h] = true
				}
			}
		})
		me := s.n.Name()
		var holders, others []node.Member
		for _, m := range s.n.Members() {
			if m.Status != node.StatusAlive || m.Name == me || m.Addr == "" {
				continue
			}
			if ranks[m.Name] == "" {
				ranks[m.Name] = rank(digest+"/"+me, m.Name)
			}
			if held[m.Name] {
				holders = append(holders, m)
			} else {
				others = append(others, m)
			}
		}
		return samplePeers(holders, others, ranks, s.opts.Peers)
	}
}

// samplePeers picks up to limit addresses, at most half of them holders when enough others are there, each
// group in rank order.
func samplePeers(holders, others []node.Member, ranks map[string]string, limit int) []string {
	byRank := func(a, b node.Member) int { return strings.Compare(ranks[a.Name], ranks[b.Name]) }
	slices.SortFunc(holders, byRank)
	slices.SortFunc(others, byRank)
	nh := min(len(holders), max(limit/2, limit-len(others)))
	no := min(len(others), limit-nh)
	out := make([]string, 0, nh+no)
	for _, m := range holders[:nh] {
		out = append(out, m.Addr)
	}
	for _, m := range others[:no] {
		out = append(out, m.Addr)
	}
	return out
}

// recordHolder tells the mesh this node holds the release whole. The archive is already safe on disk, so a
// mesh without a leader for a while only delays the record: it is retried until ctx ends.
func (s *Service) recordHolder(ctx context.Context, r *raftfsm.Release) error {
	if slices.Contains(r.Holders, s.n.Name()) {
		return nil
	}
	for {
		_, err := s.n.Apply(ctx, &raftfsm.ReleaseHolders{App: r.App, Version: r.Version, Node: s.n.Name()})
		switch {
		case err == nil:
			s.markRecent(r.Digest)
			return nil
		case raftfsm.KindOf(err) == raftfsm.KindNotFound:
			return nil // the release was deleted meanwhile
		case raftfsm.KindOf(err) != "":
			return err
		}
		s.log.Warn("could not record this node as a holder yet; retrying", "app", r.App, "version", r.Version, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("record holder of %s %s: %w", r.App, r.Version, err)
		case <-time.After(time.Second):
		}
	}
}

// replicate copies each release that too few nodes hold. The nodes that copy it are chosen the same way on
// every node (by a hash of the digest and the node name among the live non-holders), so without coordination
// exactly as many as needed start at once; if one of them dies, the choice moves on.
func (s *Service) replicate() {
	defer s.wg.Done()
	for {
		changed := s.n.FSM().Changed()
		for _, r := range s.underReplicated() {
			if err := s.Fetch(s.ctx, r, nil); err != nil {
				if s.ctx.Err() != nil {
					return
				}
				s.log.Warn("replicating a release failed; will retry", "app", r.App, "version", r.Version, "err", err)
			} else {
				s.log.Info("replicated release", "app", r.App, "version", r.Version)
			}
		}
		select {
		case <-s.ctx.Done():
			return
		case <-changed:
		case <-time.After(5 * time.Second): // membership changes do not touch the FSM
		}
	}
}

// underReplicated returns the releases this node should copy now.
func (s *Service) underReplicated() []*raftfsm.Release {
	// This runs at every change of the state; during a deployment that is every status write of every server.
	// Releases short of holders are rare: look for one before reading the member list, whose cost grows with
	// the mesh.
	short := false
	s.n.FSM().Read(func(st *raftfsm.State) {
		for _, r := range st.Releases {
			if len(r.Holders) > 0 && len(r.Holders) < s.opts.MinHolders && !slices.Contains(r.Holders, s.n.Name()) {
				short = true
				return
			}
		}
	})
	if !short {
		return nil
	}
	var live []string
	for _, m := range s.n.Members() {
		if m.Status == node.StatusAlive {
			live = append(live, m.Name)
		}
	}
	keep := s.keeper()
	var out []*raftfsm.Release
	s.n.FSM().Read(func(st *raftfsm.State) {
		for _, r := range st.Releases {
			if len(r.Holders) == 0 || len(r.Holders) >= s.opts.MinHolders || slices.Contains(r.Holders, s.n.Name()) {
				continue
			}
			// A release the cleanup collects is not copied back, and one no live server holds cannot be.
			if !keep(r.Digest) || !slices.ContainsFunc(r.Holders, func(h string) bool { return slices.Contains(live, h) }) {
				continue
			}
			var candidates []string
			for _, name := range live {
				if !slices.Contains(r.Holders, name) {
					candidates = append(candidates, name)
				}
			}
			sort.Slice(candidates, func(i, j int) bool { return rank(r.Digest, candidates[i]) < rank(r.Digest, candidates[j]) })
			need := s.opts.MinHolders - len(r.Holders)
			if slices.Contains(candidates[:min(need, len(candidates))], s.n.Name()) {
				c := *r
				out = append(out, &c)
			}
		}
	})
	return out
}

func rank(digest, name string) string {
	h := sha256.Sum256([]byte(digest + "/" + name))
	return hex.EncodeToString(h[:8])
}
