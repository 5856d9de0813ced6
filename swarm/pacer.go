package swarm

import (
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// Delay-based upload pacing (issue 17; `node agent --upload-limit auto`), in the spirit of LEDBAT: the node's
// upload limiter's rate follows the queueing delay that its own piece uploads add to its uplink. Without any limit,
// each QUIC connection's congestion control fills the uplink's queue until packets drop, which costs time (losses,
// retransmissions, the ACKs and requests of the node's own downloads wait behind the queue) and CPU; a hand-set
// limit a little below the link avoids that but must be known and kept up to date. Here the queueing delay is
// read from the connections the node is sending pieces on (smoothed RTT minus the path's minimum RTT, as quic-go
// measures them; the smallest over those connections, since they share the uplink and any one of them can only
// add delays of its own path), every pacingInterval:
//
//   - at first the rate grows 25 % per interval (a slow start), until the delay reaches a quarter of the target
//     or packets are lost;
//   - then, below pacingTarget, it grows in proportion to the room left (at most 5 % per interval), but never
//     past twice what the node actually sent in the last interval, so an idle or application-limited node does
//     not build up a rate it would then burst at;
//   - above the target it shrinks in proportion to the excess (10 % per target's worth, at most 25 % per
//     interval), and by 20 % for an interval in which the connections lost packets.
//
// (Larger steps, 12 % up and a slow start that never ended, oscillated by ±10 % around a modelled link:
// TestPacingControlLaw.)
const (
	pacingInterval = 100 * time.Millisecond
	pacingTarget   = 25 * time.Millisecond
	pacingMinRate  = 125_000   // bytes/s: 1 Mbit/s
	pacingStart    = 2_500_000 // bytes/s: 20 Mbit/s
	pacingMaxRate  = 12_500_000_000 / 8
)

// pacer adjusts lim from the connections it is told are sending.
type pacer struct {
	lim *Limiter

	mu      sync.Mutex
	sending map[*quic.Conn]int // connections with piece writes in progress, and how many
	lost    map[*quic.Conn]uint64
	last    time.Time
	sent    int64 // piece bytes written since last
	rate    float64
	slow    bool // still in the slow start
}

func newPacer() *pacer {
	return &pacer{lim: NewLimiter(pacingStart), sending: map[*quic.Conn]int{}, lost: map[*quic.Conn]uint64{}, rate: pacingStart, slow: true}
}

// currentRate is the rate the pacer allows now, in bytes per second.
func (p *pacer) currentRate() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rate
}

// begin and end bracket one piece write on conn.
func (p *pacer) begin(conn *quic.Conn) {
	p.mu.Lock()
	p.sending[conn]++
	p.mu.Unlock()
}

func (p *pacer) end(conn *quic.Conn) {
	p.mu.Lock()
	if p.sending[conn]--; p.sending[conn] <= 0 {
		delete(p.sending, conn)
		delete(p.lost, conn)
	}
	p.mu.Unlock()
}

// wrote counts n piece bytes written and, once an interval has passed, adjusts the rate.
func (p *pacer) wrote(n int, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent += int64(n)
	if p.last.IsZero() {
		p.last = now
		return
	}
	elapsed := now.Sub(p.last)
	if elapsed < pacingInterval {
		return
	}
	delay, measured, lost := time.Duration(-1), false, false
	for c := range p.sending {
		st := c.ConnectionStats()
		if st.MinRTT > 0 && st.SmoothedRTT > 0 {
			if d := max(st.SmoothedRTT-st.MinRTT, 0); !measured || d < delay {
				delay, measured = d, true
			}
		}
		if prev, ok := p.lost[c]; ok && st.BytesLost > prev {
			lost = true
		}
		p.lost[c] = st.BytesLost
	}
	used := float64(p.sent) / elapsed.Seconds()
	p.sent, p.last = 0, now
	if !measured {
		return
	}
	p.rate, p.slow = nextRate(p.rate, delay, lost, used, p.slow)
	p.lim.SetRate(int64(p.rate))
}

// nextRate is one step of the control law: the rate after an interval in which the queueing delay was delay, the
// connections lost packets or not, and the node sent used bytes per second; slow says whether the slow start
// goes on.
func nextRate(rate float64, delay time.Duration, lost bool, used float64, slow bool) (float64, bool) {
	off := float64(pacingTarget-delay) / float64(pacingTarget) // 1 with no queue, 0 at the target, < 0 past it
	slow = slow && !lost && delay < pacingTarget/4
	switch {
	case lost:
		rate *= 0.8
	case slow:
		rate *= 1.25
	case off > 0:
		rate *= 1 + 0.05*off
	default:
		rate *= 1 + max(0.1*off, -0.25)
	}
	if off > 0 && !lost {
		rate = min(rate, max(2*used, pacingStart))
	}
	return min(max(rate, pacingMinRate), pacingMaxRate), slow
}
