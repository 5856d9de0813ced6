package spread

import (
	"context"
	"crypto/rand"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/node"
)

// TestFetchAnswersWithoutMajority: a mesh loses two of its three voters; a non-voter asked to fetch a release
// downloads it from the live holder, cannot record itself as a holder (no Raft majority), and answers 503 saying
// so within holderRecordWait instead of holding the request open.
func TestFetchAnswersWithoutMajority(t *testing.T) {
	old := holderRecordWait
	holderRecordWait = 2 * time.Second
	t.Cleanup(func() { holderRecordWait = old })
	c := meshtest.New(t, 4, nil)
	svc := map[*node.Node]*Service{}
	for _, n := range c.Nodes {
		s, err := Attach(n, c.API(n), Options{MinHolders: 1}) // no copies of its own: the fetch below is the only one
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		svc[n] = s
	}
	data := make([]byte, 1<<20)
	rand.Read(data)
	rel := publish(t, c, svc, "web", data)
	leader := c.Leader()
	roles := c.RaftServers()
	var fetcher *node.Node
	for _, n := range c.Nodes {
		if roles[n.Name()] == "nonvoter" {
			fetcher = n
		}
	}
	if fetcher == nil {
		t.Fatalf("no non-voter in %v", roles)
	}
	c.Eventually(10*time.Second, "the non-voter to know the release", func() bool { return release(fetcher, "web", "v1") != nil })
	for i, n := range c.Nodes {
		if n != leader && n != fetcher {
			svc[n].Close()
			c.Kill(i)
		}
	}
	cl := client.New(fetcher.HTTPAddr(), c.AdminToken)
	cl.RetryNoLeader = 0
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	_, err := cl.Post(ctx, "/v1/apps/web/releases/v1/fetch", struct{}{}, nil)
	t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
	if !client.IsStatus(err, http.StatusServiceUnavailable) || !strings.Contains(err.Error(), "is held whole on this node") {
		t.Fatalf("fetch without a majority answered %v; want 503 saying the archive is held but not recorded", err)
	}
	if !svc[fetcher].Store().Complete(rel.Digest) {
		t.Fatal("the archive is not whole on the fetching node")
	}
}
