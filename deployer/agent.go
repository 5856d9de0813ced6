package deployer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// Defaults of Options.
const (
	DefaultKeepReleases     = 5
	DefaultRetryBackoff     = 5 * time.Second
	DefaultMaxRetryBackoff  = 5 * time.Minute
	DefaultDeadAfter        = time.Minute
	DefaultProgressInterval = time.Second
	// resyncInterval bounds how long a missed change can go unnoticed: the loops are level-triggered, and
	// gossip (tags, liveness) changes without a Raft write.
	resyncInterval = 5 * time.Second
)

// Options configures the deployer of one node.
type Options struct {
	// Fetcher brings releases into this node's artifact store. Required.
	Fetcher Fetcher
	// Keep is how many releases stay on disk per environment, the active one included (0: 5).
	Keep int
	// Exec tunes supervision (MinStable, back-off, StopGrace); the rest comes from each release.
	Exec ExecSpec
	// BaseEnv is what every hook script starts from; empty means PATH and the agent's HOME.
	BaseEnv []string
	// RetryBackoff is the first wait after a failed install that no running deployment decides on (a
	// server converging to its environment's release by itself); it doubles up to MaxRetryBackoff.
	RetryBackoff, MaxRetryBackoff time.Duration
	// DeadAfter is how long a server of a started batch may be down (by gossip) before the orchestrator
	// counts it as failed (0: one minute).
	DeadAfter time.Duration
	// ProgressInterval is the least time between two download progress reports written to Raft (0: 1 s).
	ProgressInterval time.Duration
	// ExecLogMax is the size past which an environment's exec.log is rotated (copy and truncate), and
	// ExecLogKeep how many rotated copies stay (exec.log.1 …); ExecLogCheck is how often sizes are looked at
	// (0: 10 MiB, 3, 1 s).
	ExecLogMax   int64
	ExecLogKeep  int
	ExecLogCheck time.Duration
	// MinHealthyTime is how long Exec processes must stay up to count as healthy, for releases without a health
	// check in environments that set none (0: DefaultMinHealthyTime).
	MinHealthyTime time.Duration
	// Logger defaults to the node's, with component=deployer.
	Logger *slog.Logger
	// Registerer defaults to the node's registry.
	Registerer prometheus.Registerer
}

// Deployer is the deploy half of one node: the agent that makes this node's installed releases equal the
// desired ones, the orchestrator that runs deployments while the node leads, and their API.
type Deployer struct {
	api  *api.RouteGroup // the deploy routes, taken away by Close
	n    *node.Node
	srv  *api.Server
	opts Options
	log  *slog.Logger
	m    *metrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	workers map[string]*envWorker // by environment name

	supMu sync.Mutex // guards sups; taken after mu when both are held
	sups  map[string]*Supervisor

	// started is when Attach began; ready is closed once the agent caught up with the leader (readyIn after
	// started) and its workers may act.
	started time.Time
	ready   chan struct{}
	readyIn time.Duration
	repairs sync.Map // environment name → driftNote: the last drift a worker set out to repair (agent_runtime.go)
}

// Attach starts the deployer on n: it resumes supervising the Exec processes an earlier agent left running,
// registers the deploy API and the per-node log RPC, starts the agent loop, and runs the orchestrator
// whenever n leads. Close stops it; the supervised processes keep running.
func Attach(n *node.Node, srv *api.Server, opts Options) (*Deployer, error) {
	if opts.Fetcher == nil {
		return nil, errors.New("deployer: Options.Fetcher is required")
	}
	if opts.Keep <= 0 {
		opts.Keep = DefaultKeepReleases
	}
	if opts.RetryBackoff <= 0 {
		opts.RetryBackoff = DefaultRetryBackoff
	}
	if opts.MaxRetryBackoff < opts.RetryBackoff {
		opts.MaxRetryBackoff = max(DefaultMaxRetryBackoff, opts.RetryBackoff)
	}
	if opts.DeadAfter <= 0 {
		opts.DeadAfter = DefaultDeadAfter
	}
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = DefaultProgressInterval
	}
	if opts.ExecLogMax <= 0 {
		opts.ExecLogMax = DefaultExecLogMax
	}
	if opts.ExecLogKeep <= 0 {
		opts.ExecLogKeep = DefaultExecLogKeep
	}
	if opts.ExecLogCheck <= 0 {
		opts.ExecLogCheck = DefaultExecLogCheck
	}
	if opts.Logger == nil {
		opts.Logger = n.Logger().With("component", "deployer")
	}
	if opts.Registerer == nil {
		opts.Registerer = n.Registry()
	}
	if len(opts.BaseEnv) == 0 {
		opts.BaseEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
		if home := os.Getenv("HOME"); home != "" {
			opts.BaseEnv = append(opts.BaseEnv, "HOME="+home)
		}
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	if err := opts.Registerer.Register(newStateCollector(n.FSM().Read)); err != nil {
		return nil, fmt.Errorf("deployer metrics: %w", err)
	}
	d := &Deployer{n: n, srv: srv, opts: opts, log: opts.Logger, m: m, workers: map[string]*envWorker{}, sups: map[string]*Supervisor{},
		started: time.Now(), ready: make(chan struct{})}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.resumeAll()
	d.registerAPI()
	d.wg.Add(3)
	go d.agentLoop()
	go d.rotateLoop()
	go d.runtimeLoop()
	n.OnLeader(d.lead)
	return d, nil
}

// Close stops the agent loop, the environment workers (an install under way is interrupted: its scripts are
// killed and the next start does it again) and the orchestrator. Supervised processes keep running.
func (d *Deployer) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	d.unregisterAPI()
	d.cancel()
	d.wg.Wait()
	d.supMu.Lock()
	defer d.supMu.Unlock()
	for _, s := range d.sups {
		s.Close()
	}
	return nil
}

// track adds a goroutine to the deployer's wait group unless it is closed; it reports whether it did.
func (d *Deployer) track() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.wg.Add(1)
	return true
}

// EnvDir is where an environment's releases, `current` link, logs and supervisor state live on this node.
func (d *Deployer) EnvDir(app, env string) string {
	return filepath.Join(d.n.DataDir(), "apps", app, env)
}

// supervisor returns the Exec supervisor of an environment directory, creating it once.
func (d *Deployer) supervisor(app, env string) *Supervisor {
	dir := d.EnvDir(app, env)
	d.supMu.Lock()
	defer d.supMu.Unlock()
	if s := d.sups[dir]; s != nil {
		return s
	}
	s := NewSupervisor(filepath.Join(dir, "supervisor"), d.log.With("app", app, "env", env))
	restarts := d.m.execRestarts.WithLabelValues(app, env)
	s.OnRestart(func(int, time.Duration) { restarts.Inc() })
	d.sups[dir] = s
	return s
}

// resumeAll adopts, before Raft has even caught up, the Exec processes of every environment directory on
// disk: restarting the agent must not restart the apps.
func (d *Deployer) resumeAll() {
	dirs, _ := filepath.Glob(filepath.Join(d.n.DataDir(), "apps", "*", "*", "supervisor"))
	for _, dir := range dirs {
		env := filepath.Dir(dir)
		app := filepath.Base(filepath.Dir(env))
		s := d.supervisor(app, filepath.Base(env))
		ok, err := s.Resume()
		switch {
		case err != nil:
			d.log.Error("resume exec supervision", "app", app, "env", filepath.Base(env), "err", err)
		case ok:
			d.log.Info("resumed exec supervision", "app", app, "env", filepath.Base(env), "pids", s.PIDs())
		}
	}
}

// Ready is closed once the agent has caught up with the leader's committed state and adopted its processes:
// from then on its workers act, on the present state only.
func (d *Deployer) Ready() <-chan struct{} { return d.ready }

// ReadyIn is how long the agent took from Attach to ready (0 before it is).
func (d *Deployer) ReadyIn() time.Duration {
	select {
	case <-d.ready:
		return d.readyIn
	default:
		return 0
	}
}

// awaitPresent blocks until this node's state holds everything the leader had committed when it asked, after
// replaying what the node held itself. Until then the state is the past (a restarted node rebuilds it entry by
// entry, through every release it ever ran), and acting on it would install intermediate releases. With no
// leader (a whole mesh restarting), it waits: the adopted processes keep running meanwhile.
func (d *Deployer) awaitPresent() bool {
	var lastErr error
	warned := false
	for {
		if d.n.Ready() {
			ctx, cancel := context.WithTimeout(d.ctx, 30*time.Second)
			lastErr = d.n.ConsistentRead(ctx)
			cancel()
			if lastErr == nil {
				d.readyIn = time.Since(d.started)
				close(d.ready)
				d.log.Info("agent ready: caught up with the leader", "index", d.n.FSM().Index(), "took", d.readyIn.Round(time.Millisecond),
					"supervised", d.supervisedCount())
				return true
			}
		}
		if !warned && time.Since(d.started) > 10*time.Second {
			warned = true
			d.log.Warn("waiting to catch up with the leader before acting on any environment; the apps keep running", "err", lastErr)
		}
		select {
		case <-d.ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// supervisedCount counts the environments whose Exec processes this agent supervises.
func (d *Deployer) supervisedCount() int {
	d.supMu.Lock()
	defer d.supMu.Unlock()
	n := 0
	for _, s := range d.sups {
		if s.Running() {
			n++
		}
	}
	return n
}

// agentLoop keeps one worker per environment this node is in, once the node has caught up.
func (d *Deployer) agentLoop() {
	defer d.wg.Done()
	if !d.awaitPresent() {
		return
	}
	t := time.NewTicker(resyncInterval)
	defer t.Stop()
	for {
		changed := d.n.FSM().Changed()
		d.syncWorkers()
		select {
		case <-d.ctx.Done():
			d.stopWorkers()
			return
		case <-changed:
			settle(d.ctx)
		case <-t.C:
		}
	}
}

func (d *Deployer) syncWorkers() {
	me, tags := d.n.Name(), d.n.Tags()
	want := map[string]string{} // env → app
	d.n.FSM().Read(func(s *raftfsm.State) {
		for _, e := range s.Envs {
			if InEnv(e, me, tags) {
				want[e.Name] = e.App
			}
		}
	})
	d.mu.Lock()
	var stop []*envWorker
	for name, w := range d.workers {
		if app, ok := want[name]; !ok || app != w.app {
			stop = append(stop, w)
			delete(d.workers, name)
		}
	}
	for name, app := range want {
		if d.workers[name] != nil || d.closed {
			continue
		}
		w := d.newWorker(app, name)
		d.workers[name] = w
		d.wg.Add(1)
		go w.run()
	}
	d.m.installsReady.Set(float64(len(d.workers)))
	d.mu.Unlock()
	for _, w := range stop {
		d.log.Info("this node left an environment; its release stays installed and running", "app", w.app, "env", w.env)
		w.stop()
	}
}

func (d *Deployer) stopWorkers() {
	d.mu.Lock()
	ws := make([]*envWorker, 0, len(d.workers))
	for name, w := range d.workers {
		ws = append(ws, w)
		delete(d.workers, name)
	}
	d.mu.Unlock()
	for _, w := range ws {
		w.stop()
	}
}

// apply writes a command with a bounded wait, for the agent's and orchestrator's own writes.
func (d *Deployer) apply(ctx context.Context, c raftfsm.Command) (*node.Applied, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	res, err := d.n.Apply(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("write %T: %w", c, err)
	}
	return res, nil
}
