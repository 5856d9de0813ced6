package raftfsm

import (
	"encoding/json"
	"fmt"
	"maps"
)

// Copy on write. Apply never changes a record in place: it stores a changed copy under the record's key (the
// edit* helpers). So a snapshot can take a brief copy of the maps — pointers only — under the read lock and encode
// them to the sink afterwards, while Apply goes on: the records it encodes never change. The property test
// (TestSnapshotIsAView) applies commands between the copy and the encoding and checks the snapshot still holds
// the state of its index.

func (s *State) editApp(name string) *App {
	a := s.Apps[name]
	if a == nil {
		return nil
	}
	c := *a
	s.Apps[name] = &c
	return &c
}

func (s *State) editEnv(name string) *Env {
	e := s.Envs[name]
	if e == nil {
		return nil
	}
	c := *e
	s.Envs[name] = &c
	return &c
}

func (s *State) editBuild(id string) *Build {
	b := s.Builds[id]
	if b == nil {
		return nil
	}
	c := *b
	s.Builds[id] = &c
	s.touch(false, id)
	return &c
}

func (s *State) editRelease(key string) *Release {
	r := s.Releases[key]
	if r == nil {
		return nil
	}
	c := *r
	s.Releases[key] = &c
	return &c
}

// editDeploy copies the deployment and its per-server map, which NodeStatusSet writes into.
func (s *State) editDeploy(id string) *Deployment {
	d := s.Deploys[id]
	if d == nil {
		return nil
	}
	c := *d
	c.Nodes = maps.Clone(d.Nodes)
	s.Deploys[id] = &c
	s.touch(true, id)
	return &c
}

// view returns a copy of the state that shares its records, which Apply never changes (see above). The
// notification state, which Apply does change in place and which retention keeps small, is copied deeply.
// It runs under the read lock: its cost is the maps' pointers, not the records.
func (s *State) view() (*State, error) {
	v := *s
	v.index = nil
	v.Tokens, v.JoinTokens = maps.Clone(s.Tokens), maps.Clone(s.JoinTokens)
	v.Apps, v.Envs, v.Builds = maps.Clone(s.Apps), maps.Clone(s.Envs), maps.Clone(s.Builds)
	v.Releases, v.Deploys = maps.Clone(s.Releases), maps.Clone(s.Deploys)
	v.Deliveries, v.Departed = maps.Clone(s.Deliveries), maps.Clone(s.Departed)
	v.Pipelines, v.Runtimes = maps.Clone(s.Pipelines), maps.Clone(s.Runtimes)
	v.CertFloor = maps.Clone(s.CertFloor)
	if s.Notify != nil {
		b, err := json.Marshal(s.Notify)
		if err != nil {
			return nil, fmt.Errorf("copy notification state: %w", err)
		}
		v.Notify = new(NotifyState)
		if err := json.Unmarshal(b, v.Notify); err != nil {
			return nil, fmt.Errorf("copy notification state: %w", err)
		}
	}
	return &v, nil
}
