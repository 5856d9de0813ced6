package raftfsm

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden fixtures in testdata/ (only for a field or command added on purpose)")

// The fixtures are the on-disk format: every Raft log entry and every snapshot a node ever wrote must still
// decode. A fixture holds one command (or a state) with every field set; the test decodes it with the current
// code, strictly (unknown fields refused), and encodes it again. A renamed or removed field fails here, since
// logs already written use the old name: keep the old name in the json tag instead. An added field fails too,
// until `go test ./raftfsm -run Fixture -update` adds it to the fixture (read the diff: only additions).
func TestCommandFixtures(t *testing.T) {
	dir := filepath.Join("testdata", "commands")
	types := slices.Sorted(func(yield func(CommandType) bool) {
		for typ := range specs {
			if !yield(typ) {
				return
			}
		}
	})
	want := map[string]bool{}
	for _, typ := range types {
		c := specs[typ].New()
		fill(reflect.ValueOf(c).Elem(), 0)
		name := fmt.Sprintf("%03d-%s.json", typ, reflect.TypeOf(c).Elem().Name())
		want[name] = true
		path := filepath.Join(dir, name)
		if *update {
			writeFixture(t, path, c)
		}
		fixture, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("command type %d (%T) has no fixture %s: run `go test ./raftfsm -run Fixture -update` and commit it", typ, c, path)
			continue
		}
		got, err := DecodeStrict(append([]byte{EnvelopeVersion, byte(typ)}, fixture...))
		if err != nil {
			t.Errorf("%s no longer decodes: %v (a field was renamed or removed: logs on disk use the old name; keep it in the json tag)", path, err)
			continue
		}
		again, _ := json.Marshal(got)
		if !bytes.Equal(again, compact(t, fixture)) {
			t.Errorf("%s decodes and encodes to something else:\nfixture %s\nnow     %s\n(a field added on purpose: rerun with -update; otherwise a field changed its name or type)", path, compact(t, fixture), again)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	for _, f := range files {
		if !want[filepath.Base(f)] {
			t.Errorf("%s has no registered command: command types are append-only (logs on disk hold them)", f)
		}
	}
}

// TestSnapshotFixture: a snapshot with every field of the state set decodes with the current code (strictly,
// and with the go-json decoder Restore uses) and encodes to the same JSON.
func TestSnapshotFixture(t *testing.T) {
	path := filepath.Join("testdata", "snapshot.json")
	if *update {
		s := NewState()
		fill(reflect.ValueOf(s).Elem(), 0)
		writeFixture(t, path, s)
	}
	fixture, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: run `go test ./raftfsm -run Fixture -update` and commit it", err)
	}
	dec := json.NewDecoder(bytes.NewReader(fixture))
	dec.DisallowUnknownFields()
	strict := NewState()
	if err := dec.Decode(strict); err != nil {
		t.Fatalf("%s no longer decodes: %v (a field was renamed or removed: snapshots on disk use the old name)", path, err)
	}
	fast, err := decodeSnapshot(bytes.NewReader(fixture))
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*State{"encoding/json": strict, "go-json": fast} {
		if again, _ := json.Marshal(s); !bytes.Equal(again, compact(t, fixture)) {
			t.Errorf("%s decoded by %s encodes to something else:\nfixture %s\nnow     %s", path, name, compact(t, fixture), again)
		}
	}
}

// TestEveryFieldTagged: the JSON names of commands and of the state are written down, not derived from Go
// names, so that renaming a Go field cannot change the format by accident.
func TestEveryFieldTagged(t *testing.T) {
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type, string)
	walk = func(rt reflect.Type, path string) {
		for rt.Kind() == reflect.Pointer || rt.Kind() == reflect.Slice || rt.Kind() == reflect.Map || rt.Kind() == reflect.Array {
			rt = rt.Elem()
		}
		if rt.Kind() != reflect.Struct || seen[rt] || rt.PkgPath() != reflect.TypeFor[State]().PkgPath() {
			return
		}
		seen[rt] = true
		for i := 0; i < rt.NumField(); i++ {
			f := rt.Field(i)
			if !f.IsExported() {
				continue
			}
			if _, ok := f.Tag.Lookup("json"); !ok && !f.Anonymous {
				t.Errorf("%s.%s (%s) has no json tag", rt.Name(), f.Name, path)
			}
			walk(f.Type, path+"."+f.Name)
		}
	}
	for typ, spec := range specs {
		walk(reflect.TypeOf(spec.New()), fmt.Sprintf("command %d", typ))
	}
	walk(reflect.TypeFor[State](), "state")
}

func writeFixture(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

func compact(t *testing.T, b []byte) []byte {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

var fixtureTime = time.Date(2026, 12, 2, 10, 30, 0, 0, time.UTC)

// fill sets every field of v to a value that is not its zero value, so that every field appears in a fixture.
func fill(v reflect.Value, depth int) {
	if depth > 8 {
		return
	}
	switch {
	case v.Type() == reflect.TypeFor[time.Time]():
		v.Set(reflect.ValueOf(fixtureTime))
		return
	case v.Type() == reflect.TypeFor[json.RawMessage]():
		v.SetBytes([]byte(`{"raw":true}`))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if v.Type().Name() == "Duration" {
			v.SetInt(int64(90 * time.Second))
		} else {
			v.SetInt(2)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(3)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1.5)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(p.Elem(), depth+1)
		v.Set(p)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0), depth+1)
		v.Set(s)
	case reflect.Array:
		for i := 0; i < v.Len(); i++ {
			fill(v.Index(i), depth+1)
		}
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k := reflect.New(v.Type().Key()).Elem()
		fill(k, depth+1)
		e := reflect.New(v.Type().Elem()).Elem()
		fill(e, depth+1)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), depth+1)
			}
		}
	}
}

// TestBaselineIsFrozen: the baseline (what a node that advertises nothing knows) is the set of command types
// known when members began to advertise; it must not grow with new types, which are advertised instead.
func TestBaselineIsFrozen(t *testing.T) {
	for _, typ := range Baseline {
		if specs[typ] == nil {
			t.Errorf("baseline type %d is not registered", typ)
		}
	}
	if len(Baseline) != 36 {
		t.Fatalf("the baseline has %d types, it was 36: never add to it (advertised sets carry new types)", len(Baseline))
	}
	s := SetOf(Known())
	back, err := ParseCommandSet(s.String())
	if err != nil || back != s || len(s.String()) != 43 {
		t.Fatalf("command set text form: %q %v", s.String(), err)
	}
	for _, typ := range Known() {
		if !back.Has(typ) {
			t.Fatalf("type %d lost", typ)
		}
	}
	if back.Has(24) {
		t.Fatal("type 24 is not registered")
	}
}
