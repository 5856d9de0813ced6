package builder

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/artifact"
	"github.com/shoal-ci/shoal/internal/proc"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// Options tune a Service. The zero value is the production default.
type Options struct {
	// Store is the node's artifact store. One store per data dir: pass the one the rest of the node shares
	// (the piece exchange serves from it); nil opens <data dir>/blobs for the builder alone.
	Store *artifact.Store
	// MaxConcurrent is how many builds the leader runs at once, across apps (default 2). Builds of one app and
	// branch always run one at a time.
	MaxConcurrent int
	// PieceSize cuts release archives into pieces of this size (default DefaultPieceSize).
	PieceSize int64
	// KillGrace is the time a build script's process group has between SIGTERM and SIGKILL (default
	// DefaultKillGrace).
	KillGrace time.Duration
	// LeaseTTL is how long a build server's lease on a build lasts without renewal before the leader queues the
	// build again (default DefaultLeaseTTL); build servers renew it every third of it.
	LeaseTTL time.Duration
	// Logger defaults to the node's logger.
	Logger *slog.Logger
}

// Service is the builder attached to one node: it serves the build, release, log and webhook API on every node
// and, while the node leads, runs queued builds and polls repositories.
type Service struct {
	api   *api.RouteGroup // its API routes, taken away by Close
	n     *node.Node
	srv   *api.Server
	log   *slog.Logger
	opts  Options
	store *artifact.Store
	m     *metrics
	logs  *logStore
	// dir is <data dir>/builds: build logs, and work/ with one directory per running build.
	dir     string
	workDir string

	// ctx ends at Close; results that are already computed are published under it even after leadership
	// ends, because the FSM, not this node, decides whether they count.
	ctx    context.Context
	cancel context.CancelFunc
	// streams ends when the node's HTTP server shuts down (or at Close), so log followers let it stop.
	streams      context.Context
	stopStreams  context.CancelFunc
	shutdownOnce sync.Once

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // leader hooks running on this Service's behalf
}

// DefaultLeaseTTL is how long a build server's silence lasts before its builds are queued again.
const DefaultLeaseTTL = 10 * time.Second

const (
	logDirName  = "builds"
	workDirName = "work"
)

// Attach starts the builder on n: it registers the API routes (on srv, n's API server), the build_log RPC, the
// metrics and the leader hooks that run builds and poll repositories. Close stops what it started; the node's
// own Close also ends the leader hooks.
func Attach(n *node.Node, srv *api.Server, opts Options) (*Service, error) {
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = 2
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = DefaultLeaseTTL
	}
	if opts.KillGrace <= 0 {
		opts.KillGrace = DefaultKillGrace
	}
	if _, err := checkPieceSize(opts.PieceSize); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = n.Logger()
	}
	s := &Service{n: n, srv: srv, opts: opts, log: opts.Logger.With("component", "builder"),
		dir: filepath.Join(n.DataDir(), logDirName)}
	s.workDir = filepath.Join(s.dir, workDirName)
	// Work dirs belong to builds that ran in an earlier life of this node; their builds were requeued by the
	// leader that followed, so what is left is only disk space, and perhaps processes.
	stopOrphans(s.workDir, s.log)
	if err := os.RemoveAll(s.workDir); err != nil {
		return nil, fmt.Errorf("clear old build work dirs in %s: %w", s.workDir, err)
	}
	if err := os.MkdirAll(s.workDir, 0o700); err != nil {
		return nil, fmt.Errorf("create the build dir: %w", err)
	}
	s.store = opts.Store
	if s.store == nil {
		st, err := artifact.New(filepath.Join(n.DataDir(), "blobs"), s.log.With("component", "artifact"))
		if err != nil {
			return nil, err
		}
		s.store = st
	}
	m, err := newMetrics(n.Registry(), n.FSM())
	if err != nil {
		return nil, err
	}
	s.m = m
	s.logs = newLogStore(s.dir)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.streams, s.stopStreams = context.WithCancel(s.ctx)

	s.routes()
	n.Endpoint().HandleRPC(rpcBuildLog, s.handleLogRPC)
	n.OnLeader(s.lead)
	n.OnLeader(s.poll)
	if _, ok := n.Tags()[TagBuild]; ok {
		s.wg.Add(1)
		go s.work()
	}
	s.wg.Add(1)
	go s.pruneLogsLoop()
	return s, nil
}

// Close stops the leader work this Service runs (builds in progress are interrupted and left to the next
// leader's epoch, which requeues them) and ends log streams. The routes stay on the node's mux: net/http
// cannot unregister them.
func (s *Service) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.api.Close()
	s.cancel()
	s.wg.Wait()
	return nil
}

// Store returns the artifact store releases are packaged into.
func (s *Service) Store() *artifact.Store { return s.store }

// enter registers a goroutine started for the Service by the node (a leader hook); false once closed.
func (s *Service) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// watchShutdown ties log streams to the node's HTTP server: http.Server.Shutdown waits for active handlers,
// and a follower of a long build would otherwise hold the node's shutdown until its deadline.
func (s *Service) watchShutdown(r *http.Request) {
	srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server)
	if !ok {
		return
	}
	s.shutdownOnce.Do(func() { srv.RegisterOnShutdown(s.stopStreams) })
}

// buildIDRE is the shape of the ids raftfsm gives builds ("<app>-<n>"); an id from a request or a peer must
// match it before it names a file.
var buildIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}-[0-9]+$`)

// build returns a copy of the build with id, if it exists.
func (s *Service) build(id string) (raftfsm.Build, bool) {
	var (
		b  raftfsm.Build
		ok bool
	)
	s.n.FSM().Read(func(st *raftfsm.State) {
		if p := st.Builds[id]; p != nil {
			b, ok = *p, true
		}
	})
	return b, ok
}

// buildFresh is build, looked up again after catching up with the leader when this node does not know id yet.
func (s *Service) buildFresh(ctx context.Context, id string) (raftfsm.Build, bool) {
	if b, ok := s.build(id); ok {
		return b, ok
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if s.n.ConsistentRead(ctx) != nil {
		return raftfsm.Build{}, false
	}
	return s.build(id)
}

// app returns a copy of the app named name, if it exists.
func (s *Service) app(name string) (raftfsm.App, bool) {
	var (
		a  raftfsm.App
		ok bool
	)
	s.n.FSM().Read(func(st *raftfsm.State) {
		if p := st.Apps[name]; p != nil {
			a, ok = *p, true
			a.BuildVars = cloneVars(p.BuildVars)
		}
	})
	return a, ok
}

// appFresh is app, but a name this node does not know yet is looked up again after catching up with the
// leader: an app created through another node a moment ago may not have reached this one.
func (s *Service) appFresh(ctx context.Context, name string) (raftfsm.App, bool) {
	if a, ok := s.app(name); ok {
		return a, ok
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if s.n.ConsistentRead(ctx) != nil {
		return raftfsm.App{}, false
	}
	return s.app(name)
}

func cloneVars(in map[string]raftfsm.Var) map[string]raftfsm.Var {
	if in == nil {
		return nil
	}
	out := make(map[string]raftfsm.Var, len(in))
	for k, v := range in {
		out[k] = v
	}
	return out
}

func notFound(format string, a ...any) error {
	return &raftfsm.Error{Code: raftfsm.KindNotFound, Message: fmt.Sprintf(format, a...)}
}

func badRequest(format string, a ...any) error {
	return &raftfsm.Error{Code: raftfsm.KindBadRequest, Message: fmt.Sprintf(format, a...)}
}

// stopOrphans kills what builds of an earlier life of this node left running: processes whose working directory
// is inside the work dir, with their process groups. A node that was killed -9 could not stop its scripts, and
// nothing else would: the sections' time limits died with it. The working directory identifies them without
// trusting a recorded pid, which a reboot may have given to anything.
func stopOrphans(workDir string, log *slog.Logger) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	self, ownGroup := os.Getpid(), syscall.Getpgrp()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil || (cwd != workDir && !strings.HasPrefix(cwd, workDir+string(filepath.Separator))) {
			continue
		}
		if st, err := proc.ReadStat(pid); err == nil && st.Pgrp > 1 && st.Pgrp != ownGroup {
			syscall.Kill(-st.Pgrp, syscall.SIGKILL)
		}
		syscall.Kill(pid, syscall.SIGKILL)
		log.Warn("stopped a process left running by a build before this node restarted", "pid", pid, "cwd", cwd)
	}
}
