package fsutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	for i, content := range []string{"first", "second, longer than the first", "3"} {
		mode := []os.FileMode{0o600, 0o755, 0o644}[i]
		if err := WriteAtomic(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Fatalf("write %d: read %q, %v", i, got, err)
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != mode {
			t.Fatalf("write %d: mode %v, want %v (an existing file's mode must not stay)", i, fi.Mode().Perm(), mode)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
	// A failed write leaves the old content and no temporary file.
	if err := WriteAtomic(filepath.Join(dir, "missing", "x"), []byte("y"), 0o600); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("write into a missing directory: %v", err)
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(dir, 0o700)
	if os.Geteuid() != 0 { // root writes into a read-only directory anyway
		if err := WriteAtomic(path, []byte("lost"), 0o600); err == nil {
			t.Fatal("a write into a read-only directory succeeded")
		}
		if got, _ := os.ReadFile(path); string(got) != "3" {
			t.Fatalf("a failed write changed the file: %q", got)
		}
	}
}
