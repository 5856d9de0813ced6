package api_test

import (
	"net/http"
	"testing"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/internal/meshtest"
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
