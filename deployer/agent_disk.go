package deployer

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/shoal-ci/shoal/internal/fsutil"
	"github.com/shoal-ci/shoal/manifest"
	"github.com/shoal-ci/shoal/raftfsm"
)

// recordFile, in the environment directory, says which release the last completed install put behind
// `current`. It is written after the lifecycle finished, so `current` pointing elsewhere means an install
// was interrupted after its flip, and it is done again.
const recordFile = "installed.json"

// installRecord is what this node installed last in one environment. It keeps the release's manifest, so
// restart and terminate hooks, and the health check, need neither the archive nor Raft.
type installRecord struct {
	Release      string `json:"release"`
	Dir          string `json:"dir"` // base name under releases/
	Deployment   string `json:"deployment,omitempty"`
	Digest       string `json:"digest"`
	Build        string `json:"build,omitempty"`
	Commit       string `json:"commit,omitempty"`
	Branch       string `json:"branch,omitempty"`
	ManifestName string `json:"manifest_name"`
	Manifest     string `json:"manifest"`
	// Terminated is set by a terminate deployment: the release stays installed but must not run.
	Terminated bool `json:"terminated,omitempty"`
}

func (r *installRecord) parse() (*manifest.Manifest, error) {
	m, err := manifest.Parse(r.ManifestName, []byte(r.Manifest))
	if err != nil {
		return nil, fmt.Errorf("the installed release's manifest: %w", err)
	}
	return m, nil
}

func (r *installRecord) info() releaseInfo {
	return releaseInfo{Version: r.Release, Digest: r.Digest, Build: r.Build, Commit: r.Commit, Branch: r.Branch}
}

// releaseInfo is what a lifecycle needs of a release record.
type releaseInfo struct {
	Version, Digest, Build, Commit, Branch string
}

func releaseOf(r *raftfsm.Release) releaseInfo {
	return releaseInfo{Version: r.Version, Digest: r.Digest, Build: r.Build, Commit: r.Commit, Branch: r.Branch}
}

func loadRecord(envDir string) (*installRecord, error) {
	b, err := os.ReadFile(filepath.Join(envDir, recordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r installRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(envDir, recordFile), err)
	}
	return &r, nil
}

func saveRecord(envDir string, r *installRecord) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteAtomic(filepath.Join(envDir, recordFile), b, 0o644); err != nil {
		return fmt.Errorf("save install record: %w", err)
	}
	return nil
}

// currentBase is the base name of the release directory `current` points at, or "".
func currentBase(envDir string) string {
	cur, err := Current(envDir)
	if err != nil {
		return ""
	}
	if _, err := os.Stat(cur); err != nil {
		return ""
	}
	return filepath.Base(cur)
}

func baseName(dir string) string { return filepath.Base(dir) }

var safeVersion = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$`)

// dirName is a release's directory name: the version itself when it is a plain name, else a cleaned
// version with a hash of the original, so any custom version is a safe, unique directory name.
func dirName(version string) string {
	if safeVersion.MatchString(version) && !strings.HasSuffix(version, ".shoal") && !strings.Contains(version, ".extract") &&
		!strings.HasSuffix(version, ".partial") {
		return version
	}
	clean := regexp.MustCompile(`[^A-Za-z0-9._-]`).ReplaceAllString(version, "_")
	if len(clean) > 40 {
		clean = clean[:40]
	}
	sum := sha256.Sum256([]byte(version))
	return "r_" + clean + "-" + hex.EncodeToString(sum[:4])
}

// installDirFor picks the directory a release is installed into. The directory `current` points at is
// never reused (a forced redeploy, or a redo after an interrupted install), so the old release keeps
// running until the flip: the version's directory then alternates with "<version>~1".
func installDirFor(envDir, version, cur string) string {
	name := dirName(version)
	if name == cur {
		name += "~1"
	}
	return filepath.Join(envDir, "releases", name)
}

// pruneReleases keeps the active release and the keep-1 most recently installed others.
func pruneReleases(envDir string, keep int) error {
	dir := filepath.Join(envDir, "releases")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	cur := currentBase(envDir)
	type rel struct {
		name string
		mod  int64
	}
	var rels []rel
	for _, e := range entries {
		n := e.Name()
		if !e.IsDir() || n == cur || strings.HasSuffix(n, ".shoal") || strings.Contains(n, ".extract") || strings.HasSuffix(n, ".partial") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		// The run directory is written at every install of the release, so it dates the install.
		if ri, err := os.Stat(filepath.Join(dir, n+".shoal")); err == nil {
			info = ri
		}
		rels = append(rels, rel{n, info.ModTime().UnixNano()})
	}
	sort.Slice(rels, func(i, j int) bool { return rels[i].mod > rels[j].mod })
	var errs []error
	for i, r := range rels {
		if i < keep-1 {
			continue
		}
		if err := RemoveRelease(envDir, filepath.Join(dir, r.name)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
