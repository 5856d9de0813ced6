package manifest

import (
	"time"
)

// Formats a manifest can be written in.
const (
	FormatShoal    = "shoal"
	FormatDistelli = "distelli"
)

// Manifest is an app's recipe, whichever file it came from. Section names (map keys, Script and Timeout
// arguments) are Distelli's: "PreBuild", "Build", "PreInstall", ...; the shoal.yml snake_case names are
// accepted by Script and Timeout too.
type Manifest struct {
	// App is the application name: the App part of Distelli's root key "user/App", or shoal.yml's optional
	// `app:` (empty when not given).
	App string
	// Owner is the user part of Distelli's root key "user/App"; empty for shoal.yml.
	Owner string

	// Build sections: each a script, one shell line (or block) per item, run in this order (Distelli's).
	PreBuild, Build, PreRelease, AfterBuildSuccess, AfterBuildFailure, CustomVersionCmd, ReleaseNotesCmd []string

	PkgInclude []Include
	PkgExclude []string

	// Env is exported, in order, before every deploy, restart and terminate script.
	Env []EnvVar

	// Deploy, restart and terminate sections.
	PreInstall, Install, PostInstall, PreStart, Exec, Start, PostStart, PreRestart, PostRestart,
	PreTerminate, Terminate, PostTerminate []string

	// InstallTemplates are Mustache templates rendered on each server after the release is unpacked (or Install
	// ran) and before PostInstall, as Distelli's InstallTemplates.
	InstallTemplates []Template

	// ProcessCount is how many Exec processes to run; 1 unless the manifest says otherwise.
	ProcessCount int

	// Timeouts holds only the limits the manifest sets, by section name; Timeout applies the defaults.
	Timeouts map[string]time.Duration

	// HealthCheck is a Shoal extension: how the deployer decides a started release is healthy. Nil when the
	// manifest has none.
	HealthCheck *HealthCheck

	// Format is FormatShoal or FormatDistelli.
	Format string

	// Warnings name things the manifest holds that Shoal reads but does not act on (Distelli sections such
	// as BuildWith or DockerInspect), each placed file:line:column.
	Warnings []string
}

// Include is one PkgInclude item: files matching Glob go into the release at their own path, or, when Dest
// is set (Distelli's ["glob", "dest/"] form), directly under Dest by their base name.
type Include struct {
	Glob string
	Dest string
}

// Template is one InstallTemplates item: the template at Path (relative to the install home) is rendered to a
// file of the same base name in Dir (relative to the install home), or in place when Dir is empty.
type Template struct {
	Path string
	Dir  string
}

// EnvVar is one Env entry. Value is shell text: the deployer expands it when exporting, as Distelli did.
type EnvVar struct {
	Key   string
	Value string
}

// HealthCheck says how to decide that a started release is healthy: exactly one of HTTP (a URL that must
// answer 2xx) and Command (script lines that must exit 0) is set.
type HealthCheck struct {
	HTTP    string
	Command []string
	// Interval between probes.
	Interval time.Duration
	// MinHealthy is how long the probes must keep passing before the node reports healthy.
	MinHealthy time.Duration
	// Deadline is how long after start the release may take to become healthy before the deploy fails.
	Deadline time.Duration
}

// Health check defaults, applied at parse time so the deployer gets concrete values.
const (
	DefaultHealthInterval   = 2 * time.Second
	DefaultHealthMinHealthy = 0
	DefaultHealthDeadline   = 60 * time.Second
)

// Timeout defaults: Distelli gave every deploy phase 900 s; it had no build limits, so Shoal picks one long
// enough for a slow test suite and short enough that a hung build frees its slot the same day.
const (
	DefaultBuildTimeout  = 30 * time.Minute
	DefaultDeployTimeout = 900 * time.Second
)

// Section kinds.
const (
	kindBuild  = "build"
	kindDeploy = "deploy"
)

// section describes one script section under both of its names.
type section struct {
	name string // Distelli's name, the canonical one
	key  string // shoal.yml's name
	kind string
	// timeout is false for Exec: a supervised process runs until stopped, so it has no time limit.
	timeout bool
}

// sections lists every script section in the order Shoal runs them.
var sections = []section{
	{"PreBuild", "pre_build", kindBuild, true},
	{"Build", "build", kindBuild, true},
	{"PreRelease", "pre_release", kindBuild, true},
	{"AfterBuildSuccess", "after_build_success", kindBuild, true},
	{"AfterBuildFailure", "after_build_failure", kindBuild, true},
	{"CustomVersionCmd", "custom_version_cmd", kindBuild, true},
	{"ReleaseNotesCmd", "release_notes_cmd", kindBuild, true},
	{"PreInstall", "pre_install", kindDeploy, true},
	{"Install", "install", kindDeploy, true},
	{"PostInstall", "post_install", kindDeploy, true},
	{"PreStart", "pre_start", kindDeploy, true},
	{"Exec", "exec", kindDeploy, false},
	{"Start", "start", kindDeploy, true},
	{"PostStart", "post_start", kindDeploy, true},
	{"PreRestart", "pre_restart", kindDeploy, true},
	{"PostRestart", "post_restart", kindDeploy, true},
	{"PreTerminate", "pre_terminate", kindDeploy, true},
	{"Terminate", "terminate", kindDeploy, true},
	{"PostTerminate", "post_terminate", kindDeploy, true},
}

// lookupSection finds a section by either of its names.
func lookupSection(name string) (section, bool) {
	for _, s := range sections {
		if s.name == name || s.key == name {
			return s, true
		}
	}
	return section{}, false
}

// script returns a pointer to the field holding the named (canonical) section.
func (m *Manifest) script(name string) *[]string {
	switch name {
	case "PreBuild":
		return &m.PreBuild
	case "Build":
		return &m.Build
	case "PreRelease":
		return &m.PreRelease
	case "AfterBuildSuccess":
		return &m.AfterBuildSuccess
	case "AfterBuildFailure":
		return &m.AfterBuildFailure
	case "CustomVersionCmd":
		return &m.CustomVersionCmd
	case "ReleaseNotesCmd":
		return &m.ReleaseNotesCmd
	case "PreInstall":
		return &m.PreInstall
	case "Install":
		return &m.Install
	case "PostInstall":
		return &m.PostInstall
	case "PreStart":
		return &m.PreStart
	case "Exec":
		return &m.Exec
	case "Start":
		return &m.Start
	case "PostStart":
		return &m.PostStart
	case "PreRestart":
		return &m.PreRestart
	case "PostRestart":
		return &m.PostRestart
	case "PreTerminate":
		return &m.PreTerminate
	case "Terminate":
		return &m.Terminate
	case "PostTerminate":
		return &m.PostTerminate
	}
	return nil
}

// Script returns the lines of a section named either way ("PostInstall" or "post_install"); nil when the
// manifest has none or the name is not a section.
func (m *Manifest) Script(section string) []string {
	s, ok := lookupSection(section)
	if !ok {
		return nil
	}
	return *m.script(s.name)
}

// Timeout returns the time limit of a section named either way: the manifest's own value, else 30 minutes
// for build sections and 900 seconds for deploy phases. Exec, and any name that is not a section, get 0:
// no limit.
func (m *Manifest) Timeout(section string) time.Duration {
	s, ok := lookupSection(section)
	if !ok || !s.timeout {
		return 0
	}
	if d, ok := m.Timeouts[s.name]; ok {
		return d
	}
	if s.kind == kindBuild {
		return DefaultBuildTimeout
	}
	return DefaultDeployTimeout
}

func (m *Manifest) setTimeout(section string, d time.Duration) {
	if m.Timeouts == nil {
		m.Timeouts = map[string]time.Duration{}
	}
	m.Timeouts[section] = d
}
