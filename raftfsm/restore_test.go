package raftfsm

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"
)

// TestRestoreDecodersAgree: a snapshot is written by encoding/json and read by go-json (fsm.go). The two must
// build the same state from every snapshot: random histories, and records with what decoders tend to disagree
// on (escapes, non-ASCII, HTML characters encoding/json escapes, nulls, durations in both forms, times with zones,
// empty and nil maps and slices).
func TestRestoreDecodersAgree(t *testing.T) {
	check := func(name string, snap []byte) {
		t.Helper()
		std := NewState()
		if err := json.Unmarshal(snap, std); err != nil {
			t.Fatalf("%s: encoding/json: %v", name, err)
		}
		std.fillMaps()
		std.rebuildIndex()
		fast, err := decodeSnapshot(bytes.NewReader(snap))
		if err != nil {
			t.Fatalf("%s: go-json: %v", name, err)
		}
		a, _ := json.Marshal(std)
		b, _ := json.Marshal(fast)
		if !bytes.Equal(a, b) {
			t.Fatalf("%s: the decoders disagree:\nencoding/json %s\ngo-json       %s", name, a, b)
		}
		if err := fast.checkIndex(); err != nil {
			t.Fatalf("%s: index after restore: %v", name, err)
		}
	}
	for seed := uint64(0); seed < 20; seed++ {
		a := newApplier(t)
		runRandom(a, rand.New(rand.NewPCG(seed, 99)), 400)
		snap, _ := a.f.MarshalState()
		check("random history", snap)
	}

	a := newApplier(t)
	zone := time.FixedZone("X", 5*3600+1800)
	a.ok(&AppPut{App: App{Name: "web", Repo: "https://h/é/\u2028<&>\"quote\"\\back", Branch: "feat/ü", Manifest: "shoal.yml",
		BuildVars: map[string]Var{"K": {Value: "a\tb\nc\u0000d💡", Secret: true}, "E": {}}, BuildCapabilities: []string{},
		PollInterval: Duration(90 * time.Second)}, Create: true})
	a.ok(&EnvPut{Env: Env{Name: "prod", App: "web", Servers: []string{"n1"}, Tags: map[string]string{"zone": "é"},
		Strategy: Strategy{Kind: "rolling", BatchSize: 1}}, Create: true})
	a.ok(&BuildQueue{App: "web", Commit: "c1", Branch: "main", Trigger: "push", Delivery: "d1", At: t0.In(zone)})
	snap, _ := a.f.MarshalState()
	check("edge records", snap)
	// Older snapshots: null maps, durations as seconds.
	check("nulls", []byte(`{"index":3,"apps":null,"envs":{},"tokens":null}`))
	check("seconds", []byte(`{"index":4,"apps":{"w":{"name":"w","repo":"r","branch":"main","manifest":"m","auto_build":false,"poll_interval":30,"next_build":1,"next_release":1,"create_index":1,"modify_index":1}}}`))
}
