package manifest

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// fuzzParse checks what Parse promises for any input: no panic, and either a manifest or an ErrorList whose
// every error names the file.
func fuzzParse(t *testing.T, filename string, data []byte) {
	m, err := Parse(filename, data)
	if err != nil {
		var list ErrorList
		if !errors.As(err, &list) || len(list) == 0 {
			t.Fatalf("error %v (%T) is not a non-empty ErrorList", err, err)
		}
		for _, e := range list {
			if e.File != filename {
				t.Fatalf("error %q names file %q, want %q", e.Error(), e.File, filename)
			}
		}
		return
	}
	if m == nil {
		t.Fatal("Parse returned neither a manifest nor an error")
	}
}

func addSeeds(f *testing.F, pattern string, extra ...string) {
	files, _ := filepath.Glob(pattern)
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, s := range extra {
		f.Add([]byte(s))
	}
}

// FuzzParseShoal parses arbitrary shoal.yml files.
func FuzzParseShoal(f *testing.F) {
	addSeeds(f, "testdata/*shoal*.yml",
		"app: web\nbuild:\n  script: [make]\npackage:\n  include: ['*']\ndeploy:\n  exec: [./web]\n",
		"deploy:\n  health_check:\n    command: [true]\n    interval: 100ms\n    deadline: 10s\n",
		"env:\n  A: 1\nbuild: {script: \"x\"}\n", "{}", "- a\n- b\n", "a: &x [*x]\n")
	f.Fuzz(func(t *testing.T, data []byte) { fuzzParse(t, "shoal.yml", data) })
}

// FuzzParseDistelli parses arbitrary distelli-manifest.yml files.
func FuzzParseDistelli(f *testing.F) {
	addSeeds(f, "testdata/*distelli*.yml",
		"me/Web:\n  Build:\n    - make\n  PkgInclude:\n    - '*'\n  Exec:\n    - ./web\n",
		"me/Web:\n  PreInstall: [echo hi]\n  Env:\n    - PORT: 8080\n", "me/A:\n", "x: 1\n")
	f.Fuzz(func(t *testing.T, data []byte) { fuzzParse(t, "distelli-manifest.yml", data) })
}
