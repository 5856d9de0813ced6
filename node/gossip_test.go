package node

import (
	"net"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestMemberTablePrune(t *testing.T) {
	tab := newMemberTable()
	for _, name := range []string{"alive", "dead-old", "dead-in-raft", "dead-new"} {
		tab.set(&memberlist.Node{Name: name, Addr: net.IPv4(127, 0, 0, 1), Port: 1}, StatusAlive)
	}
	for _, name := range []string{"dead-old", "dead-in-raft", "dead-new"} {
		tab.set(&memberlist.Node{Name: name, Addr: net.IPv4(127, 0, 0, 1), Port: 1}, StatusDead)
	}
	old := time.Now().Add(-2 * time.Hour)
	tab.members["dead-old"].Since, tab.members["dead-in-raft"].Since, tab.members["alive"].Since = old, old, old
	tab.prune(time.Hour, func(name string) bool { return name == "dead-in-raft" })
	var names []string
	for _, m := range tab.snapshot() {
		names = append(names, m.Name)
	}
	if len(names) != 3 || names[0] != "alive" || names[1] != "dead-in-raft" || names[2] != "dead-new" {
		t.Fatalf("after prune: %v", names)
	}
}
