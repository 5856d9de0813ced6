package deployer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shoal-ci/shoal/errs"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// execLogRPC is the node-to-node method that reads a server's exec log of an environment, as build_log reads
// a build's log: the route answers on any node and asks the server over the mesh.
const execLogRPC = "exec_log"

// maxExecLogWait bounds how long one exec_log RPC waits for output; a follower asks again.
const maxExecLogWait = 10 * time.Second

// execLogPoll is how often a waiting read looks at the file's size again.
const execLogPoll = 200 * time.Millisecond

// DefaultLogTail is how many lines GET /v1/envs/{env}/logs shows without ?tail.
const DefaultLogTail = 100

type execLogRequest struct {
	App    string `json:"app"`
	Env    string `json:"env"`
	Offset int64  `json:"offset"` // < 0: the last Tail lines
	Tail   int    `json:"tail"`
	WaitMS int64  `json:"wait_ms"`
}

func (d *Deployer) serveExecLogRPC(ctx context.Context, _ string, body json.RawMessage) (any, error) {
	var req execLogRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, errs.New(errs.BadRequest, "exec_log request: %v", err)
	}
	if !nameOK(req.App) || !nameOK(req.Env) {
		return nil, errs.New(errs.BadRequest, "exec_log request names app %q, environment %q", req.App, req.Env)
	}
	return d.readExecLogWait(ctx, req.App, req.Env, req.Offset, req.Tail, min(time.Duration(req.WaitMS)*time.Millisecond, maxExecLogWait))
}

// nameOK keeps a name from naming a path.
func nameOK(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\\\x00")
}

// readExecLogWait reads this node's exec log of an environment; with wait > 0 and nothing new, it waits up to
// wait for more.
func (d *Deployer) readExecLogWait(ctx context.Context, app, env string, off int64, tail int, wait time.Duration) (execLogChunk, error) {
	path := d.EnvDir(app, env) + "/" + execLogName
	deadline := time.Now().Add(wait)
	for {
		c, err := readExecLog(path, off, tail)
		if err != nil || len(c.Data) > 0 || off < 0 || c.Next != off || !time.Now().Before(deadline) {
			return c, err
		}
		t := time.NewTimer(execLogPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return c, nil
		case <-d.ctx.Done():
			t.Stop()
			return c, nil
		case <-t.C:
		}
	}
}

// fetchExecLog reads server on's exec log of an environment: locally, or over the exec_log RPC.
func (d *Deployer) fetchExecLog(ctx context.Context, on, app, env string, off int64, tail int, wait time.Duration) (execLogChunk, error) {
	if on == d.n.Name() {
		return d.readExecLogWait(ctx, app, env, off, tail, wait)
	}
	addr := ""
	for _, m := range d.n.Members() {
		if m.Name == on && (m.Status == node.StatusAlive || m.Status == node.StatusSuspect) {
			addr = m.Addr
		}
	}
	if addr == "" {
		return execLogChunk{}, fmt.Errorf("server %s is not up, and the app's output lives on it: retry when it is back", on)
	}
	ctx, cancel := context.WithTimeout(ctx, wait+10*time.Second)
	defer cancel()
	var c execLogChunk
	req := execLogRequest{App: app, Env: env, Offset: off, Tail: tail, WaitMS: wait.Milliseconds()}
	if err := d.n.Endpoint().Call(ctx, addr, execLogRPC, req, &c); err != nil {
		return execLogChunk{}, fmt.Errorf("read the app's output from %s: %w", on, err)
	}
	return c, nil
}

// getExecLogs serves GET /v1/envs/{env}/logs: the Exec processes' stdout and stderr on the environment's
// servers (or ?server=S), the last ?tail=N lines (default 100, 0: up to 1 MiB), and with ?follow=1 what they
// write next, until the client goes. With several servers each line starts with "[server] ".
func (d *Deployer) getExecLogs(w http.ResponseWriter, r *http.Request) error {
	if err := d.srv.BeginRead(r); err != nil {
		return err
	}
	q := r.URL.Query()
	tail := DefaultLogTail
	if v := q.Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return errs.New(errs.BadRequest, "tail %q is not a number of lines (0 means all that fits in 1 MiB)", v)
		}
		tail = n
	}
	var e raftfsm.Env
	var ok bool
	d.n.FSM().Read(func(s *raftfsm.State) {
		if cur := s.Envs[r.PathValue("env")]; cur != nil {
			e, ok = *cur, true
		}
	})
	if !ok {
		return errs.New(errs.NotFound, "environment %q does not exist: `node env list` shows them", r.PathValue("env"))
	}
	servers := EnvServers(&e, d.n.Members())
	if s := q.Get("server"); s != "" {
		servers = []string{s}
	}
	if len(servers) == 0 {
		return errs.New(errs.NotFound, "environment %s has no server up: name one with --server", e.Name)
	}
	follow := false
	switch q.Get("follow") {
	case "1", "true", "yes":
		follow = true
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Shoal-Log-Servers", strings.Join(servers, ","))
	if !follow {
		var out bytes.Buffer
		for _, s := range servers {
			c, err := d.fetchExecLog(r.Context(), s, e.App, e.Name, -1, tail, 0)
			if err != nil {
				if len(servers) == 1 {
					return errs.New(errs.BadGateway, "%v", err)
				}
				c.Data = []byte(fmt.Sprintf("--- %v\n", err))
			}
			if c.Missing && len(servers) == 1 {
				return errs.New(errs.NotFound, "server %s has no output of environment %s: its app never ran there (`node env show %s` lists the servers)", s, e.Name, e.Name)
			}
			writeLines(&out, prefixOf(s, servers), c.Data)
		}
		w.WriteHeader(http.StatusOK)
		_, err := w.Write(out.Bytes())
		return err
	}
	return d.followExecLogs(w, r, &e, servers, tail)
}

// followExecLogs streams every server's exec log, line by line, until the client or the node goes.
func (d *Deployer) followExecLogs(w http.ResponseWriter, r *http.Request, e *raftfsm.Env, servers []string, tail int) error {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(d.ctx, cancel)
	defer stop()
	go func() {
		select {
		case <-d.n.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	rc := http.NewResponseController(w)
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	var mu sync.Mutex
	emit := func(prefix string, data []byte) bool {
		mu.Lock()
		defer mu.Unlock()
		var b bytes.Buffer
		writeLines(&b, prefix, data)
		if _, err := w.Write(b.Bytes()); err != nil {
			cancel()
			return false
		}
		_ = rc.Flush()
		return true
	}
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prefix := prefixOf(s, servers)
			off := int64(-1)
			var partial []byte // a line not yet ended: held back so that servers' lines do not interleave
			failing := false
			for ctx.Err() == nil {
				c, err := d.fetchExecLog(ctx, s, e.App, e.Name, off, tail, maxExecLogWait)
				if err != nil {
					if !failing && ctx.Err() == nil {
						emit(prefix, []byte(fmt.Sprintf("--- %v (still trying)\n", err)))
					}
					failing = true
					t := time.NewTimer(time.Second)
					select {
					case <-ctx.Done():
					case <-t.C:
					}
					t.Stop()
					continue
				}
				failing = false
				if c.Next < off {
					partial = append(partial, c.Data...)
					partial = append(partial, "\n--- (the log was rotated)\n"...)
				} else {
					partial = append(partial, c.Data...)
				}
				off = c.Next
				if i := bytes.LastIndexByte(partial, '\n'); i >= 0 {
					if !emit(prefix, partial[:i+1]) {
						return
					}
					partial = append([]byte(nil), partial[i+1:]...)
				}
			}
		}()
	}
	wg.Wait()
	return nil
}

func prefixOf(server string, servers []string) string {
	if len(servers) < 2 {
		return ""
	}
	return "[" + server + "] "
}

// writeLines copies data to b with prefix before every line, ending with a newline.
func writeLines(b *bytes.Buffer, prefix string, data []byte) {
	if len(data) == 0 {
		return
	}
	if prefix == "" {
		b.Write(data)
	} else {
		for _, line := range bytes.SplitAfter(data, []byte("\n")) {
			if len(line) > 0 {
				b.WriteString(prefix)
				b.Write(line)
			}
		}
	}
	if data[len(data)-1] != '\n' {
		b.WriteByte('\n')
	}
}
