package raftfsm

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestTouchedSinceMatchesAScan: the change list gives, for every index, exactly the builds and deployments that
// a scan of every record finds changed after it (notify derives events from it), across random histories, a
// snapshot restore, and a list trimmed past its limit.
func TestTouchedSinceMatchesAScan(t *testing.T) {
	check := func(name string, s *State, stride uint64) {
		t.Helper()
		for since := uint64(0); since <= s.Index; since += stride {
			builds, deploys, ok := s.TouchedSince(since)
			if !ok {
				if since >= s.idx().touchedFloor {
					t.Fatalf("%s: since %d refused above the floor %d", name, since, s.idx().touchedFloor)
				}
				continue
			}
			var wantB, wantD, gotB, gotD []string
			for id, b := range s.Builds {
				if b.ModifyIndex > since {
					wantB = append(wantB, id)
				}
			}
			for id, d := range s.Deploys {
				if d.ModifyIndex > since {
					wantD = append(wantD, id)
				}
			}
			for _, id := range builds {
				if b := s.Builds[id]; b != nil && b.ModifyIndex > since {
					gotB = append(gotB, id)
				}
			}
			for _, id := range deploys {
				if d := s.Deploys[id]; d != nil && d.ModifyIndex > since {
					gotD = append(gotD, id)
				}
			}
			slices.Sort(wantB)
			slices.Sort(wantD)
			slices.Sort(gotB)
			slices.Sort(gotD)
			if !slices.Equal(wantB, gotB) || !slices.Equal(wantD, gotD) {
				t.Fatalf("%s: since %d: builds %v deploys %v, a scan finds %v %v", name, since, gotB, gotD, wantB, wantD)
			}
		}
	}
	for seed := uint64(0); seed < 10; seed++ {
		a := newApplier(t)
		runRandom(a, rand.New(rand.NewPCG(seed, 5)), 300)
		check(fmt.Sprintf("seed %d", seed), a.f.state, 1)
		// After a restore the list starts empty: everything at or below the snapshot's index needs a scan.
		snap, _ := a.f.MarshalState()
		restored, err := decodeSnapshot(bytes.NewReader(snap))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, ok := restored.TouchedSince(restored.Index - 1); ok && restored.Index > 0 {
			t.Fatalf("seed %d: a restored state claims to know what changed before its snapshot", seed)
		}
	}

	// Past the limit the older half goes; what is left still answers exactly.
	defer func(limit int) { touchLimit = limit }(touchLimit)
	touchLimit = 256
	a := newApplier(t)
	a.ok(&AppPut{App: App{Name: "web", Repo: "/r", Branch: "main", Manifest: "m"}, Create: true})
	var batch []*raft.Log
	for i := 0; i < touchLimit+100; i++ { // applied as Raft's batches are, without the applier's checks per entry
		data, err := Encode(&BuildQueue{App: "web", Commit: fmt.Sprintf("c%d", i), Branch: "main", Trigger: "push", Delivery: fmt.Sprintf("d%d", i), At: t0.Add(time.Duration(i))})
		if err != nil {
			t.Fatal(err)
		}
		a.index++
		batch = append(batch, &raft.Log{Index: a.index, Term: 1, Type: raft.LogCommand, Data: data})
	}
	for i := 0; i < len(batch); i += 256 {
		a.f.ApplyBatch(batch[i:min(i+256, len(batch))])
	}
	x := a.f.state.idx()
	if len(x.touched) > touchLimit || x.touchedFloor == 0 {
		t.Fatalf("the list was not trimmed: %d entries, floor %d", len(x.touched), x.touchedFloor)
	}
	if _, _, ok := a.f.state.TouchedSince(x.touchedFloor - 1); ok {
		t.Fatal("below the floor the list must send the caller to a scan")
	}
	check("trimmed", a.f.state, 1)
}
