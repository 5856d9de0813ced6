package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

// eventsKeepAlive is how often an idle event stream sends a comment, so proxies keep it open.
const eventsKeepAlive = 15 * time.Second

// getEvents serves GET /v1/events, a server-sent event stream: one "state" event carrying the state's index each
// time the replicated state changes (coalesced: a client that reads slowly gets the latest index, not every
// step). The web dashboard refreshes what it shows on each event; scripts can block on it instead of polling.
func (srv *Server) getEvents(w http.ResponseWriter, r *http.Request) error {
	flusher, ok := w.(http.Flusher)
	if !ok {
		return fmt.Errorf("this connection cannot stream events")
	}
	release, err := srv.watchers.acquire(tokenID(r), srv.n.Name())
	if err != nil {
		return err
	}
	defer release()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// The server's write timeout does not apply to a stream that lives as long as the client wants.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})

	var last uint64
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		fmt.Sscan(v, &last)
	}
	send := func(index uint64) error {
		if _, err := fmt.Fprintf(w, "id: %d\nevent: state\ndata: {\"index\":%d,\"node\":%q}\n\n", index, index, srv.n.Name()); err != nil {
			return err
		}
		flusher.Flush()
		return nil
	}
	// A client that reconnects with Last-Event-ID (as EventSource does) gets the current index at once only if it
	// has not seen it; anyone else gets it at once, to know where the state stands.
	if cur := srv.fsm.Index(); last == 0 || cur > last {
		if err := send(cur); err != nil {
			return nil
		}
		last = cur
	}
	// End with the request or with the server, whichever comes first.
	ctx, stop := context.WithCancel(r.Context())
	defer stop()
	defer context.AfterFunc(srv.ctx, stop)()
	for {
		waitCtx, cancel := context.WithTimeout(ctx, eventsKeepAlive)
		idx := srv.fsm.Wait(waitCtx, last)
		cancel()
		if ctx.Err() != nil || !srv.tokenValid(r) {
			return nil // the client left, the node is closing, or the stream's token was revoked
		}
		if idx > last {
			last = idx
			if err := send(idx); err != nil {
				return nil
			}
			continue
		}
		if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
			return nil
		}
		flusher.Flush()
	}
}

// tokenValid reports whether the token that authorised r still exists (a revoked token ends its streams).
func (srv *Server) tokenValid(r *http.Request) bool {
	tok := TokenOf(r)
	if tok == nil {
		return true
	}
	ok := false
	srv.fsm.Read(func(s *raftfsm.State) { ok = s.Tokens[tok.ID] != nil })
	return ok
}

func (srv *Server) apiEvents() {
	srv.Handle("GET /v1/events", raftfsm.RoleReader, srv.getEvents)
}
