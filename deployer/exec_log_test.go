package deployer

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRotateExecLogUnderAWriter: a real process appends to the log (O_APPEND, as an Exec copy does) while the
// log is rotated again and again: the files stay bounded, the live log never grows a hole of NUL bytes (the
// writer's next write lands at the new end), at most keep copies exist, and the lines stay in order.
func TestRotateExecLogUnderAWriter(t *testing.T) {
	if _, err := os.Stat("/bin/bash"); err != nil {
		t.Skip("needs bash")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, execLogName)
	// Each line is "line N" plus padding; the writer never reopens the file.
	cmd := exec.Command("/bin/bash", "-c", `i=0; while :; do printf 'line %d %0100d\n' $i 0; i=$((i+1)); done >>"$1"`, "bash", path)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	const maxSize, keep = 64 << 10, 3
	rotations := 0
	deadline := time.Now().Add(20 * time.Second)
	for rotations < 8 && time.Now().Before(deadline) {
		ok, err := rotateExecLog(path, maxSize, keep)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			rotations++
		}
		time.Sleep(5 * time.Millisecond) // the writer's pace is the test's clock; nothing waits on it
	}
	if rotations < 8 {
		t.Fatalf("only %d rotations in 20 s", rotations)
	}
	cmd.Process.Kill()
	cmd.Wait()
	files, _ := filepath.Glob(path + "*")
	if len(files) != keep+1 {
		t.Fatalf("files %v: want the log and %d copies", files, keep)
	}
	// Read the copies oldest first, then the live log: the line numbers must rise; a gap is what a rotation lost
	// (written between its copy and its truncation).
	var paths []string
	for i := keep; i >= 1; i-- {
		paths = append(paths, path+"."+strconv.Itoa(i))
	}
	paths = append(paths, path)
	last, first, lost := -1, -1, 0
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.IndexByte(b, 0) >= 0 {
			t.Fatalf("%s holds NUL bytes: the writer wrote past a hole", p)
		}
		// The live log starts with the rotation's note, or with a line the writer appended before the note.
		if p == path && len(b) > 0 && !strings.HasPrefix(string(b), "--- shoal: log rotated at ") && !strings.HasPrefix(string(b), "line ") {
			t.Fatalf("the live log starts with %.60q", b)
		}
		for _, line := range strings.Split(string(b), "\n") {
			var n int
			if _, err := fmt.Sscanf(line, "line %d", &n); err != nil {
				continue // the rotation notes
			}
			if n <= last {
				t.Fatalf("%s: line %d after line %d", p, n, last)
			}
			if last >= 0 {
				lost += n - last - 1
			}
			if first < 0 {
				first = n
			}
			last = n
		}
	}
	// A figure, not a bound (docs/benchmarks.md): lines lost by copy-truncate while the writer ran flat out.
	t.Logf("copy-truncate: %d rotations of a %d-byte log, %d of %d lines lost (%.3f%%)", rotations, maxSize, lost, last-first+1,
		100*float64(lost)/float64(max(1, last-first+1)))
}

func TestReadExecLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, execLogName)
	if c, err := readExecLog(path, -1, 10); err != nil || !c.Missing {
		t.Fatalf("missing log: %+v %v", c, err)
	}
	var all strings.Builder
	for i := range 50 {
		fmt.Fprintf(&all, "line %d\n", i)
	}
	os.WriteFile(path, []byte(all.String()), 0o644)
	c, err := readExecLog(path, -1, 3)
	if err != nil || string(c.Data) != "line 47\nline 48\nline 49\n" || c.Next != int64(all.Len()) {
		t.Fatalf("tail 3: %q next %d, %v", c.Data, c.Next, err)
	}
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("more\n")
	c, _ = readExecLog(path, c.Next, 0)
	if string(c.Data) != "more\n" {
		t.Fatalf("after the tail: %q", c.Data)
	}
	// Rotated: the rest of the copy comes first, then the new log from 0.
	off := c.Next
	f.WriteString("before the rotation\n")
	if ok, err := rotateExecLog(path, 10, 2); !ok || err != nil {
		t.Fatalf("rotate: %v %v", ok, err)
	}
	f.WriteString("after\n")
	f.Close()
	c, _ = readExecLog(path, off, 0)
	if string(c.Data) != "before the rotation\n" || c.Next != 0 {
		t.Fatalf("across the rotation: %q next %d", c.Data, c.Next)
	}
	c, _ = readExecLog(path, 0, 0)
	if !strings.Contains(string(c.Data), "log rotated") || !strings.HasSuffix(string(c.Data), "after\n") {
		t.Fatalf("the new log: %q", c.Data)
	}
	if got := string(lastLines([]byte("a\nb\nc"), 2)); got != "b\nc" {
		t.Fatalf("lastLines without a final newline: %q", got)
	}
}
