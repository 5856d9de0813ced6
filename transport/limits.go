package transport

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// What a caller can make an endpoint spend. The join ALPN is open to anyone who can send UDP to the node, so its
// limits are tight: a join request is a name, a token and a public key, well under a kilobyte.
const (
	// JoinMaxFrame bounds a request frame on the join ALPN.
	JoinMaxFrame = 64 << 10
	// DefaultRPCMaxFrame bounds a request frame of a method registered with HandleRPC; HandleRPCLimit sets another.
	DefaultRPCMaxFrame = 64 << 10
	// joinStreamsPerConn is how many join requests one connection may have in flight; more are reset.
	joinStreamsPerConn = 2
	// joinConnsMax is how many join connections the endpoint serves at once; more are refused.
	joinConnsMax = 64
	// Handshakes per source IP: a bucket of handshakeBurst refilled at handshakeRate per second. A peer that
	// exceeds it must prove its address (a QUIC Retry) and then draws from a second bucket of the same size that
	// spoofed packets cannot drain; beyond that its handshakes are refused until the bucket refills.
	handshakeBurst = 64
	handshakeRate  = 32
	// maxTrackedSources bounds the limiter's table; a full table forgets buckets that have refilled.
	maxTrackedSources = 1 << 16
)

// sourceLimiter is a token bucket per source IP.
type sourceLimiter struct {
	mu      sync.Mutex
	burst   float64
	rate    float64 // tokens per second
	buckets map[netip.Addr]*bucket
	now     func() time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newSourceLimiter(burst, rate float64) *sourceLimiter {
	return &sourceLimiter{burst: burst, rate: rate, buckets: map[netip.Addr]*bucket{}, now: time.Now}
}

// allow takes a token for addr's IP and reports whether there was one.
func (l *sourceLimiter) allow(addr net.Addr) bool {
	ip := sourceIP(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.buckets[ip]
	if b == nil {
		if len(l.buckets) >= maxTrackedSources {
			l.sweep(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[ip] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep drops the buckets that are full again: forgetting them changes nothing.
func (l *sourceLimiter) sweep(now time.Time) {
	for ip, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.rate >= l.burst {
			delete(l.buckets, ip)
		}
	}
}

func sourceIP(addr net.Addr) netip.Addr {
	if ua, ok := addr.(*net.UDPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ua.IP); ok {
			return ip.Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
