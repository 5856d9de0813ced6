package integration

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/node"
)

// TestUpdateThroughFollowerAfterWrite updates an app through the leader and at once through a follower, ten
// times. Neither request carries a precondition, so both must succeed, whichever node takes them.
//
// A regression test: PUT used to read the record from the node's local state and apply the merged record with
// CAS set to the ModifyIndex it read. A follower that had not yet applied the leader's last write (it learns the
// commit index with the next append) sent a stale CAS and the client, who read nothing, got 409 (or 404 right
// after the create): ten refusals out of ten.
func TestUpdateThroughFollowerAfterWrite(t *testing.T) {
	c := meshtest.New(t, 3, nil)
	leader := c.Leader()
	var follower *node.Node
	for _, n := range c.Nodes {
		if n != leader {
			follower = n
			break
		}
	}
	ctx := context.Background()
	viaLeader, viaFollower := client.New(leader.HTTPAddr(), c.AdminToken), client.New(follower.HTTPAddr(), c.AdminToken)
	if _, err := viaLeader.Post(ctx, "/v1/apps", map[string]any{"name": "web"}, nil); err != nil {
		t.Fatal(err)
	}
	conflicts := 0
	for i := range 10 {
		if _, err := viaLeader.Do(ctx, http.MethodPut, "/v1/apps/web", map[string]any{"branch": fmt.Sprintf("b%d", i)}, nil); err != nil {
			t.Fatalf("update %d through the leader: %v", i, err)
		}
		_, err := viaFollower.Do(ctx, http.MethodPut, "/v1/apps/web", map[string]any{"repo": fmt.Sprintf("/srv/git/web-%d.git", i)}, nil)
		if client.IsStatus(err, http.StatusConflict) || client.IsStatus(err, http.StatusNotFound) {
			conflicts++
			if conflicts == 1 {
				t.Logf("first refusal: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("update %d through follower %s: %v", i, follower.Name(), err)
		}
	}
	if conflicts > 0 {
		t.Errorf("%d of 10 updates without a precondition, sent through a follower right after a write through the leader, were refused (409 or 404)", conflicts)
	}
}
