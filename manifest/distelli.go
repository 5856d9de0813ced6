package manifest

import (
	"strings"

	"gopkg.in/yaml.v3"
)

// distelliIgnored are Distelli sections that Shoal accepts so that existing manifests load unchanged, but
// does not run; each earns a warning saying so.
var distelliIgnored = map[string]string{
	"BuildWith":     "Shoal does not run other vendors' build files: move the steps into PreBuild and Build",
	"CommitData":    "Shoal records the commit itself and always sets DISTELLI_RELREPOTYPE=Git",
	"DockerInspect": "Shoal does not track Docker images",
	"RestartDelay":  "Distelli never defined RestartDelay; Shoal's Exec supervision backs off by itself",
}

// parseDistelli reads a distelli-manifest.yml: one root key "user/App" holding Distelli's sections.
func (p *parser) parseDistelli(root *yaml.Node) *Manifest {
	m := &Manifest{Format: FormatDistelli, ProcessCount: 1}
	pairs, ok := p.mapping(root, "the manifest")
	if !ok {
		return m
	}
	if len(pairs) == 0 {
		p.errorf(root, "the manifest has no application: start it with a root key \"user/App:\"")
		return m
	}
	if len(pairs) > 1 {
		p.errorf(pairs[1].key, "the manifest holds a second application %q after %q: Shoal reads one application per manifest file, so move it to its own file", pairs[1].key.Value, pairs[0].key.Value)
	}
	key := pairs[0].key
	owner, app, found := strings.Cut(key.Value, "/")
	if !found || owner == "" || app == "" || strings.Contains(app, "/") {
		p.errorf(key, "the root key %q must be \"user/App\", the application's name as Distelli wrote it", key.Value)
	}
	m.Owner, m.App = owner, app
	p.distelliSections(m, pairs[0].val, key.Value)
	return m
}

// distelliKnown lists every key a Distelli application mapping may hold, for typo suggestions.
func distelliKnown() []string {
	var known []string
	for _, s := range sections {
		known = append(known, s.name)
		if s.timeout {
			known = append(known, s.name+"Timeout")
		}
	}
	known = append(known, "PkgInclude", "PkgExclude", "Env", "ProcessCount", "HealthCheck", "InstallTemplates")
	for k := range distelliIgnored {
		known = append(known, k)
	}
	return known
}

func (p *parser) distelliSections(m *Manifest, n *yaml.Node, app string) {
	pairs, _ := p.mapping(n, app)
	var exec, start *yaml.Node
	for _, kv := range pairs {
		name := kv.key.Value
		if s, ok := lookupSection(name); ok && s.name == name {
			*m.script(name) = p.script(kv.val, name)
			switch name {
			case "Exec":
				exec = kv.key
			case "Start":
				start = kv.key
			}
			continue
		}
		if phase, ok := strings.CutSuffix(name, "Timeout"); ok {
			if s, ok := lookupSection(phase); ok && s.name == phase && s.timeout {
				if d, ok := p.duration(kv.val, name); ok {
					m.setTimeout(phase, d)
				}
				continue
			}
		}
		switch name {
		case "PkgInclude":
			m.PkgInclude = p.includes(kv.val, name)
		case "PkgExclude":
			m.PkgExclude = p.globs(kv.val, name)
		case "Env":
			m.Env = p.env(kv.val, name)
		case "ProcessCount":
			if c, ok := p.positiveInt(kv.val, name); ok {
				m.ProcessCount = c
			}
		case "HealthCheck":
			m.HealthCheck = p.healthCheck(kv.val, name, distelliHealthKeys)
		case "InstallTemplates":
			m.InstallTemplates = p.templates(kv.val, name)
		default:
			if why, ok := distelliIgnored[name]; ok {
				p.warnf(kv.key, "%s is ignored: %s", name, why)
				continue
			}
			p.unknownKey(kv.key, app, distelliKnown())
		}
	}
	if exec != nil && start != nil {
		p.warnf(start, "Start is ignored because Exec is present (Exec overrides Start, as in Distelli)")
		m.Start = nil
	}
}
