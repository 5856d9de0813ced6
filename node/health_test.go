package node_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/internal/testtier"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/node"
)

// /healthz fails while the node cannot write its Raft log (here: the log's file system is full), says why, and
// recovers when the disk does.
func TestHealthzFailsWhileTheLogCannotBeWritten(t *testing.T) {
	if os.Geteuid() != 0 {
		testtier.Skip(t, "needs root to mount a file system for the raft log and make it read-only")
	}
	dir := t.TempDir()
	raftPath := filepath.Join(dir, "n1", node.RaftDir)
	if err := os.MkdirAll(raftPath, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", raftPath).CombinedOutput(); err != nil {
		testtier.Skipf(t, "cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", raftPath).Run() })
	n, _, err := node.Init(meshtest.Config(t, dir, "n1"), "test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	meshtest.Serve(t, n, api.Config{})
	health := func() (int, string) {
		resp, err := http.Get("http://" + n.HTTPAddr() + "/healthz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, body := health(); status != http.StatusOK {
		t.Fatalf("healthz of a healthy node: %d %s", status, body)
	}
	filler := filepath.Join(raftPath, "filler")
	if out, err := exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=1M").CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "No space left") {
		t.Fatalf("fill the raft log's file system: %v %s", err, out)
	}
	testutil.Eventually(t, 10*time.Second, "healthz to meshtest.Answer 503 naming "+raftPath+" with a full raft log disk", func() (bool, string) {
		status, body := health()
		return status == http.StatusServiceUnavailable && strings.Contains(body, raftPath), fmt.Sprintf("%d %s", status, body)
	})
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "healthz to meshtest.Answer 200 after the disk recovered", func() (bool, string) {
		status, body := health()
		return status == http.StatusOK, fmt.Sprintf("%d %s", status, body)
	})
}
