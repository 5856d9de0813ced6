package manifest

import (
	"fmt"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// parser walks a yaml.Node tree, collecting every error and warning with its position instead of stopping
// at the first.
type parser struct {
	file     string
	errs     ErrorList
	warnings []string
}

func (p *parser) errorf(n *yaml.Node, format string, args ...any) {
	e := &Error{File: p.file, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	p.errs = append(p.errs, e)
}

func (p *parser) warnf(n *yaml.Node, format string, args ...any) {
	p.warnings = append(p.warnings, fmt.Sprintf("%s:%d:%d: %s", p.file, n.Line, n.Column, fmt.Sprintf(format, args...)))
}

// resolve follows YAML aliases (*name) to the anchored node, so anchors work everywhere.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 16; i++ {
		n = n.Alias
	}
	return n
}

// kindName describes a node for "got ..." messages.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "nothing"
		case "!!int", "!!float":
			return "a number (" + n.Value + ")"
		case "!!bool":
			return "a boolean (" + n.Value + ")"
		}
		return fmt.Sprintf("the text %q", n.Value)
	}
	return "an unexpected YAML node"
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// pair is one key and its value in a mapping.
type pair struct {
	key, val *yaml.Node
}

// mapping returns the entries of a mapping node, reporting duplicate and non-text keys (yaml.v3 does not
// reject duplicates when parsing into a Node). A null node is an empty mapping.
func (p *parser) mapping(n *yaml.Node, what string) ([]pair, bool) {
	n = resolve(n)
	if isNull(n) {
		return nil, true
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, "%s must be a mapping of keys to values, got %s", what, kindName(n))
		return nil, false
	}
	seen := map[string]*yaml.Node{}
	var pairs []pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.errorf(k, "%s has a key that is %s: keys must be plain names", what, kindName(k))
			continue
		}
		if k.Value == "<<" {
			p.errorf(k, "%s uses a YAML merge key (<<), which manifests do not support: write the keys out", what)
			continue
		}
		if first, dup := seen[k.Value]; dup {
			p.errorf(k, "%s appears twice in %s (first at line %d): keep one", k.Value, what, first.Line)
			continue
		}
		seen[k.Value] = k
		pairs = append(pairs, pair{k, resolve(v)})
	}
	return pairs, true
}

// unknownKey reports a key that is not part of the format, with a suggestion when it is a near miss, so that
// a typo fails loudly instead of silently skipping a section.
func (p *parser) unknownKey(k *yaml.Node, where string, known []string) {
	msg := fmt.Sprintf("unknown key %q in %s", k.Value, where)
	if s := suggest(k.Value, known); s != "" {
		msg += fmt.Sprintf(": did you mean %q?", s)
	} else if len(known) <= 16 {
		msg += fmt.Sprintf(" (known keys: %s)", strings.Join(known, ", "))
	} else {
		msg += " (docs/manifest.md lists the keys)"
	}
	p.errorf(k, "%s", msg)
}

// suggest returns the known name closest to a misspelt one, or "" when none is close.
func suggest(name string, known []string) string {
	best, bestDist := "", 3
	lower := strings.ToLower(strings.ReplaceAll(name, "_", ""))
	for _, k := range known {
		kl := strings.ToLower(strings.ReplaceAll(k, "_", ""))
		if kl == lower {
			return k
		}
		if d := editDistance(lower, kl); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// script reads a section: a list of shell lines (Distelli's form) or one text block. Items that are numbers
// or booleans are taken as their text; an empty item is skipped.
func (p *parser) script(n *yaml.Node, what string) []string {
	n = resolve(n)
	switch {
	case isNull(n):
		return nil
	case n.Kind == yaml.ScalarNode:
		return []string{n.Value}
	case n.Kind != yaml.SequenceNode:
		p.errorf(n, "%s must be a list of shell lines, got %s", what, kindName(n))
		return nil
	}
	var lines []string
	for _, item := range n.Content {
		item = resolve(item)
		switch {
		case item.Kind == yaml.ScalarNode && isNull(item) && item.Value == "":
			// An empty "-" item: nothing to run.
		case item.Kind == yaml.ScalarNode:
			lines = append(lines, item.Value)
		case item.Kind == yaml.MappingNode:
			p.errorf(item, "%s must be a list of shell lines, but this item is a mapping: quote the line when it holds \": \" (YAML reads `echo a: b` as a key and value)", what)
		default:
			p.errorf(item, "%s must be a list of shell lines, but this item is %s", what, kindName(item))
		}
	}
	return lines
}

// text reads a scalar that must be a non-empty string.
func (p *parser) text(n *yaml.Node, what string) (string, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || isNull(n) || n.Value == "" {
		p.errorf(n, "%s must be text, got %s", what, kindName(n))
		return "", false
	}
	return n.Value, true
}

// checkGlob rejects patterns that could never be packaged safely or that path.Match cannot parse.
func checkGlob(g string) string {
	switch {
	case g == "":
		return "is empty"
	case strings.HasPrefix(g, "/"):
		return "is an absolute path: globs are relative to the repository root"
	}
	for _, seg := range strings.Split(strings.TrimSuffix(g, "/"), "/") {
		if seg == ".." {
			return "climbs out of the repository with \"..\""
		}
		if _, err := path.Match(seg, ""); err != nil {
			return "is not a valid glob (check its [ ] brackets and \\ escapes)"
		}
	}
	return ""
}

// includes reads PkgInclude: each item a glob, or a two-item list [glob, dest_dir] that relocates matches.
func (p *parser) includes(n *yaml.Node, what string) []Include {
	var inc []Include
	for _, it := range p.pathItems(n, what, itemShape{of: "globs", one: "a glob", pair: "[glob, dest_dir]", dest: "destination"}, checkGlob) {
		inc = append(inc, Include{Glob: it[0], Dest: it[1]})
	}
	return inc
}

// templates reads InstallTemplates: each item a template path, rendered in place, or a pair [template, dir]
// that renders it into dir; both relative to the install home.
func (p *parser) templates(n *yaml.Node, what string) []Template {
	var out []Template
	for _, it := range p.pathItems(n, what, itemShape{of: "templates", one: "a template path", pair: "[template, output_dir]", dest: "output directory"}, checkTemplatePath) {
		out = append(out, Template{Path: it[0], Dir: it[1]})
	}
	return out
}

// itemShape names, for error messages, a list whose items are a path or a pair [path, dir].
type itemShape struct{ of, one, pair, dest string }

// pathItems reads a list whose items are a path (checked by check) or a two-item list [path, dir] (the dir
// checked by checkDest); each result is {path, dir}, dir empty for a bare path. Bad items are reported and left out.
func (p *parser) pathItems(n *yaml.Node, what string, sh itemShape, check func(string) string) [][2]string {
	var out [][2]string
	for _, item := range p.list(n, what, sh.of) {
		item = resolve(item)
		switch item.Kind {
		case yaml.ScalarNode:
			if isNull(item) && item.Value == "" {
				continue
			}
			if msg := check(item.Value); msg != "" {
				p.errorf(item, "%s item %q %s", what, item.Value, msg)
				continue
			}
			out = append(out, [2]string{item.Value, ""})
		case yaml.SequenceNode:
			if len(item.Content) != 2 {
				p.errorf(item, "%s item must be %s or a pair %s, got a list of %d", what, sh.one, sh.pair, len(item.Content))
				continue
			}
			v, d := resolve(item.Content[0]), resolve(item.Content[1])
			if v.Kind != yaml.ScalarNode || d.Kind != yaml.ScalarNode {
				p.errorf(item, "%s item %s must hold two strings", what, sh.pair)
				continue
			}
			if msg := check(v.Value); msg != "" {
				p.errorf(v, "%s item %q %s", what, v.Value, msg)
				continue
			}
			if msg := checkDest(d.Value); msg != "" {
				p.errorf(d, "%s %s %q %s", what, sh.dest, d.Value, msg)
				continue
			}
			out = append(out, [2]string{v.Value, d.Value})
		default:
			p.errorf(item, "%s item must be %s or a pair %s, got %s", what, sh.one, sh.pair, kindName(item))
		}
	}
	return out
}

// checkTemplatePath rejects template paths that are not a file inside the install home.
func checkTemplatePath(t string) string {
	switch {
	case t == "" || strings.HasSuffix(t, "/"):
		return "is not a file path"
	case strings.HasPrefix(t, "/"):
		return "is an absolute path: templates are relative to the install home"
	}
	for _, seg := range strings.Split(t, "/") {
		if seg == ".." {
			return "climbs out of the install home with \"..\""
		}
	}
	return ""
}

func checkDest(d string) string {
	switch {
	case d == "":
		return "is empty: use \".\" for the release root"
	case strings.HasPrefix(d, "/"):
		return "is an absolute path: destinations are relative to the release root"
	}
	for _, seg := range strings.Split(d, "/") {
		if seg == ".." {
			return "climbs out of the release with \"..\""
		}
	}
	return ""
}

// globs reads PkgExclude: a list of globs.
func (p *parser) globs(n *yaml.Node, what string) []string {
	var out []string
	for _, item := range p.list(n, what, "globs") {
		item = resolve(item)
		if item.Kind != yaml.ScalarNode {
			p.errorf(item, "%s item must be a glob, got %s", what, kindName(item))
			continue
		}
		if isNull(item) && item.Value == "" {
			continue
		}
		if msg := checkGlob(item.Value); msg != "" {
			p.errorf(item, "%s item %q %s", what, item.Value, msg)
			continue
		}
		out = append(out, item.Value)
	}
	return out
}

// list returns a sequence's items; a single scalar counts as a one-item list.
func (p *parser) list(n *yaml.Node, what, of string) []*yaml.Node {
	n = resolve(n)
	switch {
	case isNull(n):
		return nil
	case n.Kind == yaml.ScalarNode:
		return []*yaml.Node{n}
	case n.Kind == yaml.SequenceNode:
		return n.Content
	}
	p.errorf(n, "%s must be a list of %s, got %s", what, of, kindName(n))
	return nil
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// env reads Env: Distelli's ordered list of single-key maps (- PORT: "8080"), or a plain mapping, whose
// order is kept too.
func (p *parser) env(n *yaml.Node, what string) []EnvVar {
	n = resolve(n)
	var pairs []pair
	switch {
	case isNull(n):
		return nil
	case n.Kind == yaml.MappingNode:
		pairs, _ = p.mapping(n, what)
	case n.Kind == yaml.SequenceNode:
		for _, item := range n.Content {
			item = resolve(item)
			if item.Kind != yaml.MappingNode || len(item.Content) != 2 {
				p.errorf(item, "%s item must be one KEY: value, got %s", what, describeEnvItem(item))
				continue
			}
			kv, _ := p.mapping(item, what)
			pairs = append(pairs, kv...)
		}
	default:
		p.errorf(n, "%s must be a list of KEY: value items, got %s", what, kindName(n))
		return nil
	}
	var vars []EnvVar
	for _, kv := range pairs {
		if !envName.MatchString(kv.key.Value) {
			p.errorf(kv.key, "%s name %q is not a valid variable name (letters, digits and _, not starting with a digit)", what, kv.key.Value)
			continue
		}
		if kv.val.Kind != yaml.ScalarNode {
			p.errorf(kv.val, "%s value of %s must be text, got %s", what, kv.key.Value, kindName(kv.val))
			continue
		}
		value := kv.val.Value
		if isNull(kv.val) {
			value = ""
		}
		vars = append(vars, EnvVar{Key: kv.key.Value, Value: value})
	}
	return vars
}

func describeEnvItem(n *yaml.Node) string {
	if n.Kind == yaml.MappingNode {
		return fmt.Sprintf("a mapping of %d keys (write one KEY: value per - item)", len(n.Content)/2)
	}
	return kindName(n)
}

// positiveInt reads a whole number of at least 1.
func (p *parser) positiveInt(n *yaml.Node, what string) (int, bool) {
	n = resolve(n)
	v, err := strconv.Atoi(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil || v < 1 {
		p.errorf(n, "%s must be a whole number of at least 1, got %s", what, kindName(n))
		return 0, false
	}
	return v, true
}

// duration reads a time limit: a whole number of seconds (Distelli's form) or a Go duration such as "90s"
// or "15m".
func (p *parser) duration(n *yaml.Node, what string) (time.Duration, bool) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		if secs, err := strconv.ParseInt(n.Value, 10, 64); err == nil {
			if secs > 0 && secs < int64(time.Duration(1<<63-1)/time.Second) {
				return time.Duration(secs) * time.Second, true
			}
		} else if d, err := time.ParseDuration(n.Value); err == nil && d > 0 {
			return d, true
		}
	}
	p.errorf(n, "%s must be a positive number of seconds or a duration such as 90s or 15m, got %s", what, kindName(n))
	return 0, false
}

// healthKeys names the health check's fields in each format.
type healthKeys struct {
	http, command, interval, minHealthy, deadline string
}

var (
	shoalHealthKeys    = healthKeys{"http", "command", "interval", "min_healthy", "deadline"}
	distelliHealthKeys = healthKeys{"HTTP", "Command", "Interval", "MinHealthy", "Deadline"}
)

// healthCheck reads the health check mapping (a Shoal extension in both formats).
func (p *parser) healthCheck(n *yaml.Node, what string, keys healthKeys) *HealthCheck {
	pairs, ok := p.mapping(n, what)
	if !ok || pairs == nil {
		return nil
	}
	errsBefore := len(p.errs)
	hc := &HealthCheck{Interval: DefaultHealthInterval, MinHealthy: DefaultHealthMinHealthy, Deadline: DefaultHealthDeadline}
	known := []string{keys.http, keys.command, keys.interval, keys.minHealthy, keys.deadline}
	for _, kv := range pairs {
		field := what + "." + kv.key.Value
		switch kv.key.Value {
		case keys.http:
			if u, ok := p.text(kv.val, field); ok {
				pu, err := url.Parse(u)
				if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
					p.errorf(kv.val, "%s must be an http:// or https:// URL, got %q", field, u)
					continue
				}
				hc.HTTP = u
			}
		case keys.command:
			hc.Command = p.script(kv.val, field)
		case keys.interval:
			if d, ok := p.duration(kv.val, field); ok {
				hc.Interval = d
			}
		case keys.minHealthy:
			if d, ok := p.duration(kv.val, field); ok {
				hc.MinHealthy = d
			}
		case keys.deadline:
			if d, ok := p.duration(kv.val, field); ok {
				hc.Deadline = d
			}
		default:
			p.unknownKey(kv.key, what, known)
		}
	}
	if len(p.errs) == errsBefore && (hc.HTTP == "") == (len(hc.Command) == 0) {
		p.errorf(n, "%s needs exactly one of %s (a URL) and %s (script lines)", what, keys.http, keys.command)
	}
	return hc
}
