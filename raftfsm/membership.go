package raftfsm

import (
	"fmt"
	"time"
)

// applyMemberRejoin clears a departure and records from when the name's certificates count again: a certificate
// issued to the departed node (still in its old data dir, and valid until it expires) stays refused.
func applyMemberRejoin(s *State, c *MemberRejoin) {
	floor := c.At
	if left, ok := s.Departed[c.Name]; ok && floor.IsZero() {
		floor = left // entries written before At existed: the departure time is the best bound there is
	}
	if !floor.IsZero() {
		s.CertFloor[c.Name] = floor
	}
	delete(s.Departed, c.Name)
}

// MemberCertError says why a certificate the mesh CA issued to node name at issued no longer admits it, or nil
// when it does: the node left or was removed (MemberLeave), or the certificate predates the node's last
// admission. It is what every node checks, against its own state, on every handshake and stream.
func (s *State) MemberCertError(name string, issued time.Time) error {
	if at, ok := s.Departed[name]; ok {
		return fmt.Errorf("it left or was removed at %s", at.UTC().Format(time.RFC3339))
	}
	if floor, ok := s.CertFloor[name]; ok && issued.Before(floor) {
		return fmt.Errorf("its certificate (issued %s) predates its admission of %s", issued.UTC().Format(time.RFC3339), floor.UTC().Format(time.RFC3339))
	}
	return nil
}
