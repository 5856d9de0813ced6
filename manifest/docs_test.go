package manifest

import (
	"os"
	"strings"
	"testing"

	"github.com/shoal-ci/shoal/internal/testtier"
)

// TestDocsExamples keeps the complete examples in docs/manifest.md valid: a reader copies them.
func TestDocsExamples(t *testing.T) {
	data, err := os.ReadFile("../docs/manifest.md")
	if err != nil {
		testtier.Skipf(t, "docs/manifest.md not found beside the package: %v", err)
	}
	doc := string(data)
	for _, ex := range []struct{ heading, file, format string }{
		{"## shoal.yml, complete", "shoal.yml", FormatShoal},
		{"## distelli-manifest.yml, complete", "distelli-manifest.yml", FormatDistelli},
	} {
		_, rest, ok := strings.Cut(doc, ex.heading)
		if !ok {
			t.Fatalf("docs/manifest.md lacks %q", ex.heading)
		}
		_, rest, ok = strings.Cut(rest, "```yaml\n")
		block, _, ok2 := strings.Cut(rest, "```\n")
		if !ok || !ok2 {
			t.Fatalf("no yaml block after %q", ex.heading)
		}
		m, err := Parse(ex.file, []byte(block))
		if err != nil {
			t.Fatalf("the %s example does not parse:\n%v", ex.file, err)
		}
		if m.Format != ex.format || len(m.Build) == 0 || len(m.Exec) == 0 || m.HealthCheck == nil || len(m.PkgInclude) == 0 {
			t.Errorf("the %s example parsed to %+v", ex.file, m)
		}
		if len(m.Warnings) != 0 {
			t.Errorf("the %s example warns: %q", ex.file, m.Warnings)
		}
	}
}
