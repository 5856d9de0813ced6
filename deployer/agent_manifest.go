package deployer

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/shoal-ci/shoal/manifest"
)

// ErrNoManifest means a release archive holds no manifest, so the deployer cannot know its hooks.
var ErrNoManifest = errors.New("the release archive holds no manifest")

// ReadManifest finds the manifest in a release archive (tar.gz): the file at want (the app's manifest path)
// when given, else shoal.yml, else distelli-manifest.yml, at the archive's root. The deploy sections must be
// known before the archive is unpacked (PreInstall and Install run first), so the archive is read for it
// once before the lifecycle starts. It returns the file's name and its bytes.
func ReadManifest(archive io.Reader, want string) (string, []byte, error) {
	gz, err := gzip.NewReader(archive)
	if err != nil {
		return "", nil, fmt.Errorf("read release archive: %w", err)
	}
	defer gz.Close()
	candidates := []string{manifest.ShoalFile, manifest.DistelliFile}
	if want != "" {
		candidates = []string{path.Clean(strings.TrimPrefix(want, "./"))}
	}
	found := map[string][]byte{}
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", nil, fmt.Errorf("read release archive: %w", err)
		}
		name := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		for _, c := range candidates {
			if name != c || hdr.Typeflag != tar.TypeReg {
				continue
			}
			if hdr.Size > manifest.MaxSize {
				return "", nil, fmt.Errorf("manifest %s in the release is %d bytes, over the %d-byte limit", name, hdr.Size, manifest.MaxSize)
			}
			data, err := io.ReadAll(io.LimitReader(tr, manifest.MaxSize))
			if err != nil {
				return "", nil, fmt.Errorf("read %s from the release archive: %w", name, err)
			}
			found[name] = data
		}
	}
	for _, c := range candidates {
		if data, ok := found[c]; ok {
			return c, data, nil
		}
	}
	return "", nil, fmt.Errorf("%w (looked for %s at its root): the build must package the manifest; add it to PkgInclude",
		ErrNoManifest, strings.Join(candidates, ", "))
}

// HooksOf turns a manifest's deploy half into what a Lifecycle runs.
func HooksOf(m *manifest.Manifest) Hooks {
	h := Hooks{Sections: map[string][]string{}, Timeouts: map[string]time.Duration{}, ProcessCount: m.ProcessCount,
		Templates: m.InstallTemplates}
	for _, e := range m.Env {
		h.Env = append(h.Env, EnvVar{Key: e.Key, Value: e.Value})
	}
	for _, s := range scriptSections {
		if lines := m.Script(s); len(lines) > 0 {
			h.Sections[s] = lines
		}
		if d := m.Timeout(s); d > 0 {
			h.Timeouts[s] = d
		}
	}
	return h
}

// HealthOf is the manifest's health check as a HealthSpec, or nil when it has none. A command runs like the
// hooks (Lifecycle.HealthSpec sources the release's environment first), so it can use $PORT and the like;
// an HTTP URL is used as written.
func HealthOf(m *manifest.Manifest) *HealthSpec {
	hc := m.HealthCheck
	if hc == nil {
		return nil
	}
	spec := &HealthSpec{URL: hc.HTTP, Interval: hc.Interval, MinHealthy: hc.MinHealthy, Deadline: hc.Deadline}
	if hc.HTTP == "" {
		spec.Command = strings.Join(hc.Command, "\n")
	}
	return spec
}
