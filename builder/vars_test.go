package builder

import (
	"reflect"
	"strings"
	"testing"
)

func TestBuildEnv(t *testing.T) {
	info := BuildInfo{App: "web", Build: "7", Commit: "abc123", Branch: "main", Ref: "main",
		CommitMessage: "fix: it", CommitAuthor: "A <a@example.com>"}
	env, secrets, err := BuildEnv(info, []Var{{Name: "API_KEY", Value: "k3y", Secret: true}, {Name: "MODE", Value: "fast"}, {Name: "EMPTY", Secret: true}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"SHOAL_APP=web", "SHOAL_BUILD=7", "SHOAL_COMMIT=abc123", "SHOAL_BRANCH=main", "SHOAL_REF=main",
		"SHOAL_COMMIT_MESSAGE=fix: it", "SHOAL_COMMIT_AUTHOR=A <a@example.com>",
		"DISTELLI_APPNAME=web", "DISTELLI_BUILDNUM=7", "DISTELLI_RELBRANCH=main", "DISTELLI_RELREVISION=abc123",
		"DISTELLI_RELREPOTYPE=Git", "API_KEY=k3y", "MODE=fast", "EMPTY=",
	}
	if !reflect.DeepEqual(env, want) {
		t.Errorf("env\n%q\nwant\n%q", env, want)
	}
	if !reflect.DeepEqual(secrets, []string{"k3y"}) {
		t.Errorf("secrets %q", secrets)
	}

	info.Release = "v8"
	env, _, _ = BuildEnv(info, nil)
	joined := strings.Join(env, "\n")
	if !strings.Contains(joined, "SHOAL_RELEASE=v8") || !strings.Contains(joined, "DISTELLI_RELVERSION=v8") {
		t.Errorf("release not exported once known:\n%s", joined)
	}
}

func TestBuildEnvRejects(t *testing.T) {
	for _, v := range []Var{{Name: "SHOAL_COMMIT", Value: "fake"}, {Name: "1X"}, {Name: "A-B"}, {Name: ""}, {Name: "OK", Value: "a\x00b"}} {
		if _, _, err := BuildEnv(BuildInfo{}, []Var{v}); err == nil {
			t.Errorf("variable %+v accepted", v)
		}
	}
	if err := ValidVarName("DISTELLI_MANIFEST"); err != nil {
		t.Errorf("DISTELLI_MANIFEST is a user variable in Distelli: %v", err)
	}
}
