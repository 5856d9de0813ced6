package swarm

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/artifact"
)

func TestLimiterReservations(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewLimiter(1 << 20)
	l.now = func() time.Time { return now }
	burst := int(l.burst)
	if d := l.reserve(burst); d != 0 {
		t.Fatalf("the burst waited %v", d)
	}
	if d := l.reserve(1 << 20); d < time.Second-time.Millisecond || d > time.Second {
		t.Fatalf("a second's worth beyond the burst waits %v, want 1s", d)
	}
	now = now.Add(3 * time.Second) // repays the debt and refills, but no more than the burst
	if d := l.reserve(burst); d != 0 {
		t.Fatalf("after refilling: %v", d)
	}
	if d := l.reserve(1); d <= 0 {
		t.Fatal("tokens accumulated past the burst")
	}
	if NewLimiter(0) != nil {
		t.Fatal("a zero rate should mean no limiter")
	}
	var none *Limiter
	if err := none.WaitN(context.Background(), 1<<30); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.WaitN(ctx, 1<<30); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitN on a cancelled context: %v", err)
	}
}

func TestParseRequest(t *testing.T) {
	d := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for line, ok := range map[string]bool{
		"HAVE " + d:            true,
		"WATCH " + d:           true,
		"GET " + d + " 7":      true,
		"GET " + d:             false,
		"GET " + d + " x":      false,
		"GET " + d + " -1":     false,
		"HAVE " + d + " 1":     false,
		"HAVE ../" + d[3:]:     false,
		"HAVE " + d[:63] + "G": false,
		"PUT " + d:             false,
		"":                     false,
	} {
		if _, err := parseRequest(line); (err == nil) != ok {
			t.Errorf("%q: %v", line, err)
		}
	}
	if got := parseTaken("3,x,70,5,-1", 64); len(got) != 2 || got[0] != 3 || got[1] != 5 {
		t.Errorf("parseTaken = %v", got)
	}
}

// testFetcher builds a fetcher's piece state by hand, for the picking rules.
func testFetcher(avail []int32) (*fetcher, *peer) {
	n := len(avail)
	f := &fetcher{
		n:         n,
		have:      artifact.NewBitfield(n),
		avail:     avail,
		inflight:  make([]int32, n),
		started:   make([]time.Time, n),
		peers:     map[string]*peer{},
		rng:       rand.New(rand.NewPCG(1, 2)),
		pieceTime: time.Second,
	}
	p := &peer{bits: artifact.NewBitfield(n), busy: map[int]time.Time{}, reqs: map[int]*pieceReq{}, wake: make(chan struct{})}
	for i := range n {
		p.bits.Set(i)
	}
	f.peers["p"] = p
	return f, p
}

func TestPickRarestFirst(t *testing.T) {
	now := time.Now()
	f, p := testFetcher([]int32{3, 1, 2, 1, 1, 2, 2, 3})
	f.have.Set(1)     // held
	f.inflight[3] = 1 // requested elsewhere
	if i, _, _ := f.pickLocked(p, now); i != 4 {
		t.Fatalf("picked %d, want 4: the only rarest piece neither held nor requested", i)
	}
	// Piece 4, which only p holds, is busy at p: rather than spend p's upload on a piece others also hold, the
	// worker waits until it may ask for piece 4 again.
	p.busy[4] = now.Add(time.Second)
	i, retry, _ := f.pickLocked(p, now)
	if i != -1 || retry != time.Second {
		t.Fatalf("picked %d (retry %v); want to wait for the busy rarest piece", i, retry)
	}
	delete(p.busy, 4)
	f.avail[4] = 2
	f.inflight[3] = 0
	f.have.Set(3)
	counts := map[int]int{}
	for range 300 {
		i, _, _ := f.pickLocked(p, now)
		counts[i]++
	}
	// Pieces 2, 4, 5 and 6 are the rarest left (2 holders each): every one of them comes up, nothing else.
	if len(counts) != 4 || counts[2] == 0 || counts[4] == 0 || counts[5] == 0 || counts[6] == 0 {
		t.Fatalf("picks among equals: %v", counts)
	}
}

func TestPickEndgameCopiesOnlyLatePieces(t *testing.T) {
	now := time.Now()
	f, p := testFetcher([]int32{2, 2, 2, 2})
	f.have.Set(0)
	f.have.Set(1)
	f.inflight[2], f.started[2] = 1, now.Add(-500*time.Millisecond) // on time
	f.inflight[3], f.started[3] = 1, now.Add(-5*time.Second)        // late
	if i, _, _ := f.pickLocked(p, now); i != 3 {
		t.Fatalf("endgame picked %d, want the late piece 3", i)
	}
	f.inflight[3] = maxCopies
	i, retry, _ := f.pickLocked(p, now)
	if i != -1 || retry != 1500*time.Millisecond {
		t.Fatalf("picked %d, retry %v; want to wait until piece 2 is late (1.5s)", i, retry)
	}
	p.reqs[2] = &pieceReq{cancel: func() {}}
	if i, _, _ := f.pickLocked(p, now.Add(time.Hour)); i != -1 {
		t.Fatalf("asked the same peer twice for piece %d", i)
	}
}

// TestPickLeavesSentPiecesToTheirReceivers: a peer holding the whole artifact that has sent piece i once is not
// asked for i again while it still has pieces it has sent to nobody, unless no other peer announces i within the
// grace (its receiver may have failed); once every piece has left it, it serves copies only of pieces no other
// connected peer can serve, and late pieces in the endgame.
func TestPickLeavesSentPiecesToTheirReceivers(t *testing.T) {
	now := time.Now()
	f, p := testFetcher([]int32{1, 1, 1, 1})
	p.sentAt = make([]time.Time, 4)
	for _, i := range []int{0, 1, 2} {
		p.sentAt[i] = now
		p.sentCount++
	}
	for range 50 {
		if i, _, _ := f.pickLocked(p, now); i != 3 {
			t.Fatalf("picked %d, want 3: the only piece the whole holder has sent to nobody", i)
		}
	}
	f.have.Set(3)
	// Only sent pieces are left, announced by nobody else yet: wait for their receivers, at most the grace.
	i, retry, _ := f.pickLocked(p, now)
	if i != -1 || retry != 2*f.pieceTime {
		t.Fatalf("picked %d, retry %v; want to wait %v for the receivers to announce", i, retry, 2*f.pieceTime)
	}
	// Another peer announces piece 1: still not asked of p. Past the grace, pieces 0 and 2 are asked of p.
	f.avail[1] = 2
	counts := map[int]int{}
	for range 100 {
		i, _, _ := f.pickLocked(p, now.Add(3*f.pieceTime))
		counts[i]++
	}
	if counts[1] != 0 || counts[0] == 0 || counts[2] == 0 {
		t.Fatalf("picks past the grace: %v; want 0 and 2, never 1 (another peer has it)", counts)
	}
	// Every piece has left p: it serves copies of the pieces nobody else can serve (super-seeding). A connected
	// peer q announces 0 and 2, so p is asked only for 1; once q has refused 0 as busy, p is asked for 0 too.
	p.sentAt[3] = now
	p.sentCount++
	q := &peer{bits: artifact.NewBitfield(4), active: true, busy: map[int]time.Time{}, reqs: map[int]*pieceReq{}, wake: make(chan struct{})}
	q.bits.Set(0)
	q.bits.Set(2)
	f.peers["q"] = q
	f.avail[0], f.avail[1], f.avail[2] = 2, 1, 2
	pick := func(at time.Time) map[int]int {
		counts := map[int]int{}
		for range 100 {
			i, _, _ := f.pickLocked(p, at)
			counts[i]++
		}
		return counts
	}
	if counts := pick(now); counts[1] != 100 {
		t.Fatalf("picks once every piece was sent: %v; want only 1, the piece no other peer announces", counts)
	}
	f.have.Set(1)
	q.busy[0] = now.Add(time.Second)
	if counts := pick(now); counts[0] != 100 {
		t.Fatalf("picks once q refused piece 0: %v; want only 0, never 2", counts)
	}
	// The endgame: every missing piece is in flight; a late request for 2 (at q) may be copied from p.
	f.have.Set(0)
	f.inflight[2], f.started[2] = 1, now.Add(-time.Minute)
	if i, _, _ := f.pickLocked(p, now); i != 2 {
		t.Fatalf("endgame picked %d from the seed, want a copy of the late piece 2", i)
	}
}

// TestPacingControlLaw: the delay-based pacer grows its rate while its uploads add little queueing delay (fast
// while there is almost none), never far past what the node actually sends, and shrinks it once the delay passes
// the target or packets are lost, settling where the delay sits at the target.
func TestPacingControlLaw(t *testing.T) {
	const mbit = 1e6 / 8
	step := func(rate float64, delay time.Duration, lost bool, used float64, slow bool) float64 {
		r, _ := nextRate(rate, delay, lost, used, slow)
		return r / mbit
	}
	if r := step(20*mbit, 0, false, 20*mbit, true); r != 25 {
		t.Errorf("slow start, no queue: %.2f Mbit/s, want 25", r)
	}
	if _, slow := nextRate(20*mbit, pacingTarget/2, false, 20*mbit, true); slow {
		t.Error("the slow start goes on at half the target delay")
	}
	if r := step(20*mbit, 0, false, 20*mbit, false); r != 21 {
		t.Errorf("no queue: %.2f Mbit/s, want 5 %% more", r)
	}
	if r := step(20*mbit, pacingTarget/2, false, 20*mbit, false); r != 20.5 {
		t.Errorf("half the target: %.2f Mbit/s, want 2.5 %% more", r)
	}
	if r := step(100*mbit, 0, false, 10*mbit, false); r != 20 {
		t.Errorf("sending 10 Mbit/s of a 100 Mbit/s allowance: %.2f Mbit/s, want twice what is sent (floor 20)", r)
	}
	if r := step(20*mbit, pacingTarget, false, 20*mbit, false); r != 20 {
		t.Errorf("at the target: %.2f Mbit/s, want it unchanged", r)
	}
	if r := step(20*mbit, 2*pacingTarget, false, 20*mbit, false); r != 18 {
		t.Errorf("twice the target: %.2f Mbit/s, want 10 %% less", r)
	}
	if r := step(20*mbit, 0, true, 20*mbit, true); r != 16 {
		t.Errorf("a loss: %.2f Mbit/s, want 20 %% less", r)
	}
	if r := step(pacingMinRate, 10*pacingTarget, true, 0, false); r != pacingMinRate/mbit {
		t.Errorf("floor: %.3f Mbit/s", r)
	}
	// A link of 30 Mbit/s whose queue holds 10 ms per Mbit/s sent past it: the rate settles where the delay is
	// the target (32.5 Mbit/s in this model) and stays there.
	rate, slow := float64(pacingStart), true
	var seen []float64
	for k := range 100 {
		delay := time.Duration(max(0, (rate-30*mbit)/mbit*10)) * time.Millisecond
		rate, slow = nextRate(rate, delay, false, rate, slow)
		if k >= 50 {
			seen = append(seen, rate/mbit)
		}
	}
	if lo, hi := slices.Min(seen), slices.Max(seen); lo < 31.5 || hi > 33.5 {
		t.Errorf("on a modelled 30 Mbit/s link the rate moved between %.1f and %.1f Mbit/s, want it settled near 32.5", lo, hi)
	}
}

// TestStallWindow: a server gives up on a chunk after sendStall, or, on an uplink so slow that a chunk usually
// takes longer, after four chunk times.
func TestStallWindow(t *testing.T) {
	s := &Server{}
	if got := s.stallWindow(256 << 10); got != sendStall {
		t.Errorf("no send time yet: %v, want %v", got, sendStall)
	}
	s.sendTime = 400 * time.Millisecond // 256 KiB: a fast link
	if got := s.stallWindow(256 << 10); got != sendStall {
		t.Errorf("fast link: %v, want %v", got, sendStall)
	}
	s.sendTime = 8 * time.Second // 256 KiB in 8 s: a 64 KiB chunk takes 2 s
	if got := s.stallWindow(256 << 10); got != 8*time.Second {
		t.Errorf("slow link: %v, want four chunk times, 8s", got)
	}
}
