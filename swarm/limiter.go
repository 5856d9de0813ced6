package swarm

import (
	"context"
	"sync"
	"time"
)

// Limiter is a token bucket in bytes, shared by every transfer of one direction on a node (the node's upload or
// download limit). Callers take tokens in chunks of at most ioChunk, so a transfer never waits for more than a
// chunk's worth at a time.
type Limiter struct {
	mu     sync.Mutex
	rate   float64 // bytes per second
	burst  float64
	tokens float64
	last   time.Time
	now    func() time.Time
}

// ioChunk is the unit rate-limited transfers are written and read in.
const ioChunk = 64 << 10

// NewLimiter returns a limiter of bytesPerSecond with a burst of a tenth of a second (at least one chunk), or nil
// (no limit) if bytesPerSecond is not positive.
func NewLimiter(bytesPerSecond int64) *Limiter {
	if bytesPerSecond <= 0 {
		return nil
	}
	burst := max(float64(bytesPerSecond)/10, ioChunk)
	return &Limiter{rate: float64(bytesPerSecond), burst: burst, tokens: burst, now: time.Now}
}

// SetRate changes the rate (and the burst with it, a tenth of a second's worth, at least one chunk); tokens already
// taken stay taken.
func (l *Limiter) SetRate(bytesPerSecond int64) {
	if l == nil || bytesPerSecond <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rate = float64(bytesPerSecond)
	l.burst = max(l.rate/10, ioChunk)
	l.tokens = min(l.tokens, l.burst)
}

// reserve takes n tokens, going into debt if need be, and returns how long the caller must wait before using them.
func (l *Limiter) reserve(n int) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	}
	l.last = now
	l.tokens -= float64(n)
	if l.tokens >= 0 {
		return 0
	}
	return time.Duration(-l.tokens / l.rate * float64(time.Second))
}

// WaitN blocks until n bytes may pass. A nil Limiter never blocks.
func (l *Limiter) WaitN(ctx context.Context, n int) error {
	if l == nil {
		return ctx.Err()
	}
	d := l.reserve(n)
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
