package swarm

import (
	"math"
	"time"
)

// holdsBack reports whether piece i is not to be asked of p for now, and if so for how long at most: p holds the
// whole artifact, has sent i to someone already and still has pieces it has sent to nobody. Its upload is then the
// scarcest thing in the swarm (every piece enters through it), so it goes to new pieces, and i is got from whoever
// received it: from another peer that announces it, or, if none does within sentGrace (its receiver may have
// failed or left), from p after all.
func (f *fetcher) holdsBack(p *peer, i int, now time.Time, endgame bool) (bool, time.Duration) {
	if p.sentCount == 0 || p.sentAt[i].IsZero() {
		return false, 0
	}
	if p.sentCount >= f.n {
		return !endgame && f.otherServesLocked(p, i, now), 0
	}
	if f.avail[i] > 1 {
		return true, 0 // another connected peer announces it
	}
	grace := max(sentGrace, 2*f.pieceTime)
	if age := now.Sub(p.sentAt[i]); age < grace {
		return true, grace - age
	}
	return false, 0
}

// otherServesLocked reports whether a connected peer other than p announces piece i and has not refused it lately.
func (f *fetcher) otherServesLocked(p *peer, i int, now time.Time) bool {
	if f.avail[i] < 2 {
		return false
	}
	for _, q := range f.peers {
		if q != p && q.active && q.bits.Has(i) && !now.Before(q.busy[i]) {
			return true
		}
	}
	return false
}

// pickLocked chooses the piece to request from p: among the pieces we lack, nobody is fetching and p has, one of
// the rarest (fewest connected peers announce it), at random among equals, so that downloaders spread over
// different pieces and rare pieces multiply before their holders leave. retry, when set, is the time until a
// piece passed over now may be picked (p answered busy for it, or it is not yet late enough to be copied); last
// is set when best is the last piece that nobody was fetching.
func (f *fetcher) pickLocked(p *peer, now time.Time) (best int, retry time.Duration, last bool) {
	later := func(d time.Duration) {
		if retry == 0 || d < retry {
			retry = d
		}
	}
	busy := func(i int) bool {
		until, ok := p.busy[i]
		if !ok {
			return false
		}
		if d := until.Sub(now); d > 0 {
			later(d)
			return true
		}
		delete(p.busy, i)
		return false
	}
	heldBack := func(i int, endgame bool) bool {
		held, wait := f.holdsBack(p, i, now, endgame)
		if wait > 0 {
			later(wait)
		}
		return held
	}
	best = -1
	bestAvail := int32(math.MaxInt32)
	ties, unrequested, uniqueTaken := 0, 0, 0
	for i := range f.n {
		if f.have.Has(i) {
			continue
		}
		if f.inflight[i] > 0 {
			if f.avail[i] == 1 && p.bits.Has(i) {
				uniqueTaken++
			}
			continue
		}
		unrequested++
		if !p.bits.Has(i) || heldBack(i, false) {
			continue
		}
		if busy(i) {
			if f.avail[i] == 1 {
				uniqueTaken++
			}
			continue
		}
		switch a := f.avail[i]; {
		case a < bestAvail:
			best, bestAvail, ties = i, a, 1
		case a == bestAvail:
			ties++
			if f.rng.IntN(ties) == 0 {
				best = i
			}
		}
	}
	if best >= 0 && bestAvail > 1 && uniqueTaken > 0 {
		// p holds pieces nobody else has, and they are all on their way to us or to others. Asking p for a
		// piece other peers also hold would spend p's upload (the seed's, early on) on a copy; wait instead.
		return -1, retry, false
	}
	if best >= 0 || unrequested > 0 || uniqueTaken > 0 || f.pieceTime == 0 {
		return best, retry, best >= 0 && unrequested == 1
	}
	// Endgame: every missing piece is requested somewhere. Rather than idle, this slot asks p for a copy of a
	// piece whose request is late (outstanding for twice the usual piece time); the first copy to land cancels
	// the other, so one slow or stuck peer cannot hold back the end of the download. Copying only late pieces
	// keeps the endgame from doubling traffic when, with few pieces, every piece is in flight early.
	late := 2 * f.pieceTime
	var oldest time.Time
	for i := range f.n {
		if f.have.Has(i) || f.inflight[i] >= maxCopies || !p.bits.Has(i) || heldBack(i, true) || p.reqs[i] != nil || busy(i) {
			continue
		}
		if age := now.Sub(f.started[i]); age < late {
			later(late - age)
			continue
		}
		if best < 0 || f.started[i].Before(oldest) {
			best, oldest = i, f.started[i]
		}
	}
	return best, retry, false
}
