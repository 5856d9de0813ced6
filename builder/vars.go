package builder

import (
	"fmt"
	"regexp"
	"strings"
)

// BuildInfo is what a build knows about itself; BuildEnv turns it into the variables its scripts see.
type BuildInfo struct {
	App           string
	Build         string // the build's number or id, as the user sees it
	Commit        string // full sha being built
	Branch        string // "" for a tag or a bare commit
	Ref           string // what the build was asked for: branch, tag or sha
	Release       string // the release version, once known ("" before CustomVersionCmd has run)
	CommitMessage string
	CommitAuthor  string
}

// Var is one of an app's build variables; a Secret one's value is redacted from logs.
type Var struct {
	Name   string
	Value  string
	Secret bool
}

var varName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidVarName reports whether name can be a build variable: a shell variable name that does not take the
// place of one Shoal sets itself. The API can call it to refuse a bad name when the variable is set.
func ValidVarName(name string) error {
	if !varName.MatchString(name) {
		return fmt.Errorf("variable name %q must be letters, digits and _, not starting with a digit", name)
	}
	if reservedVars[name] {
		return fmt.Errorf("variable %s is set by Shoal for every build: choose another name", name)
	}
	return nil
}

// reservedVars are the names BuildEnv sets; a user variable may not replace them, so a script can trust
// SHOAL_COMMIT to be the commit really being built.
var reservedVars = map[string]bool{
	"SHOAL_APP": true, "SHOAL_BUILD": true, "SHOAL_COMMIT": true, "SHOAL_BRANCH": true, "SHOAL_REF": true,
	"SHOAL_RELEASE": true, "SHOAL_COMMIT_MESSAGE": true, "SHOAL_COMMIT_AUTHOR": true,
	"DISTELLI_APPNAME": true, "DISTELLI_BUILDNUM": true, "DISTELLI_RELBRANCH": true,
	"DISTELLI_RELREVISION": true, "DISTELLI_RELREPOTYPE": true, "DISTELLI_RELVERSION": true,
}

// BuildEnv returns a build script's whole environment ("KEY=value", Shoal's variables first, then the app's
// in their order) and the values to redact from its log. Values travel only as environment variables, so
// a commit message or branch name is never read as shell text. SHOAL_RELEASE and DISTELLI_RELVERSION are set
// only once the release version is known. PATH and HOME are left to RunScript's defaults unless vars set them.
func BuildEnv(info BuildInfo, vars []Var) (env []string, secrets []string, err error) {
	set := func(k, v string) { env = append(env, k+"="+v) }
	set("SHOAL_APP", info.App)
	set("SHOAL_BUILD", info.Build)
	set("SHOAL_COMMIT", info.Commit)
	set("SHOAL_BRANCH", info.Branch)
	set("SHOAL_REF", info.Ref)
	set("SHOAL_COMMIT_MESSAGE", info.CommitMessage)
	set("SHOAL_COMMIT_AUTHOR", info.CommitAuthor)
	if info.Release != "" {
		set("SHOAL_RELEASE", info.Release)
	}
	set("DISTELLI_APPNAME", info.App)
	set("DISTELLI_BUILDNUM", info.Build)
	set("DISTELLI_RELBRANCH", info.Branch)
	set("DISTELLI_RELREVISION", info.Commit)
	set("DISTELLI_RELREPOTYPE", "Git")
	if info.Release != "" {
		set("DISTELLI_RELVERSION", info.Release)
	}
	for _, kv := range env {
		if strings.ContainsRune(kv, 0) {
			k, _, _ := strings.Cut(kv, "=")
			return nil, nil, fmt.Errorf("build variable %s holds a NUL byte, which no process environment can carry", k)
		}
	}
	for _, v := range vars {
		if err := ValidVarName(v.Name); err != nil {
			return nil, nil, fmt.Errorf("app build variable: %w", err)
		}
		if strings.ContainsRune(v.Value, 0) {
			return nil, nil, fmt.Errorf("app build variable %s holds a NUL byte, which no process environment can carry", v.Name)
		}
		set(v.Name, v.Value)
		if v.Secret && v.Value != "" {
			secrets = append(secrets, v.Value)
		}
	}
	return env, secrets, nil
}
