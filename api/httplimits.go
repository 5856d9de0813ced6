package api

import (
	"container/list"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shoal-ci/shoal/errs"
)

// What an HTTP client, authenticated or not, can make a node hold.
const (
	httpIdleTimeout    = 60 * time.Second
	httpMaxHeaderBytes = 64 << 10
	// httpMaxConnsPerSource bounds the connections from one IP address.
	httpMaxConnsPerSource = 256
	// httpMaxConnsCeiling bounds all connections; a node with a low fd limit keeps half of its fds for the rest.
	httpMaxConnsCeiling = 4096
	// maxWatchersPerToken and maxWatchersPerNode bound the blocking reads (?index=) and event streams open at once.
	maxWatchersPerToken = 32
	maxWatchersPerNode  = 512
)

// httpMaxConns is the connection cap: httpMaxConnsCeiling, or half the process's fd limit if that is lower.
func httpMaxConns() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur/2 < httpMaxConnsCeiling {
		return max(int(rl.Cur/2), 64)
	}
	return httpMaxConnsCeiling
}

// connLimiter caps the HTTP connections a node holds, in total and per source address. A connection over the
// per-source cap is answered 429 and closed; at the total cap, the connection idle the longest is closed to make
// room (an idle keep-alive connection is the cheapest to lose), and only when none is idle is the new one refused.
type connLimiter struct {
	net.Listener
	log       *slog.Logger
	total     int
	perSource int

	mu       sync.Mutex
	open     int
	bySource map[netip.Addr]int
	idle     *list.List // of *limitedConn, oldest first
	refused  atomic.Int64
	evicted  atomic.Int64
}

func newConnLimiter(ln net.Listener, total, perSource int, log *slog.Logger) *connLimiter {
	return &connLimiter{Listener: ln, log: log, total: total, perSource: perSource,
		bySource: map[netip.Addr]int{}, idle: list.New()}
}

type limitedConn struct {
	net.Conn
	l        *connLimiter
	src      netip.Addr
	idleElem *list.Element // set while idle, under l.mu
	closed   bool          // under l.mu
}

func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := netip.Addr{}
		if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
			src = ap.Addr().Unmap()
		}
		l.mu.Lock()
		if l.bySource[src] >= l.perSource {
			l.mu.Unlock()
			l.refuse(c, http.StatusTooManyRequests, fmt.Sprintf("this address has %d connections open to this node, the most allowed: reuse them", l.perSource))
			continue
		}
		var victim *limitedConn
		if l.open >= l.total {
			if e := l.idle.Front(); e != nil {
				victim = e.Value.(*limitedConn)
				l.forget(victim)
			} else {
				l.mu.Unlock()
				l.refuse(c, http.StatusServiceUnavailable, "this node has as many HTTP connections as it serves: retry in a moment")
				continue
			}
		}
		lc := &limitedConn{Conn: c, l: l, src: src}
		l.open++
		l.bySource[src]++
		l.mu.Unlock()
		if victim != nil {
			l.evicted.Add(1)
			_ = victim.Conn.Close()
		}
		return lc, nil
	}
}

// refuse answers a connection it will not serve with a short HTTP error, so the client learns why, and closes it.
func (l *connLimiter) refuse(c net.Conn, status int, msg string) {
	if l.refused.Add(1)%1000 == 1 {
		l.log.Warn("refusing HTTP connections", "remote", c.RemoteAddr().String(), "reason", msg, "refused_total", l.refused.Load())
	}
	body := fmt.Sprintf("{\"code\":\"too_many_connections\",\"error\":%q}\n", msg)
	_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
	_ = c.Close()
}

// forget drops c from the counts, once; l.mu is held.
func (l *connLimiter) forget(c *limitedConn) {
	if c.closed {
		return
	}
	c.closed = true
	if c.idleElem != nil {
		l.idle.Remove(c.idleElem)
		c.idleElem = nil
	}
	l.open--
	if l.bySource[c.src]--; l.bySource[c.src] <= 0 {
		delete(l.bySource, c.src)
	}
}

func (c *limitedConn) Close() error {
	c.l.mu.Lock()
	c.l.forget(c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// connState is the http.Server's ConnState hook: it keeps the list of idle connections.
func (l *connLimiter) connState(nc net.Conn, st http.ConnState) {
	c, ok := nc.(*limitedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st {
	case http.StateIdle:
		if !c.closed && c.idleElem == nil {
			c.idleElem = l.idle.PushBack(c)
		}
	case http.StateActive:
		if c.idleElem != nil {
			l.idle.Remove(c.idleElem)
			c.idleElem = nil
		}
	case http.StateClosed, http.StateHijacked:
		l.forget(c)
	}
}

// openConns returns the connections held now.
func (l *connLimiter) openConns() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// watchers counts the requests that wait for the state to change (blocking reads and event streams), per token.
type watchers struct {
	mu      sync.Mutex
	total   int
	byToken map[string]int
}

// acquire takes a watcher slot for token (its id; "" for none) or answers 429; release gives it back.
func (w *watchers) acquire(token, node string) (release func(), err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byToken == nil {
		w.byToken = map[string]int{}
	}
	if w.byToken[token] >= maxWatchersPerToken {
		return nil, errs.New(errs.TooManyWatchers,
			"this token has %d blocking reads and event streams open on node %s, the most allowed: close some, or use one event stream (GET /v1/events) and read on its events", maxWatchersPerToken, node)
	}
	if w.total >= maxWatchersPerNode {
		return nil, errs.New(errs.TooManyWatchers,
			"node %s has %d blocking reads and event streams open, the most it serves: retry later or ask another node", node, maxWatchersPerNode)
	}
	w.byToken[token]++
	w.total++
	var once sync.Once
	return func() {
		once.Do(func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.total--
			if w.byToken[token]--; w.byToken[token] <= 0 {
				delete(w.byToken, token)
			}
		})
	}, nil
}

// watching returns the watcher slots taken now.
func (w *watchers) watching() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.total
}
