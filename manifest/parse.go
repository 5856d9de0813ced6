package manifest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// Default manifest file names, in the order Load looks for them.
const (
	ShoalFile    = "shoal.yml"
	DistelliFile = "distelli-manifest.yml"
)

// MaxSize bounds a manifest file: a recipe is a few kilobytes, and the bound keeps a stray binary from being
// read into memory.
const MaxSize = 1 << 20

// ErrNotFound is returned (wrapped) by Load when the repository has no manifest where one was expected.
var ErrNotFound = errors.New("manifest not found")

// Parse reads a manifest from data; filename is used in messages and to choose the format: a file named
// distelli-manifest.yml (or .yaml) is Distelli's; any other is Distelli's when its root keys look like
// "user/App", else shoal.yml's. Errors are an ErrorList of *Error, each placed file:line:column.
func Parse(filename string, data []byte) (*Manifest, error) {
	p := &parser{file: filename}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, ErrorList{syntaxError(filename, data, err)}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return nil, ErrorList{{File: filename, Msg: "the manifest is empty: docs/manifest.md shows a complete example"}}
	}
	root := doc.Content[0]
	var m *Manifest
	if isDistelli(filename, root) {
		m = p.parseDistelli(root)
	} else {
		m = p.parseShoal(root)
	}
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	m.Warnings = p.warnings
	return m, nil
}

func isDistelli(filename string, root *yaml.Node) bool {
	base := strings.ToLower(filepath.Base(filename))
	if base == "distelli-manifest.yml" || base == "distelli-manifest.yaml" {
		return true
	}
	root = resolve(root)
	if root.Kind != yaml.MappingNode || len(root.Content) == 0 {
		return false
	}
	for i := 0; i < len(root.Content); i += 2 {
		if !strings.Contains(root.Content[i].Value, "/") {
			return false
		}
	}
	return true
}

// Load reads the manifest of a checked-out repository at dir. path is the manifest's path inside the
// repository; "" means shoal.yml, else distelli-manifest.yml. It returns the manifest and the path of the
// file it read. The file must stay inside dir: a path with "..", or a symlink leading out, is refused.
func Load(dir string, path string) (*Manifest, string, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, "", fmt.Errorf("open the repository checkout %s: %w", dir, err)
	}
	defer root.Close()
	candidates := []string{ShoalFile, DistelliFile}
	if path != "" {
		if !filepath.IsLocal(path) {
			return nil, "", fmt.Errorf("manifest path %q must be relative to the repository root and stay inside it: fix the app's manifest path", path)
		}
		candidates = []string{filepath.Clean(path)}
	}
	for _, name := range candidates {
		data, err := readLimited(root, name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, name, err
		}
		m, err := Parse(name, data)
		return m, name, err
	}
	if path != "" {
		return nil, "", fmt.Errorf("%w: %s is not in the repository: add it or fix the app's manifest path", ErrNotFound, path)
	}
	return nil, "", fmt.Errorf("%w: the repository has neither %s nor %s at its root: add one (docs/manifest.md shows both)", ErrNotFound, ShoalFile, DistelliFile)
}

func readLimited(root *os.Root, name string) ([]byte, error) {
	fi, err := root.Stat(name)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("manifest %s is not a regular file", name)
	}
	if fi.Size() > MaxSize {
		return nil, fmt.Errorf("manifest %s is %d bytes, over the %d-byte limit: a manifest holds commands, not data", name, fi.Size(), MaxSize)
	}
	data, err := root.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", name, err)
	}
	return data, nil
}
