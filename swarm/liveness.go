package swarm

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// What a download does about peers that die or stall (DESIGN.md, "Peer loss"). A dead peer is noticed by its
// connection (the blob ALPN's 2 s idle timeout, transport.BlobIdleTimeout) or by the peer list (gossip); both end
// the peer's requests at once, and their pieces go back to the pool. A live peer whose transfer makes no progress
// is caught here.
const (
	// stallCheck is how often requests in flight are checked for progress.
	stallCheck = 250 * time.Millisecond
	// A request that has received nothing for stallFactor times the usual piece time (at least minStall; before
	// any piece has arrived, firstStall) is cancelled and the piece asked of another holder.
	stallFactor = 4
	minStall    = time.Second
	firstStall  = 10 * time.Second
)

// pieceReq is one piece request in flight.
type pieceReq struct {
	cancel  context.CancelFunc
	last    atomic.Int64 // unix nanoseconds of the request's start or its latest bytes
	stalled atomic.Bool  // cancelled by checkStalls
}

func (r *pieceReq) progress(now time.Time) { r.last.Store(now.UnixNano()) }

// stallLimitLocked is how long a request may receive nothing before it counts as stalled.
func (f *fetcher) stallLimitLocked() time.Duration {
	if f.pieceTime == 0 {
		return firstStall
	}
	return max(minStall, stallFactor*f.pieceTime)
}

// checkStalls cancels every request that has received nothing for the stall limit while another connected peer
// announces its piece; the piece is then asked of that peer (see noteStalled). A request whose piece only its own
// peer holds is left alone: there is nobody else to ask, and if the peer is dead its connection ends it.
func (f *fetcher) checkStalls(now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	limit := f.stallLimitLocked()
	for _, p := range f.peers {
		for i, r := range p.reqs {
			if r.stalled.Load() || f.avail[i] < 2 || now.Sub(time.Unix(0, r.last.Load())) < limit {
				continue
			}
			r.stalled.Store(true)
			r.cancel()
		}
	}
}

// noteStalled records a request that checkStalls cancelled: the peer is not asked for that piece again for a
// stall limit (so it goes to another holder), and stalls count toward reconnecting to the peer.
func (f *fetcher) noteStalled(p *peer, i int) {
	f.m.failures.WithLabelValues(reasonStalled).Inc()
	f.mu.Lock()
	limit := f.stallLimitLocked()
	p.busy[i] = time.Now().Add(limit)
	p.transferFails++
	reconnect := p.transferFails >= maxTransferFailures
	f.wakeHoldersLocked(i)
	f.mu.Unlock()
	f.log.Info("piece request made no progress; asking another peer", "addr", p.addr, "peer", p.name, "piece", i,
		"after", limit)
	if reconnect {
		p.cancel()
	}
}

// checkHoldersLocked ends the download with ErrNoHolder once some missing piece has had no connected holder for
// NoHolderTimeout and no listed peer is left that might hold it (every one is connected, dropped, or failed its
// last connection attempt). Until then a peer being dialed, or one not yet tried, may still bring the piece.
func (f *fetcher) checkHoldersLocked(now time.Time) {
	missing, orphans, first := 0, 0, -1
	for i := range f.n {
		if f.have.Has(i) {
			continue
		}
		missing++
		if f.avail[i] == 0 && f.inflight[i] == 0 {
			if orphans++; first < 0 {
				first = i
			}
		}
	}
	if orphans == 0 {
		f.orphanSince = time.Time{}
		return
	}
	if f.orphanSince.IsZero() {
		f.orphanSince = now
	}
	listed, connected := 0, 0
	for _, p := range f.peers {
		if !p.listed {
			continue
		}
		listed++
		switch {
		case p.active:
			connected++
		case p.dropped:
		case p.running || p.fails == 0:
			return // being dialed, or not tried yet
		}
	}
	if waited := now.Sub(f.orphanSince); waited >= f.cfg.NoHolderTimeout {
		f.stopLocked(fmt.Errorf("fetch artifact %s: %d of the %d pieces still missing (piece %d among them) have had no "+
			"holder among the live peers for %s (%d peers listed, %d connected): every node that held them is down, "+
			"unreachable or gone; bring one of them back, or upload the release again: %w",
			shortDigest(f.meta.Digest), orphans, missing, first, waited.Round(time.Second), listed, connected, ErrNoHolder))
	}
}
