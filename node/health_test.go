package node

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/testtier"
)

// /healthz fails while the node cannot write its Raft log (here: the log's file system is full), says why, and
// recovers when the disk does.
func TestHealthzFailsWhileTheLogCannotBeWritten(t *testing.T) {
	if os.Geteuid() != 0 {
		testtier.Skip(t, "needs root to mount a file system for the raft log and make it read-only")
	}
	dir := t.TempDir()
	raftPath := filepath.Join(dir, "n1", raftDir)
	if err := os.MkdirAll(raftPath, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", raftPath).CombinedOutput(); err != nil {
		testtier.Skipf(t, "cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", raftPath).Run() })
	n, _, err := Init(TestConfig(t, dir, "n1"), "test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	health := func() (int, string) { return httpGet("http://"+n.HTTPAddr()+"/healthz", "") }
	if status, body := health(); status != http.StatusOK {
		t.Fatalf("healthz of a healthy node: %d %s", status, body)
	}
	filler := filepath.Join(raftPath, "filler")
	if out, err := exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=1M").CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "No space left") {
		t.Fatalf("fill the raft log's file system: %v %s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, body := health()
		if status == http.StatusServiceUnavailable && strings.Contains(body, raftPath) {
			t.Logf("healthz with a full disk: %s", body)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthz with a full raft log disk: %d %s, want 503 naming %s", status, body, raftPath)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		status, body := health()
		if status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthz after the disk recovered: %d %s", status, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
