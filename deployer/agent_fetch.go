package deployer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

// Fetchable is implemented by a Fetcher that can tell at once whether a release can be fetched at all (spread:
// some live server holds it; StoreFetcher: one of its sources has it). The deploy API refuses a deploy or a
// rollback to a release that cannot, before it changes anything. The error wraps raftfsm.ErrNoLiveHolder.
type Fetchable interface {
	Fetchable(rel *raftfsm.Release) error
}

// Fetchable reports whether Store or one of the sources has the release whole.
func (f *StoreFetcher) Fetchable(rel *raftfsm.Release) error {
	if f.Store.Complete(rel.Digest) {
		return nil
	}
	for _, src := range f.Sources {
		if src != nil && src.Complete(rel.Digest) {
			return nil
		}
	}
	if len(f.Dirs) > 0 {
		return nil // a shared mount may get it later; Fetch says if it does not
	}
	return fmt.Errorf("release %s of app %s: %w: this node's sources do not have it; rebuild it or push its archive again",
		rel.Version, rel.App, raftfsm.ErrNoLiveHolder)
}

// fetch brings the target's release into the store. While no live server holds it, it does not fail: it
// says so in words (app, release, cause) in the deployment's status and log, and waits for a holder to come
// back, for as long as the target stays the same. What ends the wait is the deployment's own deadline or a
// cancel (the target changes), or ctx (the install's: cancelled when the state stops asking for it).
func (w *envWorker) fetch(ctx context.Context, t target, rel *raftfsm.Release, rep *statusSender, dlog *deployLog, progress func(done, total int64)) error {
	said := ""
	for {
		changed := w.d.n.FSM().Changed()
		err := w.d.opts.Fetcher.Fetch(ctx, rel, progress)
		if err == nil || !errors.Is(err, raftfsm.ErrNoLiveHolder) {
			return err
		}
		if msg := trimErr(err); msg != said {
			// Said once per cause: a status written on every pass would wake this loop with its own write.
			said = msg
			dlog.Notef("waiting: %s", msg)
			w.log.Warn("cannot fetch the release: no live server holds it; waiting for a holder", "release", t.Release, "err", err)
			rep.Set(raftfsm.NodeStatus{State: raftfsm.NodeDownloading, Phase: "Fetch", Error: said})
		}
		tm := time.NewTimer(resyncInterval)
		select {
		case <-ctx.Done():
			tm.Stop()
			return err
		case <-changed:
		case <-tm.C:
		}
		tm.Stop()
		v := w.read()
		if !v.found || v.rel == nil || !sameTarget(v.t, t) {
			return fmt.Errorf("%w (no longer waiting: the environment's target changed)", err)
		}
		rel = v.rel
	}
}

// sameTarget reports whether two targets ask for the same work in the same deployment.
func sameTarget(a, b target) bool {
	id := func(t target) string {
		if t.Dep == nil {
			return ""
		}
		return t.Dep.ID
	}
	return a.Kind == b.Kind && a.Release == b.Release && a.Live == b.Live && id(a) == id(b)
}
