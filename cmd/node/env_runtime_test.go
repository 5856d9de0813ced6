package main

import (
	"bytes"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/shoal-ci/shoal/deployer"
	"github.com/shoal-ci/shoal/raftfsm"
)

func TestRuntimeTable(t *testing.T) {
	at := time.Date(2026, 12, 2, 3, 1, 12, 0, time.UTC)
	servers := []deployer.ServerRuntime{
		{Node: "n1", Up: "alive", Report: &raftfsm.Runtime{Release: "v7", Health: raftfsm.RuntimeHealthy, Restarts: 1,
			Procs:     []raftfsm.Proc{{PID: 81812, StartedAt: at}},
			LastExit:  &raftfsm.Exit{PID: 80001, Status: "killed by signal killed", Ran: raftfsm.Duration(4 * time.Minute), At: at},
			LastDrift: "current points to v6 but the agent installed v7", LastDriftAt: at}},
		{Node: "n2", Up: "alive", Report: &raftfsm.Runtime{Release: "v7", Health: raftfsm.RuntimeCrashLoop,
			Detail: "exit status 1 after 2ms, 5 restarts", Restarts: 5}, Drift: "Exec is crash-looping: exit status 1 after 2ms, 5 restarts"},
		{Node: "n3", Up: "dead", Drift: "server is dead; it should run v7"},
	}
	var b bytes.Buffer
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	runtimeTable(w, servers)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"SERVER", "81812", "killed by signal killed after 4m0s",
		"crash_loop: exit status 1 after 2ms, 5 restarts",
		"no report", "server is dead; it should run v7",
		"n1: repaired drift: current points to v6 but the agent installed v7",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	// The repaired-drift line must not widen the table's first column.
	if first := strings.SplitN(out, "\n", 3)[1]; !strings.HasPrefix(first, "SERVER  UP") {
		t.Errorf("the header is %q", first)
	}
}
