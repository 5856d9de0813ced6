package node_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/transport"
)

// TestCommandWaitsForEveryMemberToKnowIt stands n3 for a voter that runs an older Shoal, one that does not know
// the command type RetentionSet: the leader does not commit that command (n3 would stop at the entry), answers
// 503 naming n3 when the write's deadline passes, and changes nothing; other commands go on. Once n3 restarts
// knowing it (upgraded), a write that was waiting is committed.
func TestCommandWaitsForEveryMemberToKnowIt(t *testing.T) {
	old := slices.DeleteFunc(raftfsm.Known(), func(ct raftfsm.CommandType) bool { return ct == raftfsm.CmdRetentionSet })
	patient := func(cfg *node.Config) { cfg.LeaderWait = 60 * time.Second }
	c := meshtest.New(t, 2, patient)
	c.Join("n3", func(cfg *node.Config) { patient(cfg); cfg.AdvertiseCommands = old })
	c.WaitRaftMembers(3)
	c.Eventually(20*time.Second, "the leader to hear n3's command set", func() bool {
		_, missing := c.Leader().CommandsInCommon(raftfsm.CmdRetentionSet)
		return slices.Equal(missing, []string{"n3"})
	})

	adminID, _, _ := strings.Cut(c.AdminToken, ".")
	admin := func(ctx context.Context) context.Context { return node.WithTokenID(ctx, adminID) }
	ctx, cancel := context.WithTimeout(admin(context.Background()), 2*time.Second)
	defer cancel()
	_, err := c.Nodes[0].Apply(ctx, &raftfsm.RetentionSet{Retention: raftfsm.Retention{Builds: 7}})
	var re *transport.RemoteError
	if !errors.As(err, &re) || re.Code != node.CodeUnavailable || !strings.Contains(re.Message, "n3") || !strings.Contains(re.Message, "upgrade") {
		t.Fatalf("a command n3 does not know: %v, want 503 unavailable naming n3", err)
	}
	c.Nodes[0].FSM().Read(func(s *raftfsm.State) {
		if s.Retention != nil && s.Retention.Builds == 7 {
			t.Fatal("the refused command was committed")
		}
	})
	ctx2, cancel2 := context.WithTimeout(admin(context.Background()), 10*time.Second)
	defer cancel2()
	if _, err := c.Nodes[1].Apply(ctx2, &raftfsm.AppPut{App: raftfsm.App{Name: "web", Repo: "/r", Branch: "main", Manifest: "m"}, Create: true}); err != nil {
		t.Fatalf("a command every member knows: %v", err)
	}

	// A write that waits is committed once n3 is upgraded.
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(admin(context.Background()), 50*time.Second)
		defer cancel()
		_, err := c.Nodes[1].Apply(ctx, &raftfsm.RetentionSet{Retention: raftfsm.Retention{Builds: 8}})
		done <- err
	}()
	time.Sleep(300 * time.Millisecond) // the write is waiting (it cannot finish before n3 restarts)
	select {
	case err := <-done:
		t.Fatalf("the write did not wait for n3: %v", err)
	default:
	}
	c.Kill(2)
	n3, err := node.Open(meshtest.Config(t, c.Dir, "n3"))
	if err != nil {
		t.Fatal(err)
	}
	c.Put(2, n3)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the waiting write after n3's upgrade: %v", err)
		}
	case <-time.After(55 * time.Second):
		t.Fatal("the waiting write never ended")
	}
	c.Eventually(10*time.Second, "every node to apply the retention", func() bool {
		for _, n := range c.Nodes {
			var b int
			n.FSM().Read(func(s *raftfsm.State) {
				if s.Retention != nil {
					b = s.Retention.Builds
				}
			})
			if b != 8 {
				return false
			}
		}
		return true
	})
}
