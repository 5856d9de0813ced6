package builder

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

// rpcBuildLog reads a build log from the node that ran the build.
const rpcBuildLog = "build_log"

// maxLogWait bounds how long one build_log RPC waits for output; a follower asks again.
const maxLogWait = 10 * time.Second

type logRequest struct {
	ID     string `json:"id"`
	Offset int64  `json:"offset"`
	// WaitMS > 0 waits that long for output when there is none yet.
	WaitMS int64 `json:"wait_ms"`
}

func (s *Service) handleLogRPC(ctx context.Context, _ string, body json.RawMessage) (any, error) {
	var req logRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, badRequest("build_log request: %v", err)
	}
	if _, ok := s.build(req.ID); !ok || !buildIDRE.MatchString(req.ID) {
		return nil, notFound("build %q does not exist", req.ID)
	}
	if req.Offset < 0 {
		return nil, badRequest("log offset %d is negative", req.Offset)
	}
	wait := min(time.Duration(req.WaitMS)*time.Millisecond, maxLogWait)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	return s.logs.read(ctx, req.ID, req.Offset, maxLogChunk, wait)
}

// fetchLog reads build id's log as written on the node named on: locally, or over the build_log RPC.
func (s *Service) fetchLog(ctx context.Context, on, id string, off int64, wait time.Duration) (logChunk, error) {
	if on == s.n.Name() {
		return s.logs.read(ctx, id, off, maxLogChunk, wait)
	}
	addr := ""
	for _, m := range s.n.Members() {
		if m.Name == on {
			addr = m.Addr
		}
	}
	if addr == "" {
		return logChunk{}, fmt.Errorf("the log of build %s is on node %s, which this node does not know", id, on)
	}
	ctx, cancel := context.WithTimeout(ctx, wait+10*time.Second)
	defer cancel()
	var c logChunk
	if err := s.n.Endpoint().Call(ctx, addr, rpcBuildLog, logRequest{ID: id, Offset: off, WaitMS: wait.Milliseconds()}, &c); err != nil {
		return logChunk{}, fmt.Errorf("the log of build %s is on node %s, which cannot be reached: %w", id, on, err)
	}
	return c, nil
}

// getLog serves GET /v1/builds/{id}/log. Without follow it answers the log from ?offset (at most 1 MiB; the
// X-Shoal-Log-Next header says where to continue). With ?follow=1 it streams the log as the build writes it and
// ends when the build has ended and its log is read to the end.
func (s *Service) getLog(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	b, ok := s.buildFresh(r.Context(), id)
	if !ok {
		return notFound("build %q does not exist", id)
	}
	q := r.URL.Query()
	var off int64
	if v := q.Get("offset"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return badRequest("offset %q is not a byte offset", v)
		}
		off = n
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	switch q.Get("follow") {
	case "1", "true", "yes":
		return s.followLog(w, r, b, off)
	}
	var c logChunk
	if b.Node != "" {
		var err error
		if c, err = s.fetchLog(r.Context(), b.Node, id, off, 0); err != nil {
			return err
		}
	} else {
		c.Next = off
	}
	w.Header().Set("X-Shoal-Log-Node", b.Node)
	w.Header().Set("X-Shoal-Log-Next", strconv.FormatInt(c.Next, 10))
	w.Header().Set("X-Shoal-Build-State", b.State)
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(c.Data)
	return err
}

// followLog streams a build's log until the build ends. A build that moves to another node (a new leader runs
// it again) continues with that node's log after a marker line.
func (s *Service) followLog(w http.ResponseWriter, r *http.Request, b raftfsm.Build, off int64) error {
	s.watchShutdown(r)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.streams, cancel)
	defer stop()
	rc := http.NewResponseController(w)
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()

	on := b.Node
	for ctx.Err() == nil {
		changed := s.n.FSM().Changed()
		cur, ok := s.build(b.ID)
		if !ok {
			fmt.Fprintf(w, "\n--- build %s was deleted ---\n", b.ID)
			return nil
		}
		if cur.Node != "" && cur.Node != on {
			if on != "" {
				fmt.Fprintf(w, "\n--- build %s runs again on node %s (attempt %d) ---\n", cur.ID, cur.Node, cur.Attempt)
			}
			on, off = cur.Node, 0
		}
		if on == "" || (cur.Node == "" && !cur.Finished()) {
			// Queued (or queued again after a leader change): nothing to read until a node starts it.
			if cur.Finished() {
				return nil
			}
			if !waitAny(ctx, changed, time.Second) {
				return nil
			}
			continue
		}
		c, err := s.fetchLog(ctx, on, cur.ID, off, maxLogWait)
		if err != nil {
			// The node holding the log may be down: keep following; the build's record tells when to stop.
			if cur.Finished() {
				fmt.Fprintf(w, "\n--- %v ---\n", err)
				return nil
			}
			if !waitAny(ctx, changed, time.Second) {
				return nil
			}
			continue
		}
		if len(c.Data) > 0 {
			if _, err := w.Write(c.Data); err != nil {
				return nil
			}
			_ = rc.Flush()
			off = c.Next
			continue
		}
		if !c.Active {
			// Nothing more will be written here: done if the build has ended, else it waits for a new start.
			if cur, ok := s.build(b.ID); !ok || cur.Finished() {
				return nil
			}
			if !waitAny(ctx, changed, time.Second) {
				return nil
			}
		}
	}
	return nil
}

// waitAny waits for ch, or at most d (a safety net against a missed wake-up); false when ctx ended.
func waitAny(ctx context.Context, ch <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
		return false
	}
	return true
}
