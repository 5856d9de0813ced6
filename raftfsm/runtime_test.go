package raftfsm

import (
	"bytes"
	"io"
	"testing"
	"time"
)

func TestRuntimeSetIsSkippable(t *testing.T) {
	data, err := Encode(&RuntimeSet{Runtime: Runtime{Env: "prod", Node: "n1"}})
	if err != nil {
		t.Fatal(err)
	}
	// What a node that predates RuntimeSet sees: a type it does not know, which it must skip, not stop on.
	if CommandType(data[1])&IgnoreUnknown == 0 || CommandType(data[1])&^IgnoreUnknown != 32 {
		t.Fatalf("RuntimeSet has type byte %d, want id 32 marked skippable", data[1])
	}
}

func TestRuntimeSet(t *testing.T) {
	a := newApplier(t)
	a.ok(&AppPut{App: App{Name: "web", Repo: "/srv/web"}, Create: true})
	a.ok(&EnvPut{Env: Env{Name: "prod", App: "web", MinHealthyTime: Duration(2 * time.Second)}, Create: true})
	a.rejected(&EnvPut{Env: Env{Name: "prod", App: "web", MinHealthyTime: Duration(-time.Second)}}, KindBadRequest)
	a.rejected(&EnvPut{Env: Env{Name: "prod", App: "web", MinHealthyTime: Duration(2 * time.Hour)}}, KindBadRequest)

	a.rejected(&RuntimeSet{Runtime: Runtime{Env: "prod", App: "web"}}, KindBadRequest)
	a.rejected(&RuntimeSet{Runtime: Runtime{Env: "nope", App: "web", Node: "n1"}}, KindNotFound)
	a.rejected(&RuntimeSet{Runtime: Runtime{Env: "prod", App: "api", Node: "n1"}}, KindBadRequest)

	rt := Runtime{Env: "prod", App: "web", Node: "n1", Release: "v1", Health: RuntimeCrashLoop,
		Detail: "exit status 1 after 2ms, 5 restarts", Restarts: 5,
		LastExit: &Exit{PID: 42, Status: "exit status 1", Ran: Duration(2 * time.Millisecond), At: t0}, UpdatedAt: t0}
	r := a.ok(&RuntimeSet{Runtime: rt})
	got := as[Runtime](t, r)
	if got.CreateIndex != r.Index || got.Procs == nil || got.LastExit.Status != "exit status 1" {
		t.Fatalf("stored %+v", got)
	}
	rt.Health, rt.Procs = RuntimeHealthy, []Proc{{PID: 43, StartedAt: t0}}
	r2 := a.ok(&RuntimeSet{Runtime: rt})
	if got := as[Runtime](t, r2); got.CreateIndex != r.Index || got.ModifyIndex != r2.Index {
		t.Fatalf("indexes %d/%d, want %d/%d", got.CreateIndex, got.ModifyIndex, r.Index, r2.Index)
	}
	a.ok(&RuntimeSet{Runtime: Runtime{Env: "prod", App: "web", Node: "n2", Health: RuntimeNone}})

	// Snapshot and restore keep the records.
	snap, _ := a.f.Snapshot()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	f := New()
	if err := f.Restore(io.NopCloser(&sink.buf)); err != nil {
		t.Fatal(err)
	}
	want, _ := a.f.MarshalState()
	back, _ := f.MarshalState()
	if !bytes.Equal(want, back) {
		t.Fatal("restored state differs")
	}
	f.Read(func(s *State) {
		if rts := s.RuntimesOf("prod"); len(rts) != 2 || rts["n1"].Procs[0].PID != 43 {
			t.Fatalf("runtimes of prod: %+v", rts)
		}
	})

	// A node that leaves takes its records with it; deleting the environment takes the rest.
	a.ok(&MemberLeave{Name: "n2", At: t0})
	a.f.Read(func(s *State) {
		if _, ok := s.Runtimes[RuntimeKey("prod", "n2")]; ok || len(s.Runtimes) != 1 {
			t.Fatalf("after n2 left: %v", s.Runtimes)
		}
	})
	a.ok(&RuntimeSet{Runtime: Runtime{Env: "prod", Node: "n1"}, Delete: true})
	a.ok(&RuntimeSet{Runtime: rt})
	a.ok(&EnvDelete{Name: "prod"})
	a.f.Read(func(s *State) {
		if len(s.Runtimes) != 0 {
			t.Fatalf("after the environment was deleted: %v", s.Runtimes)
		}
	})
}
