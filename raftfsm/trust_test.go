package raftfsm

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func initMesh(a *applier) {
	a.ok(&MeshInit{Mesh: Mesh{Name: "m", CACert: "ca1", CAKey: "k1", GossipKey: bytes.Repeat([]byte{1}, 32), CreatedAt: t0}})
}

func TestMemberCertError(t *testing.T) {
	a := newApplier(t)
	initMesh(a)
	st := func() *State {
		var s *State
		a.f.Read(func(x *State) { s = x })
		return s
	}
	if err := st().MemberCertError("n2", t0); err != nil {
		t.Fatalf("a member is refused: %v", err)
	}
	a.ok(&MemberLeave{Name: "n2", At: t0.Add(time.Hour)})
	if err := st().MemberCertError("n2", t0); err == nil || !strings.Contains(err.Error(), "left") {
		t.Fatalf("a departed member is admitted: %v", err)
	}
	a.ok(&MemberRejoin{Name: "n2", At: t0.Add(2 * time.Hour)})
	if err := st().MemberCertError("n2", t0.Add(time.Hour)); err == nil {
		t.Fatal("a certificate from before the rejoin is admitted")
	}
	if err := st().MemberCertError("n2", t0.Add(2*time.Hour)); err != nil {
		t.Fatalf("the certificate issued at the rejoin is refused: %v", err)
	}
	// An entry written before MemberRejoin had a time falls back to the departure.
	a.ok(&MemberLeave{Name: "n3", At: t0.Add(time.Hour)})
	a.ok(&MemberRejoin{Name: "n3"})
	if err := st().MemberCertError("n3", t0); err == nil {
		t.Fatal("an old rejoin entry re-admitted the departed certificate")
	}
}

func TestGossipKeyRotate(t *testing.T) {
	a := newApplier(t)
	a.rejected(&GossipKeyRotate{Key: bytes.Repeat([]byte{2}, 32), At: t0}, KindBadRequest) // no mesh yet
	initMesh(a)
	k1, k2, k3 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), bytes.Repeat([]byte{3}, 32)
	a.rejected(&GossipKeyRotate{Key: []byte("short"), At: t0}, KindBadRequest)
	a.rejected(&GossipKeyRotate{Key: k1, At: t0}, KindConflict)
	a.rejected(&GossipKeyRotate{Key: k2}, KindBadRequest)
	a.ok(&GossipKeyRotate{Key: k2, At: t0, Overlap: Duration(time.Minute)})
	var m Mesh
	a.f.Read(func(s *State) { m = *s.Mesh })
	if keys := m.GossipKeys(t0.Add(30 * time.Second)); len(keys) != 2 || !bytes.Equal(keys[0], k2) || !bytes.Equal(keys[1], k1) {
		t.Fatalf("during the overlap: %x", keys)
	}
	if keys := m.GossipKeys(t0.Add(2 * time.Minute)); len(keys) != 1 {
		t.Fatalf("after the overlap: %x", keys)
	}
	// A later rotation drops retired keys whose overlap ended.
	a.ok(&GossipKeyRotate{Key: k3, At: t0.Add(time.Hour), Overlap: Duration(time.Second)})
	a.f.Read(func(s *State) { m = *s.Mesh })
	if len(m.RetiredGossipKeys) != 1 || !bytes.Equal(m.RetiredGossipKeys[0].Key, k2) || !m.GossipKeySince.Equal(t0.Add(time.Hour)) {
		t.Fatalf("retired keys %+v since %v", m.RetiredGossipKeys, m.GossipKeySince)
	}
	// A rotation answering a departure stamped by a clock that ran ahead: the key counts as newer than the
	// departure, while the old key's overlap still runs from At.
	ahead := t0.Add(48 * time.Hour)
	a.ok(&GossipKeyRotate{Key: k1, At: t0.Add(2 * time.Hour), Overlap: Duration(time.Second), Covers: ahead})
	a.f.Read(func(s *State) { m = *s.Mesh })
	if !m.GossipKeySince.Equal(ahead) || !m.RetiredGossipKeys[len(m.RetiredGossipKeys)-1].Until.Equal(t0.Add(2*time.Hour+time.Second)) {
		t.Fatalf("since %v, retired %+v", m.GossipKeySince, m.RetiredGossipKeys)
	}
}

func TestCARotate(t *testing.T) {
	a := newApplier(t)
	initMesh(a)
	a.rejected(&CARotate{Stage: CAStageIssued, Name: "n1", At: t0}, KindConflict)
	a.rejected(&CARotate{Stage: CAStageFinish, At: t0}, KindConflict)
	a.rejected(&CARotate{Stage: CAStageStart, At: t0}, KindBadRequest)
	a.rejected(&CARotate{Stage: "sideways", At: t0}, KindBadRequest)
	a.ok(&CARotate{Stage: CAStageStart, CACert: "ca2", CAKey: "k2", At: t0})
	a.rejected(&CARotate{Stage: CAStageStart, CACert: "ca3", CAKey: "k3", At: t0}, KindConflict)
	a.ok(&CARotate{Stage: CAStageIssued, Name: "n2", At: t0})
	a.ok(&CARotate{Stage: CAStageIssued, Name: "n1", At: t0})
	a.ok(&CARotate{Stage: CAStageIssued, Name: "n2", At: t0})
	var m Mesh
	a.f.Read(func(s *State) { m = *s.Mesh })
	if got := strings.Join(m.NextIssued, ","); got != "n1,n2" {
		t.Fatalf("issued %q", got)
	}
	if got := strings.Join(m.TrustedCAs(t0), ","); got != "ca1,ca2" {
		t.Fatalf("trusted during the rotation: %q", got)
	}
	a.ok(&CARotate{Stage: CAStageFinish, At: t0, Grace: Duration(time.Minute)})
	a.f.Read(func(s *State) { m = *s.Mesh })
	if m.CACert != "ca2" || m.CAKey != "k2" || m.NextCACert != "" || len(m.NextIssued) != 0 {
		t.Fatalf("after the finish: %+v", m)
	}
	if got := strings.Join(m.TrustedCAs(t0.Add(30*time.Second)), ","); got != "ca2,ca1" {
		t.Fatalf("trusted during the grace: %q", got)
	}
	if got := strings.Join(m.TrustedCAs(t0.Add(2*time.Minute)), ","); got != "ca2" {
		t.Fatalf("trusted after the grace: %q", got)
	}
}

func TestDecodeStrict(t *testing.T) {
	good, err := Encode(&TokenDelete{ID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := DecodeStrict(good); err != nil || c.(*TokenDelete).ID != "x" {
		t.Fatalf("a good command: %v %v", c, err)
	}
	for name, data := range map[string][]byte{
		"short":          {1},
		"newer envelope": append([]byte{2}, good[1:]...),
		"unknown type":   append([]byte{1, 99}, good[2:]...),
		"ignorable type": append([]byte{1, byte(IgnoreUnknown | 1)}, good[2:]...),
		"unknown field":  append([]byte{1, byte(CmdTokenDelete)}, []byte(`{"ID":"x","Extra":1}`)...),
		"trailing data":  append(append([]byte{}, good...), []byte(`{}`)...),
		"not an object":  append([]byte{1, byte(CmdTokenDelete)}, []byte(`"x"`)...),
	} {
		if _, err := DecodeStrict(data); KindOf(err) != KindBadRequest {
			t.Errorf("%s: %v, want a bad_request", name, err)
		}
	}
}
