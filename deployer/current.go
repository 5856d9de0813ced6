package deployer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/shoal-ci/shoal/internal/fsutil"
)

// CurrentLink is the name of the symlink in an environment directory that points at the active release.
const CurrentLink = "current"

// FlipCurrent points envDir/current at releaseDir atomically: the new link is made under a temporary
// name and renamed over the old one, so a reader (or a crash) sees the old release or the new one, never
// no link. The directory is fsynced so the flip survives a power cut. A releaseDir inside envDir is
// stored relative, so the data directory can be moved as a whole.
func FlipCurrent(envDir, releaseDir string) error {
	fi, err := os.Stat(releaseDir)
	if err != nil {
		return fmt.Errorf("flip %s to %s: %w", filepath.Join(envDir, CurrentLink), releaseDir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("flip %s to %s: not a directory", filepath.Join(envDir, CurrentLink), releaseDir)
	}
	target := releaseDir
	absEnv, err1 := filepath.Abs(envDir)
	absRel, err2 := filepath.Abs(releaseDir)
	if err1 == nil && err2 == nil {
		target = absRel
		if rel, err := filepath.Rel(absEnv, absRel); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
			target = rel
		}
	}
	link := filepath.Join(envDir, CurrentLink)
	// One fixed temporary name: a leftover from a crash is simply replaced. Flips of one environment
	// are serialized by its deployer.
	tmp := filepath.Join(envDir, "."+CurrentLink+".new")
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("flip %s: remove leftover %s: %w", link, tmp, err)
	}
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("flip %s: %w", link, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("flip %s (is it a real directory instead of a symlink? move it away): %w", link, err)
	}
	if err := fsutil.SyncDir(envDir); err != nil {
		return fmt.Errorf("flip %s: %w", link, err)
	}
	return nil
}

// Current returns the release directory envDir/current points at, as an absolute path when envDir is
// absolute. The error wraps fs.ErrNotExist when no release has been flipped in yet.
func Current(envDir string) (string, error) {
	link := filepath.Join(envDir, CurrentLink)
	target, err := os.Readlink(link)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", link, err)
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(envDir, target)
	}
	return target, nil
}
