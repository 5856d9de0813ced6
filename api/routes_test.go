package api_test

import (
	"net/http"
	"testing"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// TestRouteGroupOutlivesNoService: a service's routes answer while it runs, 503 (not a stale handler, not "no
// route") once it stopped, and the handler of a service attached again once it is back.
func TestRouteGroupOutlivesNoService(t *testing.T) {
	c := meshtest.New(t, 1, nil)
	n, srv := c.Nodes[0], c.APIs[0]
	serve := func(answer int) *api.RouteGroup {
		g := srv.RouteGroup()
		g.Handle("GET /v1/things/{id}", "", func(w http.ResponseWriter, r *http.Request) error {
			w.WriteHeader(answer)
			return nil
		})
		return g
	}
	first := serve(http.StatusOK)
	if code := call(t, n, "", "GET", "/v1/things/x", nil, nil); code != http.StatusOK {
		t.Fatalf("while the service runs: %d", code)
	}
	first.Close()
	if code := call(t, n, "", "GET", "/v1/things/x", nil, nil); code != http.StatusServiceUnavailable {
		t.Fatalf("after the service stopped: %d, want 503", code)
	}
	second := serve(http.StatusAccepted)
	defer second.Close()
	if code := call(t, n, "", "GET", "/v1/things/x", nil, nil); code != http.StatusAccepted {
		t.Fatalf("after the service was attached again: %d, want the new handler's 202", code)
	}
	// A service attached again before the old one's Close: the old Close takes nothing from the new one.
	third := serve(http.StatusCreated)
	defer third.Close()
	second.Close()
	if code := call(t, n, "", "GET", "/v1/things/x", nil, nil); code != http.StatusCreated {
		t.Fatalf("the replaced group's Close removed the new handler: %d, want 201", code)
	}
}

// TestEarlyRouteIsNotMissing: a node whose services attach after it opens (daemon.Main) answers a route they
// will serve with 503 "starting" until they are ready, not 404 "no API route" (clients retry a 503).
func TestEarlyRouteIsNotMissing(t *testing.T) {
	c := meshtest.New(t, 1, nil, meshtest.WithAPI(api.Config{AwaitServices: true}))
	n, srv := c.Nodes[0], c.APIs[0]
	if code := call(t, n, c.AdminToken, "GET", "/v1/envs/prod/deployments", nil, nil); code != http.StatusServiceUnavailable {
		t.Fatalf("before the services are ready: %d, want 503", code)
	}
	srv.ServicesReady()
	if code := call(t, n, c.AdminToken, "GET", "/v1/envs/prod/deployments", nil, nil); code != http.StatusNotFound {
		t.Fatalf("once the services are ready, a route nobody serves: %d, want 404", code)
	}
}

// TestEnvRuntimeIsGivenMembers: GET /v1/envs/{env} reads gossip's view before it takes the state's read lock and
// hands it to the deployer's runtime function, which must not read it itself (node.Members reads the state, and
// a read lock taken again while a Raft apply waits for the write lock deadlocked the request and the apply).
func TestEnvRuntimeIsGivenMembers(t *testing.T) {
	c := meshtest.New(t, 1, nil)
	n, srv := c.Nodes[0], c.APIs[0]
	for _, req := range []struct {
		path string
		body map[string]any
	}{{"/v1/apps", map[string]any{"name": "web"}}, {"/v1/envs", map[string]any{"name": "prod", "app": "web"}}} {
		if code := call(t, n, c.AdminToken, "POST", req.path, req.body, nil); code != http.StatusCreated {
			t.Fatalf("POST %s: %d", req.path, code)
		}
	}
	var got []string
	srv.SetEnvRuntime(func(s *raftfsm.State, e *raftfsm.Env, members []node.Member) any {
		got = got[:0]
		for _, m := range members {
			got = append(got, m.Name+"="+m.Status)
		}
		return map[string]any{"env": e.Name, "members": len(members)}
	})
	defer srv.SetEnvRuntime(nil)
	var v struct {
		Runtime struct {
			Env     string `json:"env"`
			Members int    `json:"members"`
		} `json:"runtime"`
	}
	if code := call(t, n, c.AdminToken, "GET", "/v1/envs/prod", nil, &v); code != http.StatusOK {
		t.Fatalf("GET /v1/envs/prod: %d", code)
	}
	if v.Runtime.Env != "prod" || v.Runtime.Members != 1 || len(got) != 1 || got[0] != n.Name()+"="+node.StatusAlive {
		t.Fatalf("runtime %+v, members given %v: want prod and this node alone, alive", v.Runtime, got)
	}
}
