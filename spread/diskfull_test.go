package spread

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/internal/testtier"
)

// A release upload to a node whose disk is full answers 507 and says what to do, instead of a 400 that blames
// the archive; a bad version is refused before a byte is stored.
func TestUploadToAFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		testtier.Skip(t, "needs root to mount a small tmpfs as the node's blob store")
	}
	c := meshtest.New(t, 1, nil)
	n := c.Nodes[0]
	blobs := filepath.Join(n.DataDir(), "blobs")
	if err := os.MkdirAll(blobs, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", blobs).CombinedOutput(); err != nil {
		testtier.Skipf(t, "cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", blobs).Run() })
	s, err := Attach(n, c.API(n), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if _, err := client.New(n.HTTPAddr(), c.AdminToken).Post(context.Background(), "/v1/apps", map[string]any{"name": "web"}, nil); err != nil {
		t.Fatal(err)
	}
	upload := func(query string, size int) (int, string) {
		data := make([]byte, size)
		rand.Read(data)
		req, _ := http.NewRequest("POST", "http://"+n.HTTPAddr()+"/v1/apps/web/releases"+query, bytes.NewReader(data))
		req.Header.Set("Authorization", "Bearer "+c.AdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	before := n.FSM().Index()
	status, body := upload("", 4<<20)
	if status != http.StatusInsufficientStorage || !strings.Contains(body, "disk space") {
		t.Fatalf("upload to a full disk: %d %s, want 507 saying the disk is full", status, body)
	}
	if status, body := upload("?version=../evil", 1<<10); status != http.StatusBadRequest || !strings.Contains(body, "release") {
		t.Fatalf("upload as version ../evil: %d %s", status, body)
	}
	if n.FSM().Index() != before {
		t.Fatal("a refused upload changed the state")
	}
	// Once there is room again, uploads work.
	if status, body := upload("", 64<<10); status != http.StatusCreated {
		t.Fatalf("a small upload after the refusals: %d %s", status, body)
	}
}
