package deployer

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

func TestJudgeExec(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	short := func(at time.Duration) ExecExit {
		return ExecExit{PID: 7, Status: "exit status 1", Ran: 2 * time.Millisecond, At: now.Add(-at)}
	}
	up := func(ago time.Duration) []ExecProc { return []ExecProc{{PID: 9, StartedAt: now.Add(-ago)}} }
	for _, tc := range []struct {
		name       string
		st         ExecStatus
		health     string
		detailHint string
	}{
		{"not supervised", ExecStatus{}, raftfsm.RuntimeDown, "not supervised"},
		{"up long enough", ExecStatus{Running: true, Count: 1, Procs: up(11 * time.Second)}, raftfsm.RuntimeHealthy, ""},
		{"up too briefly", ExecStatus{Running: true, Count: 1, Procs: up(time.Second)}, raftfsm.RuntimeStarting, "minimum healthy time 10s"},
		{"one of two down", ExecStatus{Running: true, Count: 2, Procs: up(time.Minute), Restarts: 1, Exits: []ExecExit{short(time.Second)}},
			raftfsm.RuntimeDown, "1 of 2 Exec processes up; last exit: exit status 1 after 2ms, 1 restart"},
		{"crash loop while down", ExecStatus{Running: true, Count: 1, Restarts: 5, Exits: []ExecExit{short(5), short(4), short(3)}},
			raftfsm.RuntimeCrashLoop, "exit status 1 after 2ms, 5 restarts"},
		{"crash loop while briefly up", ExecStatus{Running: true, Count: 1, Procs: up(time.Second), Restarts: 3, Exits: []ExecExit{short(5), short(4), short(3)}},
			raftfsm.RuntimeCrashLoop, "3 restarts"},
		{"a crash loop that healed", ExecStatus{Running: true, Count: 1, Procs: up(time.Minute), Restarts: 3, Exits: []ExecExit{short(5), short(4), short(3)}},
			raftfsm.RuntimeHealthy, ""},
		{"a long run breaks the series", ExecStatus{Running: true, Count: 1, Procs: up(time.Second), Restarts: 3,
			Exits: []ExecExit{short(5), short(4), {Status: "signal: killed", Ran: time.Hour}}}, raftfsm.RuntimeStarting, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := judgeExec(tc.st, 10*time.Second, now)
			if j.Health != tc.health || !strings.Contains(j.Detail, tc.detailHint) {
				t.Fatalf("judged %s (%q), want %s (%q)", j.Health, j.Detail, tc.health, tc.detailHint)
			}
		})
	}
}

func TestDriftOf(t *testing.T) {
	want := target{Kind: raftfsm.DeployKindDeploy, Release: "v2"}
	rt := func(rel, installed, health string) *raftfsm.Runtime {
		return &raftfsm.Runtime{Release: rel, Installed: installed, Health: health, Detail: "exit status 1 after 2ms, 4 restarts"}
	}
	for _, tc := range []struct {
		name    string
		want    target
		running string
		rt      *raftfsm.Runtime
		drift   string
	}{
		{"in sync", want, "", rt("v2", "v2", raftfsm.RuntimeHealthy), ""},
		{"starting is not drift", want, "", rt("v2", "v2", raftfsm.RuntimeStarting), ""},
		{"no report", want, "", nil, "no report from this server; it should run v2"},
		{"nothing installed", want, "", rt("", "", raftfsm.RuntimeNone), "runs nothing; should run v2"},
		{"old release", want, "", rt("v1", "v2", raftfsm.RuntimeHealthy), "runs v1; should run v2"},
		{"current moved by hand", want, "", rt("v2", "v1", raftfsm.RuntimeHealthy), "current points to v2 but the agent installed v1"},
		{"crash loop", want, "", rt("v2", "v2", raftfsm.RuntimeCrashLoop), "Exec is crash-looping: exit status 1 after 2ms, 4 restarts"},
		{"down", want, "", rt("v2", "v2", raftfsm.RuntimeDown), "Exec processes are down"},
		{"stopped", want, "", rt("v2", "v2", raftfsm.RuntimeStopped), "stopped; should run v2"},
		{"a deployment runs", want, "d-1", rt("v1", "v1", raftfsm.RuntimeHealthy), ""},
		{"terminated environment", target{}, "", rt("v1", "v1", raftfsm.RuntimeStopped), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := driftOf(tc.want, tc.running, tc.rt); !strings.HasPrefix(got, tc.drift) || (tc.drift == "" && got != "") {
				t.Fatalf("drift %q, want %q", got, tc.drift)
			}
		})
	}
}

// TestWaitExecStable runs real processes: one that stays up is healthy after the minimum healthy time; one that
// exits at once is named a crash loop with its exit status and restarts; one that exits after 300 ms with a
// minimum healthy time of 500 ms is never healthy; and the history survives a new supervisor (an agent restart)
// but not a new spec.
func TestWaitExecStable(t *testing.T) {
	ctx := context.Background()
	t.Run("stays up", func(t *testing.T) {
		f := newFixture(t, sleeper)
		s := NewSupervisor(f.stateDir, testLogger(t))
		defer s.Close()
		if err := s.Start(f.spec); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := waitExecStable(ctx, s, "v1", 300*time.Millisecond, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 250*time.Millisecond {
			t.Fatalf("healthy after %s, before the minimum healthy time", took)
		}
	})
	t.Run("crash loop", func(t *testing.T) {
		f := newFixture(t, "exit 1\n")
		s := NewSupervisor(f.stateDir, testLogger(t))
		if err := s.Start(f.spec); err != nil {
			t.Fatal(err)
		}
		err := waitExecStable(ctx, s, "v1", time.Second, 20*time.Second)
		var ce *CrashLoopError
		if !errors.As(err, &ce) {
			t.Fatalf("want a crash loop, got %v", err)
		}
		if msg := err.Error(); !strings.Contains(msg, "Exec is crash-looping: exit status 1 after") || !strings.Contains(msg, "restarts") {
			t.Fatalf("the error does not name the crash loop: %s", msg)
		}
		st := s.Status()
		if len(st.Exits) < crashLoopExits || st.Exits[len(st.Exits)-1].Status != "exit status 1" {
			t.Fatalf("status %+v", st)
		}
		s.Close()
		// A new supervisor over the same state (an agent restart) keeps the count; the same spec resumes it.
		s2 := NewSupervisor(f.stateDir, testLogger(t))
		if _, err := s2.Resume(); err != nil {
			t.Fatal(err)
		}
		if got := s2.Status(); got.Restarts < st.Restarts || len(got.Exits) < len(st.Exits) {
			t.Fatalf("after an agent restart: %d restarts, %d exits; before %d, %d", got.Restarts, len(got.Exits), st.Restarts, len(st.Exits))
		}
		if err := s2.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		// Another spec starts a fresh history.
		if err := os.WriteFile(f.spec.Script, []byte(sleeper), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := s2.Start(f.spec); err != nil {
			t.Fatal(err)
		}
		if got := s2.Status(); got.Restarts != 0 || len(got.Exits) != 0 {
			t.Fatalf("a new spec inherited the old one's history: %+v", got)
		}
		s2.Close()
	})
	t.Run("exits before the minimum healthy time", func(t *testing.T) {
		f := newFixture(t, "sleep 0.3\nexit 2\n")
		s := NewSupervisor(f.stateDir, testLogger(t))
		defer s.Close()
		if err := s.Start(f.spec); err != nil {
			t.Fatal(err)
		}
		err := waitExecStable(ctx, s, "v1", 500*time.Millisecond, 20*time.Second)
		if !isCrashLoop(err) || !strings.Contains(err.Error(), "exit status 2 after 3") {
			t.Fatalf("want a crash loop of runs of about 300ms, got %v", err)
		}
	})
	t.Run("a killed process is seen and restarted", func(t *testing.T) {
		f := newFixture(t, sleeper)
		s := NewSupervisor(f.stateDir, testLogger(t))
		defer s.Close()
		if err := s.Start(f.spec); err != nil {
			t.Fatal(err)
		}
		pid := s.PIDs()[0]
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		testutil.Until(t, 20*time.Second, "the restart", func() bool {
			st := s.Status()
			return st.Restarts == 1 && len(st.Procs) == 1 && st.Procs[0].PID != pid
		})
		if x := s.Status().Exits[0]; x.PID != pid || !strings.Contains(x.Status, "killed") {
			t.Fatalf("last exit %+v", x)
		}
	})
	t.Run("a health check yields to a crash loop", func(t *testing.T) {
		f := newFixture(t, "exit 1\n")
		s := NewSupervisor(f.stateDir, testLogger(t))
		defer s.Close()
		if err := s.Start(f.spec); err != nil {
			t.Fatal(err)
		}
		err := watchCrashLoop(ctx, s, "v1", time.Second, func(ctx context.Context) error {
			<-ctx.Done() // a check that never passes: only the crash loop can end it
			return ctx.Err()
		})
		if !isCrashLoop(err) {
			t.Fatalf("want the crash loop, got %v", err)
		}
	})
}

func TestCrashLoopSince(t *testing.T) {
	start := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	exit := func(at time.Duration, ran time.Duration) ExecExit {
		return ExecExit{Status: "exit status 1", Ran: ran, At: start.Add(at)}
	}
	ms := time.Millisecond
	for _, tc := range []struct {
		name  string
		exits []ExecExit
		loop  bool
	}{
		{"none", nil, false},
		{"two", []ExecExit{exit(1, ms), exit(2, ms)}, false},
		{"three since the start", []ExecExit{exit(1, ms), exit(2, ms), exit(3, ms)}, true},
		{"a loop from before, confirmed by a new exit", []ExecExit{exit(-3, ms), exit(-2, ms), exit(1, ms)}, true},
		{"a loop from before, not confirmed yet", []ExecExit{exit(-3, ms), exit(-2, ms), exit(-1, ms)}, false},
		{"a long run in between", []ExecExit{exit(1, ms), exit(2, time.Hour), exit(3, ms), exit(4, ms)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := crashLoopSince(ExecStatus{Exits: tc.exits, Restarts: uint64(len(tc.exits))}, "v1", time.Second, start)
			if (err != nil) != tc.loop {
				t.Fatalf("crash loop %v, want %v", err, tc.loop)
			}
		})
	}
}

func TestEnvRuntimeDrift(t *testing.T) {
	s := raftfsm.NewState()
	s.Envs["prod"] = &raftfsm.Env{Name: "prod", App: "web", Servers: []string{"n1", "n2", "n3"}, Desired: "v2"}
	healthy := func(node, rel string) *raftfsm.Runtime {
		return &raftfsm.Runtime{Env: "prod", App: "web", Node: node, Release: rel, Installed: rel, Health: raftfsm.RuntimeHealthy}
	}
	s.Runtimes[raftfsm.RuntimeKey("prod", "n1")] = healthy("n1", "v2")
	s.Runtimes[raftfsm.RuntimeKey("prod", "n2")] = healthy("n2", "v1")
	s.Runtimes[raftfsm.RuntimeKey("prod", "n4")] = healthy("n4", "v2") // gone from gossip; its report stays
	// The test edits the maps by hand.
	s.Reindex()
	members := []node.Member{{Name: "n1", Status: node.StatusAlive}, {Name: "n2", Status: node.StatusAlive},
		{Name: "n3", Status: node.StatusDead}, {Name: "n5", Status: node.StatusAlive}}
	got := map[string]ServerRuntime{}
	for _, sr := range envRuntime(s, s.Envs["prod"], members) {
		got[sr.Node] = sr
	}
	want := map[string]string{"n1": "", "n2": "runs v1; should run v2", "n3": "server is dead; it should run v2",
		"n4": "gossip does not see this server; it should run v2"}
	if len(got) != len(want) {
		t.Fatalf("servers %v, want those of %v", got, want)
	}
	for name, drift := range want {
		if got[name].Drift != drift {
			t.Errorf("%s: drift %q, want %q", name, got[name].Drift, drift)
		}
	}
	if got["n3"].Report != nil || got["n4"].Up != "unknown" {
		t.Fatalf("n3 %+v, n4 %+v", got["n3"], got["n4"])
	}

	// While a deployment runs, servers differ on purpose.
	s.Deploys["d1"] = &raftfsm.Deployment{ID: "d1", Kind: raftfsm.DeployKindDeploy, App: "web", Env: "prod", Release: "v3",
		State: raftfsm.DeployRunning, Batches: [][]string{{"n1"}, {"n2"}}, Nodes: map[string]*raftfsm.NodeStatus{}}
	s.Reindex() // the test edits the maps by hand
	for _, sr := range envRuntime(s, s.Envs["prod"], members) {
		if sr.Deploying != "d1" || sr.Drift != "" {
			t.Errorf("during a deployment %s: %+v", sr.Node, sr)
		}
	}
}
