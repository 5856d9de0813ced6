// Package daemon runs a Shoal server: the node (Raft, gossip, the mesh's transport), its HTTP API server and
// the services on top of them, started in dependency order and stopped in reverse. Main is what `node init`, `node
// join`, `node agent` and `node dev` run, and what the in-process integration tests start: one assembly for all
// of them, so a test runs the server users run.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/builder"
	"github.com/shoal-ci/shoal/deployer"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/notify"
	"github.com/shoal-ci/shoal/spread"
	"github.com/shoal-ci/shoal/ui"
)

// Start says how Run brings the node up.
type Start int

const (
	// Open runs the node of a data dir that has been initialised or joined (`node agent`).
	Open Start = iota
	// Init creates a new mesh with this server as its first node (`node init`).
	Init
	// Join joins the mesh of the server at JoinAddr with JoinToken (`node join`).
	Join
)

// Main is one Shoal server. Set the fields, call Run, and Close when done (Close is safe after a failed Run).
type Main struct {
	Config node.Config
	// API is the HTTP API's own settings (where it listens is Config's: the node advertises it). Run sets
	// AwaitServices.
	API   api.Config
	Start Start
	// Init: the mesh's name and how long the printed join token stays valid.
	MeshName string
	JoinTTL  time.Duration
	// Join: the address of any server of the mesh, and a join token (empty when the data dir has joined before).
	JoinAddr  string
	JoinToken string

	// The services' options. Run sets what links them (the store the spread opens, the spread as the
	// deployer's fetcher).
	Spread   spread.Options
	Builder  builder.Options
	Deployer deployer.Options
	Notify   notify.Options
	// Services picks the services to run (default: all). Tests of one service run only what it needs.
	Services Services

	// Set by Run.
	Node       *node.Node
	APIServer  *api.Server
	InitResult *node.InitResult // Init only: the tokens to print once
	SpreadSvc  *spread.Service
	BuilderSvc *builder.Service
	DeploySvc  *deployer.Deployer
	NotifySvc  *notify.Service

	mu      sync.Mutex
	closers []func() error
	closed  bool
}

// Services selects the services a Main runs on its node.
type Services struct {
	NoSpread, NoBuilder, NoDeployer, NoNotify, NoUI bool
}

// NodeOnly runs the node without any service (`node init --exit`, `node join --exit`).
var NodeOnly = Services{NoSpread: true, NoBuilder: true, NoDeployer: true, NoNotify: true, NoUI: true}

// Run starts the node, its HTTP API server and then the services, and returns once they run. It fails, closing whatever it started,
// if any part does not start.
func (m *Main) Run(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	m.API.AwaitServices = true
	if err := m.openNode(ctx); err != nil {
		return err
	}
	if err := m.startAPI(); err != nil {
		return err
	}
	if err := m.startServices(); err != nil {
		return err
	}
	m.APIServer.ServicesReady()
	return nil
}

func (m *Main) openNode(ctx context.Context) error {
	var (
		n   *node.Node
		err error
	)
	switch m.Start {
	case Init:
		name := m.MeshName
		if name == "" {
			name = "shoal"
		}
		ttl := m.JoinTTL
		if ttl == 0 {
			ttl = node.DefaultJoinTTL
		}
		n, m.InitResult, err = node.Init(m.Config, name, ttl)
	case Join:
		n, err = node.Join(ctx, m.Config, m.JoinAddr, m.JoinToken)
	case Open:
		n, err = node.Open(m.Config)
	default:
		return fmt.Errorf("daemon: unknown start %d", m.Start)
	}
	if err != nil {
		return err
	}
	m.Node = n
	m.onClose(n.Close)
	return nil
}

// startAPI serves the node's HTTP API; Close stops it before the node.
func (m *Main) startAPI() error {
	srv, err := api.New(m.Node, m.API)
	if err != nil {
		return fmt.Errorf("start the HTTP API: %w", err)
	}
	m.APIServer = srv
	m.onClose(srv.Close)
	return nil
}

// startServices attaches the services in dependency order: the spread first (its artifact store is where builds
// write and deployments read), then the builder, the deployer, notifications and the dashboard.
func (m *Main) startServices() error {
	n, srv, sel := m.Node, m.APIServer, m.Services
	if !sel.NoSpread {
		sp, err := spread.Attach(n, srv, m.Spread)
		if err != nil {
			return fmt.Errorf("start the release spread: %w", err)
		}
		m.SpreadSvc = sp
		m.onClose(func() error { sp.Close(); return nil })
	}
	if !sel.NoBuilder {
		opts := m.Builder
		if opts.Store == nil && m.SpreadSvc != nil {
			opts.Store = m.SpreadSvc.Store()
		}
		b, err := builder.Attach(n, srv, opts)
		if err != nil {
			return fmt.Errorf("start the builder: %w", err)
		}
		m.BuilderSvc = b
		m.onClose(b.Close)
	}
	if !sel.NoDeployer {
		opts := m.Deployer
		if opts.Fetcher == nil && m.SpreadSvc != nil {
			opts.Fetcher = m.SpreadSvc
		}
		d, err := deployer.Attach(n, srv, opts)
		if err != nil {
			return fmt.Errorf("start the deployer: %w", err)
		}
		m.DeploySvc = d
		m.onClose(d.Close)
	}
	if !sel.NoNotify {
		nt, err := notify.Attach(n, srv, m.Notify)
		if err != nil {
			return fmt.Errorf("start notifications: %w", err)
		}
		m.NotifySvc = nt
		m.onClose(func() error { nt.Close(); return nil })
	}
	if !sel.NoUI {
		ui.Attach(srv)
	}
	return nil
}

func (m *Main) onClose(f func() error) {
	m.mu.Lock()
	m.closers = append(m.closers, f)
	m.mu.Unlock()
}

// Close stops the services in reverse order, then the HTTP API, then the node. It returns the first error; calling it again
// does nothing.
func (m *Main) Close() error {
	m.mu.Lock()
	closers := m.closers
	m.closers, m.closed = nil, true
	m.mu.Unlock()
	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
