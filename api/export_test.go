package api

import (
	"net"
	"net/http"
)

// Internals the external tests (package api_test) use.
const (
	HTTPMaxConnsPerSource = httpMaxConnsPerSource
	MaxWatchersPerToken   = maxWatchersPerToken
)

var NewConnLimiter = newConnLimiter

// ConnState is connState.
func (l *connLimiter) ConnState(c net.Conn, st http.ConnState) { l.connState(c, st) }

// OpenConns returns the HTTP connections srv holds now.
func (srv *Server) OpenConns() int { return srv.httpConns.openConns() }

// OpenConns is openConns.
func (l *connLimiter) OpenConns() int { return l.openConns() }

// Evicted counts the idle connections l closed to make room.
func (l *connLimiter) Evicted() int64 { return l.evicted.Load() }
