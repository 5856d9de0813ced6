package builder

import (
	"fmt"
	"path"
	"strings"
)

// glob is one PkgInclude or PkgExclude pattern, split into path segments. `*`, `?` and `[...]` match within
// a segment (path.Match); a `**` segment matches any number of segments, none included.
type glob struct {
	text    string // as the manifest wrote it, for messages
	segs    []string
	dirOnly bool // written with a trailing "/": matches directories only
}

func parseGlob(text string) (glob, error) {
	p := strings.TrimPrefix(text, "./")
	g := glob{text: text, dirOnly: strings.HasSuffix(p, "/")}
	p = strings.TrimSuffix(p, "/")
	if p == "" || p == "." {
		p = "*" // the whole checkout
	}
	if strings.HasPrefix(p, "/") {
		return glob{}, fmt.Errorf("glob %q is absolute: globs are relative to the repository root", text)
	}
	for _, s := range strings.Split(p, "/") {
		if s == ".." {
			return glob{}, fmt.Errorf("glob %q climbs out of the repository with \"..\"", text)
		}
		if _, err := path.Match(s, ""); err != nil {
			return glob{}, fmt.Errorf("glob %q is not valid: %w", text, err)
		}
		if s != "" && s != "." {
			g.segs = append(g.segs, s)
		}
	}
	return g, nil
}

// match reports whether the path given as segments matches; isDir says whether it names a directory.
func (g glob) match(segs []string, isDir bool) bool {
	if g.dirOnly && !isDir {
		return false
	}
	return matchSegs(g.segs, segs)
}

// matchAnyDepth matches a pattern without "/" against a single name, as .gitignore does: `node_modules`
// and `*.log` then exclude at every depth.
func (g glob) matchAnyDepth() bool { return len(g.segs) == 1 && g.segs[0] != "**" }

func matchSegs(pat, name []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for len(pat) > 1 && pat[1] == "**" {
				pat = pat[1:]
			}
			for i := 0; i <= len(name); i++ {
				if matchSegs(pat[1:], name[i:]) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], name[0]); !ok {
			return false
		}
		pat, name = pat[1:], name[1:]
	}
	return len(name) == 0
}
