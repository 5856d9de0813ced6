package deployer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestFlipCurrentIsNeverMissing(t *testing.T) {
	env := t.TempDir()
	var releases []string
	for i := range 4 {
		d := filepath.Join(env, "releases", fmt.Sprintf("v%d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "version"), []byte(fmt.Sprint(i)), 0o644); err != nil {
			t.Fatal(err)
		}
		releases = append(releases, d)
	}
	if _, err := Current(env); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Current before any flip: %v, want ErrNotExist", err)
	}
	if err := FlipCurrent(env, releases[0]); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var readerErr error
	reads := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			// Reading through the link is what a process starting in APPHOME does.
			if _, err := os.ReadFile(filepath.Join(env, CurrentLink, "version")); err != nil {
				readerErr = err
				return
			}
			reads++
		}
	}()
	for i := range 300 {
		want := releases[i%len(releases)]
		if err := FlipCurrent(env, want); err != nil {
			t.Fatal(err)
		}
		got, err := Current(env)
		if err != nil || got != want {
			t.Fatalf("Current = %q, %v; want %q", got, err, want)
		}
	}
	close(stop)
	wg.Wait()
	if readerErr != nil {
		t.Fatalf("a reader saw current missing or broken after %d reads: %v", reads, readerErr)
	}
	target, err := os.Readlink(filepath.Join(env, CurrentLink))
	if err != nil || target != filepath.Join("releases", "v3") {
		t.Fatalf("link target %q, %v; want the relative releases/v3", target, err)
	}
	entries, _ := os.ReadDir(env)
	if len(entries) != 2 {
		t.Fatalf("env dir holds %d entries, want releases and current only", len(entries))
	}
}

func TestFlipCurrentRefusesMissingRelease(t *testing.T) {
	env := t.TempDir()
	if err := FlipCurrent(env, filepath.Join(env, "nope")); err == nil {
		t.Fatal("flipped to a release that does not exist")
	}
	if _, err := os.Lstat(filepath.Join(env, CurrentLink)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("current was created anyway")
	}
	outside := t.TempDir()
	if err := FlipCurrent(env, outside); err != nil {
		t.Fatal(err)
	}
	if got, _ := Current(env); got != outside {
		t.Fatalf("Current = %q, want the absolute %q", got, outside)
	}
}
