package integration

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/shoal-ci/shoal/internal/testtier"
)

// The install script's static checks and its refusals, which need neither root nor a network. The script at
// work on three hosts is TestOpsInstallNetns.

func TestOpsInstallScriptLint(t *testing.T) {
	script := opsScript(t)
	if out, err := exec.Command("bash", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("bash -n %s: %v\n%s", script, err, out)
	}
	if _, err := exec.LookPath("shellcheck"); err != nil {
		testtier.Skip(t, "shellcheck is not installed (apt-get install shellcheck; CI installs it through .ci/run)")
	}
	if out, err := exec.Command("shellcheck", script).CombinedOutput(); err != nil {
		t.Fatalf("shellcheck %s: %v\n%s", script, err, out)
	}
}

func TestOpsInstallScriptRefusals(t *testing.T) {
	script := opsScript(t)
	for _, tc := range []struct {
		args []string
		want string // in the error message
	}{
		{[]string{"--join", "server.invalid"}, "--join needs --token"},
		{[]string{"--frobnicate"}, "unknown option --frobnicate"},
		{[]string{"a", "b"}, "one binary only"},
	} {
		cmd := exec.Command("bash", append([]string{script}, tc.args...)...)
		cmd.Env = append(cleanEnv(), "SHOAL_DATA="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("install.sh %s: want a failure saying %q, got %v:\n%s", strings.Join(tc.args, " "), tc.want, err, out)
		}
	}
	out, err := exec.Command("bash", script, "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "/opt/shoal/bin/node") {
		t.Errorf("install.sh --help: %v\n%s", err, out)
	}
}
