package spread

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// holderSync is how often, at most, this node compares its holder records with its store (and, on the leader,
// drops the records of servers that left).
const holderSync = 2 * time.Second

// collect removes the archives the keeper lets go, every GCInterval, and keeps the holder records equal to the
// store in between.
func (s *Service) collect() {
	defer s.wg.Done()
	gc := time.NewTicker(s.opts.GCInterval)
	defer gc.Stop()
	sync := time.NewTicker(holderSync)
	defer sync.Stop()
	for {
		changed := s.n.FSM().Changed()
		s.syncHolders()
		select {
		case <-s.ctx.Done():
			return
		case <-gc.C:
			s.collectOnce()
		case <-sync.C:
		case <-changed:
			// Coalesce a burst of writes (statuses during a deployment) into one pass.
			select {
			case <-s.ctx.Done():
				return
			case <-sync.C:
			}
		}
	}
}

// collectOnce removes the archives no release in use names and that are not among the newest Keep releases of
// their app. For each, it first drops this node's holder records with IfUnused, and deletes the archive only
// when every drop was accepted: the FSM refuses a drop while the release is in use, and a deployment created
// after the drop finds no holder here, so cleanup and deploys cannot cross.
func (s *Service) collectOnce() {
	keep := s.keeper()
	me := s.n.Name()
	removed := 0
	for _, m := range s.store.List() {
		if keep(m.Digest) {
			continue
		}
		var named []*raftfsm.Release
		s.n.FSM().Read(func(st *raftfsm.State) {
			for _, r := range st.Releases {
				if r.Digest == m.Digest && slices.Contains(r.Holders, me) {
					c := *r
					named = append(named, &c)
				}
			}
		})
		dropped := true
		for _, r := range named {
			if err := s.dropHolder(r.App, r.Version, me, true); err != nil {
				s.log.Info("release archive kept", "app", r.App, "version", r.Version, "reason", err)
				dropped = false
			}
		}
		s.mu.Lock()
		_, busy := s.fetching[m.Digest]
		s.mu.Unlock()
		if !dropped || busy || s.keeper()(m.Digest) { // kept, or in use since the first look
			continue
		}
		if err := s.store.Remove(m.Digest); err != nil {
			s.log.Warn("remove a collected release archive", "digest", m.Digest, "err", err)
			continue
		}
		removed++
	}
	if removed > 0 {
		s.log.Info("collected old release archives", "count", removed)
	}
}

// markRecent notes that this node just recorded itself a holder of digest (see keeper).
func (s *Service) markRecent(digest string) {
	s.mu.Lock()
	s.recent[digest] = time.Now()
	s.mu.Unlock()
}

// dropHolder writes a ReleaseDrop, with a bounded wait for the leader.
func (s *Service) dropHolder(app, version, name string, ifUnused bool) error {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	_, err := s.n.Apply(ctx, &raftfsm.ReleaseDrop{App: app, Version: version, Node: name, IfUnused: ifUnused})
	if raftfsm.KindOf(err) == raftfsm.KindNotFound {
		return nil // the release was deleted meanwhile
	}
	return err
}

// syncHolders makes this node's holder records equal to its store: a release recorded here whose archive is
// not whole here is dropped, one whose archive is whole here and not recorded is added (a record lost to a
// crash, or an archive collected and fetched again). On the leader it also drops the records of servers that
// left the mesh for good.
func (s *Service) syncHolders() {
	me := s.n.Name()
	type rel struct{ app, version, digest string }
	var listed, unlisted []rel
	var departed []string
	s.n.FSM().Read(func(st *raftfsm.State) {
		for _, r := range st.Releases {
			x := rel{r.App, r.Version, r.Digest}
			if slices.Contains(r.Holders, me) {
				listed = append(listed, x)
			} else {
				unlisted = append(unlisted, x)
			}
		}
		for name := range st.Departed {
			for _, r := range st.Releases {
				if slices.Contains(r.Holders, name) {
					departed = append(departed, name)
					break
				}
			}
		}
	})
	for _, r := range listed {
		if !s.store.Complete(r.digest) {
			s.log.Info("this node no longer holds a release archive; dropping its holder record", "app", r.app, "version", r.version)
			if err := s.dropHolder(r.app, r.version, me, false); err != nil && s.ctx.Err() == nil {
				s.log.Warn("drop a holder record", "app", r.app, "version", r.version, "err", err)
			}
		}
	}
	for _, r := range unlisted {
		if s.store.Complete(r.digest) {
			ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
			err := s.recordHolder(ctx, &raftfsm.Release{App: r.app, Version: r.version})
			cancel()
			if err != nil && s.ctx.Err() == nil {
				s.log.Warn("record a holder", "app", r.app, "version", r.version, "err", err)
			}
		}
	}
	if !s.n.IsLeader() {
		return
	}
	sort.Strings(departed)
	for _, name := range departed {
		if err := s.dropHolder("", "", name, false); err != nil && s.ctx.Err() == nil {
			s.log.Warn("drop the holder records of a server that left", "node", name, "err", err)
		}
	}
}

// keeper decides, from the replicated state, which archives stay: those of the newest Keep releases of each
// app and those of every release in use (raftfsm.State.ReleaseUse: desired, stable, rollback target, target
// of an unfinished deployment). An archive that no release names is kept: it may be a build's, packaged a
// moment before its release is committed. So are downloads in progress, and for two collection intervals an
// archive this node just recorded holding (a release pushed again, to be deployed next, is not taken back
// before the deploy that needs it is created).
func (s *Service) keeper() func(digest string) bool {
	keep, known := map[string]bool{}, map[string]bool{}
	s.n.FSM().Read(func(st *raftfsm.State) {
		inUse := st.ReleasesInUse()
		byApp := map[string][]*raftfsm.Release{}
		for _, r := range st.Releases {
			byApp[r.App] = append(byApp[r.App], r)
			known[r.Digest] = true
		}
		for _, rs := range byApp {
			sort.Slice(rs, func(i, j int) bool { return rs[i].CreateIndex > rs[j].CreateIndex })
			for i, r := range rs {
				if i < s.opts.Keep || inUse[raftfsm.ReleaseKey(r.App, r.Version)] {
					keep[r.Digest] = true
				}
			}
		}
	})
	s.mu.Lock()
	for d := range s.fetching {
		keep[d] = true
	}
	for d, at := range s.recent {
		if time.Since(at) < 2*s.opts.GCInterval {
			keep[d] = true
		} else {
			delete(s.recent, d)
		}
	}
	s.mu.Unlock()
	return func(digest string) bool { return keep[digest] || !known[digest] }
}

// liveHolders lists the holders of a release that gossip sees up (alive or suspect), this node's own record
// only if its store has the archive whole.
func (s *Service) liveHolders(holders []string, digest string) []string {
	var out []string
	for _, h := range holders {
		if h == s.n.Name() && !s.store.Complete(digest) {
			continue
		}
		// One lookup per holder, not the whole member list: every download asks this every second.
		if st := s.n.MemberStatus(h); st == node.StatusAlive || st == node.StatusSuspect {
			out = append(out, h)
		}
	}
	return out
}

// noLiveHolder returns, from the current state, an error wrapping raftfsm.ErrNoLiveHolder when no live server
// holds the release (nil when one does, or when the release is gone: the caller's own checks say so).
func (s *Service) noLiveHolder(app, version string) error {
	var r *raftfsm.Release
	s.n.FSM().Read(func(st *raftfsm.State) {
		if x := st.Releases[raftfsm.ReleaseKey(app, version)]; x != nil {
			c := *x
			c.Holders = slices.Clone(x.Holders)
			r = &c
		}
	})
	if r == nil || len(s.liveHolders(r.Holders, r.Digest)) > 0 {
		return nil
	}
	return NoLiveHolderError(r)
}

// Fetchable returns an error wrapping raftfsm.ErrNoLiveHolder when the release is not whole here and no live
// server holds it (the deploy API refuses such a deploy before it writes anything).
func (s *Service) Fetchable(r *raftfsm.Release) error {
	if s.store.Complete(r.Digest) || len(s.liveHolders(r.Holders, r.Digest)) > 0 {
		return nil
	}
	return NoLiveHolderError(r)
}

// NoLiveHolderError says, in words, that no live server holds a release and what to do.
func NoLiveHolderError(r *raftfsm.Release) error {
	held := "no server holds it any more (its archive was collected)"
	if len(r.Holders) > 0 {
		held = "the servers holding it (" + strings.Join(r.Holders, ", ") + ") are down"
	}
	rebuild := "`node build " + r.App + "`"
	if r.Commit != "" {
		rebuild = "`node build " + r.App + " --ref " + r.Commit + "`"
	}
	return fmt.Errorf("release %s of app %s cannot be fetched: %w: %s; bring a holder back, push the same archive again (`node release push %s FILE --version %s`), rebuild it as a new release (%s), or deploy a release that `node releases %s` shows held",
		r.Version, r.App, raftfsm.ErrNoLiveHolder, held, r.App, r.Version, rebuild, r.App)
}

// watchHolders cancels ctx with a NoLiveHolderError when the last live holder of the release goes (it dies, or
// drops the release) while the download runs. stop ends the watch.
func (s *Service) watchHolders(ctx context.Context, cancel context.CancelCauseFunc, app, version string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-done:
				return
			case <-t.C:
			}
			if err := s.noLiveHolder(app, version); err != nil {
				cancel(err)
				return
			}
		}
	}()
	return func() { close(done); <-finished }
}
