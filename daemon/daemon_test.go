package daemon

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/node"
)

// TestMainRunsAndRestarts: Init runs the node and every service (their routes answer, not the node's "no API
// route"); Close stops it and a second Close does nothing; Open runs it again from its data dir; a Main that
// cannot start returns the error and leaves nothing running.
func TestMainRunsAndRestarts(t *testing.T) {
	dir := t.TempDir()
	m := &Main{Config: meshtest.Config(t, dir, "n1"), Start: Init, MeshName: "t"}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	token := m.InitResult.AdminToken
	for _, path := range []string{"/v1/envs/none/deployments", "/v1/builds/none", "/v1/subscriptions", "/ui/"} {
		if code, body := get(t, m.Node, token, path); code == http.StatusNotFound && strings.Contains(body, "no API route") {
			t.Errorf("GET %s: no route: a service is missing (%s)", path, body)
		}
	}
	if m.SpreadSvc == nil || m.BuilderSvc == nil || m.DeploySvc == nil || m.NotifySvc == nil {
		t.Fatalf("services not set: %+v", m)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	again := &Main{Config: meshtest.Config(t, dir, "n1"), Start: Open, Services: NodeOnly}
	if err := again.Run(context.Background()); err != nil {
		t.Fatalf("open the data dir again: %v", err)
	}
	if again.DeploySvc != nil {
		t.Fatal("NodeOnly started the deployer")
	}
	if code, body := get(t, again.Node, token, "/v1/envs/none/deployments"); code != http.StatusNotFound || !strings.Contains(body, "no API route") {
		t.Fatalf("NodeOnly: the deployer's route answers %d %s", code, body)
	}
	testutil.Until(t, 10*time.Second, "the reopened sole voter to lead", again.Node.IsLeader)
	again.Close()

	bad := &Main{Config: meshtest.Config(t, t.TempDir(), "n2"), Start: Open}
	if err := bad.Run(context.Background()); err == nil || bad.Node != nil {
		t.Fatalf("open an empty data dir: %v, node %v", err, bad.Node)
	}
	if err := bad.Close(); err != nil {
		t.Fatalf("Close after a failed Run: %v", err)
	}
}

func get(t *testing.T, n *node.Node, token, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+n.HTTPAddr()+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	k, _ := resp.Body.Read(buf)
	b.Write(buf[:k])
	return resp.StatusCode, b.String()
}
