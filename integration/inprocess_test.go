package integration

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/node"
)

// TestInProcessCluster runs three nodes in this process, built with the constructors the binary uses, and drives
// them through the API client: a write through a follower reaches every node; when the leader stops, another is
// elected and writes work again.
func TestInProcessCluster(t *testing.T) {
	c := meshtest.New(t, 3, nil)
	ctx := context.Background()
	leader := c.Leader()
	var follower *node.Node
	for _, n := range c.Nodes {
		if n != leader {
			follower = n
			break
		}
	}
	clientOf := func(n *node.Node) *client.Client { return client.New(n.HTTPAddr(), c.AdminToken) }

	var app api.AppView
	if _, err := clientOf(follower).Post(ctx, "/v1/apps", map[string]any{"name": "web", "repo": "/srv/git/web.git"}, &app); err != nil {
		t.Fatalf("create an app through follower %s: %v", follower.Name(), err)
	}
	if app.Name != "web" || app.Repo != "/srv/git/web.git" {
		t.Fatalf("created app %+v", app)
	}
	waitAppEverywhere(t, c.Nodes, c.AdminToken, "web", false)

	for i, n := range c.Nodes {
		if n == leader {
			c.Kill(i)
		}
	}
	newLeader := c.Leader()
	if newLeader.Name() == leader.Name() {
		t.Fatalf("the stopped leader %s still leads", leader.Name())
	}
	var survivor *node.Node
	for _, n := range c.Nodes {
		if n != nil && n != newLeader {
			survivor = n
		}
	}
	if err := createAppVia(t, clientOf(survivor), "after"); err != nil {
		t.Fatalf("write through %s after the leader stopped: %v", survivor.Name(), err)
	}
	waitAppEverywhere(t, c.Nodes, c.AdminToken, "after", true)
	waitAppEverywhere(t, c.Nodes, c.AdminToken, "web", true)
}

// waitAppEverywhere waits until every live node serves app, from local state or with ?consistent.
func waitAppEverywhere(t *testing.T, nodes []*node.Node, token, app string, consistent bool) {
	t.Helper()
	path := "/v1/apps/" + app
	if consistent {
		path += "?consistent"
	}
	testutil.Eventually(t, 10*time.Second, fmt.Sprintf("app %s on every node", app), func() (bool, string) {
		for _, n := range nodes {
			if n == nil {
				continue
			}
			cl := client.New(n.HTTPAddr(), token)
			cl.RetryNoLeader = 0
			var got api.AppView
			_, err := cl.Get(context.Background(), path, &got)
			if client.IsStatus(err, http.StatusNotFound) || (err == nil && got.Name != app) {
				return false, fmt.Sprintf("%s does not have it yet", n.Name())
			}
			if err != nil {
				return false, fmt.Sprintf("%s: %v", n.Name(), err)
			}
		}
		return true, ""
	})
}
