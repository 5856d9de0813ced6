package main

import (
	"fmt"

	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/spread"
	"github.com/shoal-ci/shoal/ui"
)

// services are the parts of Shoal that run on top of a node. They start in dependency order (the artifact store
// and the piece exchange first, since builds write to it and deployments read from it) and stop in reverse.
type services struct {
	closers []func()
}

func startServices(n *node.Node, opts serviceOptions) (*services, error) {
	s := &services{}
	sp, err := spread.Attach(n, opts.Options)
	if err != nil {
		return nil, fmt.Errorf("start the release spread: %w", err)
	}
	s.closers = append(s.closers, sp.Close)
	closeBuilder, err := attachBuilder(n, sp.Store())
	if err != nil {
		s.close()
		return nil, err
	}
	s.closers = append(s.closers, closeBuilder)
	closeDeployer, err := attachDeployer(n, sp, opts)
	if err != nil {
		s.close()
		return nil, err
	}
	s.closers = append(s.closers, closeDeployer)
	ui.Attach(n)
	return s, nil
}

// close stops the services, once.
func (s *services) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}
