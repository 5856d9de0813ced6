package node

import (
	"context"
	"time"

	"github.com/shoal-ci/shoal/errs"
	"github.com/shoal-ci/shoal/raftfsm"
)

// RemoveMember removes a member that cannot leave by itself (lost, or no longer trusted): it records the
// departure in Raft as `node leave` does, so the leader takes it out of the Raft configuration and every member
// refuses its certificate and closes its connections. Its name can join again with a new join token; the
// certificates it held stay refused. by names who asked, for the log; a member that left already is removed.
func (n *Node) RemoveMember(ctx context.Context, name, by string, opts ...ApplyOption) error {
	if err := n.ConsistentRead(ctx); err != nil {
		return err
	}
	leader, _ := n.Leader()
	known := n.raftServers()[name]
	for _, m := range n.members.snapshot() {
		known = known || m.Name == name
	}
	switch {
	case n.departed()[name]:
		return nil
	case !known:
		return errs.New(raftfsm.KindNotFound, "no member is named %q: see `node members`", name)
	case name == leader:
		return errs.New(raftfsm.KindConflict, "%q leads the mesh: run `node leave` against it (it hands leadership off first), or stop it and remove it once another node leads", name)
	}
	if _, err := n.Apply(ctx, &raftfsm.MemberLeave{Name: name, At: time.Now().UTC()}, opts...); err != nil {
		return err
	}
	n.log.Warn("member removed by an admin", "component", "reconcile", "member", name, "by", by)
	return nil
}
