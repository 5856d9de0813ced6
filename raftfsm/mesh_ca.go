package raftfsm

import (
	"slices"
	"time"
)

// Stages of a CA rotation (CARotate.Stage).
const (
	CAStageStart  = "start"  // the next CA is trusted by everyone; nothing is signed with it yet
	CAStageIssued = "issued" // a member holds a certificate from the next CA (it keeps presenting its old one)
	CAStageFinish = "finish" // the next CA signs from now on; the old one stays trusted for Grace
)

// CARotate moves a CA rotation one stage. The overlap is what keeps the mesh whole: from start to finish every
// member trusts both CAs and collects a certificate from the next one; at finish all switch to it, and the old
// CA is still trusted for Grace so that members which apply the finish a moment later are not cut off.
type CARotate struct {
	Stage  string    `json:"Stage"`
	CACert string    `json:",omitempty"` // start: the next CA
	CAKey  string    `json:",omitempty"`
	Name   string    `json:",omitempty"` // issued: the member
	At     time.Time `json:"At"`
	Grace  Duration  `json:",omitempty"` // finish
}

func (*CARotate) Type() CommandType { return CmdCARotate }

func applyCARotate(s *State, c *CARotate) *Error {
	if s.Mesh == nil {
		return badRequest("the mesh is not initialised")
	}
	m := *s.Mesh
	switch c.Stage {
	case CAStageStart:
		if m.NextCACert != "" {
			return conflict("a CA rotation is already under way: finish it with `node ca rotate --finish`")
		}
		if c.CACert == "" || c.CAKey == "" {
			return badRequest("starting a CA rotation needs the next CA's certificate and key")
		}
		m.NextCACert, m.NextCAKey, m.NextIssued = c.CACert, c.CAKey, nil
	case CAStageIssued:
		if m.NextCACert == "" {
			return conflict("no CA rotation is under way")
		}
		if err := checkName("member", c.Name); err != nil {
			return err
		}
		if !slices.Contains(m.NextIssued, c.Name) {
			m.NextIssued = append(slices.Clone(m.NextIssued), c.Name)
			slices.Sort(m.NextIssued)
		}
	case CAStageFinish:
		if m.NextCACert == "" {
			return conflict("no CA rotation is under way: start one with `node ca rotate`")
		}
		if c.At.IsZero() || c.Grace < 0 {
			return badRequest("finishing a CA rotation needs a time and a non-negative grace")
		}
		m.OldCACert, m.OldCAUntil = m.CACert, c.At.Add(time.Duration(c.Grace))
		m.CACert, m.CAKey = m.NextCACert, m.NextCAKey
		m.NextCACert, m.NextCAKey, m.NextIssued = "", "", nil
	default:
		return badRequest("unknown CA rotation stage %q", c.Stage)
	}
	s.Mesh = &m
	return nil
}

// TrustedCAs are the CA certificates (PEM) a member accepts at now: the signing CA, the next one during a
// rotation, and the replaced one until its grace ends. The signing CA comes first.
func (m *Mesh) TrustedCAs(now time.Time) []string {
	out := []string{m.CACert}
	if m.NextCACert != "" {
		out = append(out, m.NextCACert)
	}
	if m.OldCACert != "" && m.OldCAUntil.After(now) {
		out = append(out, m.OldCACert)
	}
	return out
}
