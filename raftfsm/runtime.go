package raftfsm

import (
	"time"
)

// CmdRuntimeSet is the type of RuntimeSet: id 32 (ids 32–35 are this file's), marked skippable. Every agent
// writes its report within a second of starting, so during a rolling upgrade the first upgraded server would
// otherwise stop every older node (its writes go through the leader, which may still be old). A node that skips
// it only lacks reports, which it does not know how to show anyway; the server writes its report again at its
// next change.
const CmdRuntimeSet CommandType = 32 | IgnoreUnknown

// Runtime health: what a server's Exec processes of one environment do now.
const (
	// RuntimeHealthy: every Exec copy has been up for the environment's minimum healthy time.
	RuntimeHealthy = "healthy"
	// RuntimeStarting: every copy is up, some for less than the minimum healthy time.
	RuntimeStarting = "starting"
	// RuntimeCrashLoop: a copy keeps exiting before it has been up for the minimum healthy time.
	RuntimeCrashLoop = "crash_loop"
	// RuntimeDown: a copy is not running (exited and waiting for its restart, or not supervised).
	RuntimeDown = "down"
	// RuntimeStopped: the environment was terminated on this server; nothing should run.
	RuntimeStopped = "stopped"
	// RuntimeNone: no release is installed.
	RuntimeNone = "none"
	// RuntimeNoExec: the release has no Exec section, so there is no process to watch.
	RuntimeNoExec = "no_exec"
)

// Proc is one supervised Exec process.
type Proc struct {
	Slot      int       `json:"slot"`
	PID       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
}

// Exit is how an Exec process ended.
type Exit struct {
	Slot int `json:"slot"`
	PID  int `json:"pid"`
	// Status is the wait status in words ("exit status 1", "signal: killed").
	Status string `json:"status"`
	// Ran is how long the process had been up.
	Ran Duration  `json:"ran"`
	At  time.Time `json:"at"`
}

// Runtime is what one server reports it runs for one environment. The server's agent writes it only when
// something in it changes (not on a timer), and at most about once a second, so a crash loop costs a few writes.
type Runtime struct {
	Env  string `json:"env"`
	App  string `json:"app"`
	Node string `json:"node"`
	// Release is the release `current` points to on the server ("" when none).
	Release string `json:"release"`
	// Installed is the release the agent last installed completely; it differs from Release when `current`
	// was changed behind the agent's back or an install was cut after its flip.
	Installed string `json:"installed,omitempty"`
	// Health is one of the Runtime* values; Detail says why in words ("exit status 1 after 2ms, 5 restarts").
	Health string `json:"health"`
	Detail string `json:"detail,omitempty"`
	// Procs are the Exec processes running now; Restarts counts restarts of exited copies of this release.
	Procs    []Proc `json:"procs"`
	Restarts uint64 `json:"restarts"`
	LastExit *Exit  `json:"last_exit,omitempty"`
	// MinHealthy is the minimum healthy time the report was judged by.
	MinHealthy Duration `json:"min_healthy"`
	// LastDrift is the last difference from the environment's desired state this server saw on itself, and
	// when; it stays after the agent repaired it, so a repair is visible.
	LastDrift   string    `json:"last_drift,omitempty"`
	LastDriftAt time.Time `json:"last_drift_at,omitzero"`
	UpdatedAt   time.Time `json:"updated_at"`
	Meta
}

// RuntimeKey is the key of a runtime record in State.Runtimes.
func RuntimeKey(env, node string) string { return env + "/" + node }

// RuntimeSet records (or, with Delete, removes) what one server runs for one environment.
type RuntimeSet struct {
	Runtime Runtime `json:"Runtime"`
	Delete  bool    `json:",omitempty"`
}

func (*RuntimeSet) Type() CommandType { return CmdRuntimeSet }

func applyRuntimeSet(s *State, index uint64, c *RuntimeSet) (any, *Error) {
	rt := c.Runtime
	if rt.Node == "" || rt.Env == "" {
		return nil, badRequest("a runtime report needs an environment and a node")
	}
	key := RuntimeKey(rt.Env, rt.Node)
	if c.Delete {
		delete(s.Runtimes, key)
		dropFrom(s.idx().envRuntimes, rt.Env, key)
		return nil, nil
	}
	e, ok := s.Envs[rt.Env]
	if !ok {
		return nil, notFound("environment %q does not exist", rt.Env)
	}
	if rt.App != e.App {
		return nil, badRequest("environment %q belongs to app %q, not %q", rt.Env, e.App, rt.App)
	}
	if old := s.Runtimes[key]; old != nil {
		rt.CreateIndex = old.CreateIndex
	} else {
		rt.CreateIndex = index
	}
	rt.ModifyIndex = index
	if rt.Procs == nil {
		rt.Procs = []Proc{}
	}
	s.Runtimes[key] = &rt
	addTo(s.idx().envRuntimes, rt.Env, key)
	return &rt, nil
}

// dropRuntimes removes the runtime records of an environment (node == "") or of a node (env == "").
func dropRuntimes(s *State, env, node string) {
	drop := func(k string, rt *Runtime) {
		delete(s.Runtimes, k)
		dropFrom(s.idx().envRuntimes, rt.Env, k)
	}
	if env != "" {
		for k := range s.idx().envRuntimes[env] {
			if rt := s.Runtimes[k]; rt != nil {
				drop(k, rt)
			}
		}
	}
	if node != "" { // a node leaving: rare, so a scan
		for k, rt := range s.Runtimes {
			if rt.Node == node {
				drop(k, rt)
			}
		}
	}
}

// RuntimesOf returns the runtime records of an environment, keyed by node.
func (s *State) RuntimesOf(env string) map[string]*Runtime {
	out := map[string]*Runtime{}
	for k := range s.idx().envRuntimes[env] {
		if rt := s.Runtimes[k]; rt != nil {
			out[rt.Node] = rt
		}
	}
	return out
}

// MaxMinHealthyTime bounds Env.MinHealthyTime: a longer wait is a mistake more often than a wish.
const MaxMinHealthyTime = time.Hour

func validMinHealthy(d Duration) *Error {
	if d < 0 || time.Duration(d) > MaxMinHealthyTime {
		return badRequest("min_healthy_time %s is out of range: use 0 (the default, 10s) up to %s", time.Duration(d), MaxMinHealthyTime)
	}
	return nil
}
