package manifest

import (
	"gopkg.in/yaml.v3"
)

// shoal.yml layout: app, build, package and deploy at the top; inside, Distelli's section names in
// snake_case.
var (
	shoalTopKeys     = []string{"app", "build", "package", "deploy"}
	shoalPackageKeys = []string{"include", "exclude"}
)

func sectionKeys(kind string) []string {
	var keys []string
	for _, s := range sections {
		if s.kind == kind {
			keys = append(keys, s.key)
		}
	}
	return keys
}

func (p *parser) parseShoal(root *yaml.Node) *Manifest {
	m := &Manifest{Format: FormatShoal, ProcessCount: 1}
	pairs, ok := p.mapping(root, "the manifest")
	if !ok {
		return m
	}
	for _, kv := range pairs {
		switch kv.key.Value {
		case "app":
			m.App, _ = p.text(kv.val, "app")
		case "build":
			p.shoalBuild(m, kv.val)
		case "package":
			p.shoalPackage(m, kv.val)
		case "deploy":
			p.shoalDeploy(m, kv.val)
		default:
			p.unknownKey(kv.key, "the manifest", shoalTopKeys)
		}
	}
	return m
}

func (p *parser) shoalBuild(m *Manifest, n *yaml.Node) {
	pairs, _ := p.mapping(n, "build")
	known := append(sectionKeys(kindBuild), "timeouts")
	for _, kv := range pairs {
		k := kv.key.Value
		if k == "timeouts" {
			p.shoalTimeouts(m, kv.val, "build.timeouts", kindBuild)
			continue
		}
		if s, ok := lookupSection(k); ok && s.key == k && s.kind == kindBuild {
			*m.script(s.name) = p.script(kv.val, "build."+k)
			continue
		}
		if s, ok := lookupSection(k); ok && s.key == k {
			p.errorf(kv.key, "%s is a deploy section: move it under deploy:", k)
			continue
		}
		p.unknownKey(kv.key, "build", known)
	}
}

func (p *parser) shoalPackage(m *Manifest, n *yaml.Node) {
	pairs, _ := p.mapping(n, "package")
	for _, kv := range pairs {
		switch kv.key.Value {
		case "include":
			m.PkgInclude = p.includes(kv.val, "package.include")
		case "exclude":
			m.PkgExclude = p.globs(kv.val, "package.exclude")
		default:
			p.unknownKey(kv.key, "package", shoalPackageKeys)
		}
	}
}

func (p *parser) shoalDeploy(m *Manifest, n *yaml.Node) {
	pairs, _ := p.mapping(n, "deploy")
	known := append(sectionKeys(kindDeploy), "env", "process_count", "timeouts", "health_check", "install_templates")
	var start *yaml.Node
	for _, kv := range pairs {
		k := kv.key.Value
		switch k {
		case "env":
			m.Env = p.env(kv.val, "deploy.env")
			continue
		case "process_count":
			if c, ok := p.positiveInt(kv.val, "deploy.process_count"); ok {
				m.ProcessCount = c
			}
			continue
		case "timeouts":
			p.shoalTimeouts(m, kv.val, "deploy.timeouts", kindDeploy)
			continue
		case "health_check":
			m.HealthCheck = p.healthCheck(kv.val, "deploy.health_check", shoalHealthKeys)
			continue
		case "install_templates":
			m.InstallTemplates = p.templates(kv.val, "deploy.install_templates")
			continue
		}
		if s, ok := lookupSection(k); ok && s.key == k && s.kind == kindDeploy {
			*m.script(s.name) = p.script(kv.val, "deploy."+k)
			if k == "start" {
				start = kv.key
			}
			continue
		}
		if s, ok := lookupSection(k); ok && s.key == k {
			p.errorf(kv.key, "%s is a build section: move it under build:", k)
			continue
		}
		p.unknownKey(kv.key, "deploy", known)
	}
	if start != nil && len(m.Exec) > 0 {
		p.warnf(start, "deploy.start is ignored because deploy.exec is present (exec overrides start, as in Distelli)")
		m.Start = nil
	}
}

// shoalTimeouts reads build.timeouts or deploy.timeouts: section name to limit.
func (p *parser) shoalTimeouts(m *Manifest, n *yaml.Node, what, kind string) {
	pairs, _ := p.mapping(n, what)
	var known []string
	for _, s := range sections {
		if s.kind == kind && s.timeout {
			known = append(known, s.key)
		}
	}
	for _, kv := range pairs {
		k := kv.key.Value
		s, ok := lookupSection(k)
		switch {
		case ok && s.key == k && s.kind == kind && s.timeout:
			if d, ok := p.duration(kv.val, what+"."+k); ok {
				m.setTimeout(s.name, d)
			}
		case ok && s.key == k && !s.timeout:
			p.errorf(kv.key, "%s has no time limit: its process is supervised and runs until stopped", k)
		case ok && s.key == k && s.kind == kindBuild:
			p.errorf(kv.key, "%s is a build section: put its limit under build.timeouts", k)
		case ok && s.key == k:
			p.errorf(kv.key, "%s is a deploy section: put its limit under deploy.timeouts", k)
		default:
			p.unknownKey(kv.key, what, known)
		}
	}
}
