package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/shoal-ci/shoal/raftfsm"
)

// TestBuildCLI drives builds with the node binary's verbs against a running node: build --wait (exit status
// follows the build), builds, releases, log, build cancel.
func TestBuildCLI(t *testing.T) {
	needProcesses(t)
	repo := newTestRepo(t, t.TempDir(), "web.git")
	repo.commit("works", map[string]string{"shoal.yml": "build:\n  build: ['echo \"cli build of $SHOAL_APP\"']\npackage:\n  include: [shoal.yml]\n"})
	m := startPmesh(t, 1)
	n := m.nodes[0]
	if _, err := m.client(n).Post(context.Background(), "/v1/apps", map[string]any{"name": "web", "repo": repo.dir}, nil); err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) (stdout, stderr string, code int) {
		t.Helper()
		cmd := exec.Command(nodeBinary(t), append([]string{"--addr", n.api(), "--token", m.admin}, args...)...)
		cmd.Env = cleanEnv()
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		if _, ok := err.(*exec.ExitError); err != nil && !ok {
			t.Fatalf("node %v: %v", args, err)
		}
		return o.String(), e.String(), cmd.ProcessState.ExitCode()
	}

	out, errOut, code := cli("build", "web", "--wait")
	if code != 0 || !strings.Contains(out, "cli build of web") || !strings.Contains(errOut, "build web-1 succeeded: release v1") {
		t.Fatalf("build --wait: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	out, _, code = cli("builds", "web")
	if code != 0 || !strings.Contains(out, "web-1") || !strings.Contains(out, "succeeded") {
		t.Errorf("builds: exit %d\n%s", code, out)
	}
	out, _, code = cli("releases", "web")
	if code != 0 || !strings.Contains(out, "v1") || !strings.Contains(out, "web-1") {
		t.Errorf("releases: exit %d\n%s", code, out)
	}
	out, _, code = cli("--json", "releases", "web", "v1")
	var rel raftfsm.Release
	if code != 0 || json.Unmarshal([]byte(out), &rel) != nil || rel.Version != "v1" || len(rel.Digest) != 64 {
		t.Errorf("releases web v1 --json: exit %d\n%s", code, out)
	}
	out, _, code = cli("log", "web-1")
	if code != 0 || !strings.Contains(out, "cli build of web") {
		t.Errorf("log: exit %d\n%s", code, out)
	}

	repo.commit("breaks", map[string]string{"shoal.yml": "build:\n  build: ['echo about to fail', 'exit 3']\n"})
	out, errOut, code = cli("build", "web", "--wait")
	if code == 0 || !strings.Contains(out, "about to fail") || !strings.Contains(errOut, "build web-2 failed: Build failed with exit code 3") {
		t.Errorf("failing build --wait: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if _, errOut, code := cli("build", "cancel", "web-2"); code == 0 || !strings.Contains(errOut, "already ended") {
		t.Errorf("cancel of an ended build: exit %d %s", code, errOut)
	}
	if _, errOut, code := cli("build", "web", "--ref", "no-such-branch"); code == 0 || !strings.Contains(errOut, "no branch or tag") {
		t.Errorf("build of a missing ref: exit %d %s", code, errOut)
	}

	// Names are completed from the mesh, and a mistyped one gets "did you mean".
	if _, errOut, code := cli("env", "create", "prod", "--app", "web", "--server", n.name); code != 0 {
		t.Fatalf("env create: exit %d %s", code, errOut)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"__complete", "deploy", ""}, "web\t"},
		{[]string{"__complete", "deploy", "web", ""}, "v1\t"},
		{[]string{"__complete", "deploy", "web", "v1", "--env", ""}, "prod\tapp web"},
		{[]string{"__complete", "restart", ""}, "prod\t"},
		{[]string{"__complete", "leave", ""}, n.name + "\talive"},
	} {
		if out, errOut, code := cli(tc.args...); code != 0 || !strings.Contains(out, tc.want) {
			t.Errorf("node %q: exit %d, want %q among\n%s%s", tc.args, code, tc.want, out, errOut)
		}
	}
	if _, errOut, code := cli("app", "show", "wbe"); code == 0 || !strings.Contains(errOut, `did you mean "web"?`) {
		t.Errorf("app show wbe: exit %d %s; want a suggestion of web", code, errOut)
	}
	if _, errOut, code := cli("deployments", "prdo"); code == 0 || !strings.Contains(errOut, `did you mean "prod"?`) {
		t.Errorf("deployments prdo: exit %d %s; want a suggestion of prod", code, errOut)
	}
	if out, errOut, code := cli("completion", "bash"); code != 0 || !strings.Contains(out, "complete -o default -F __start_shoal shoal") {
		t.Errorf("completion bash: exit %d %s; want a script registered for shoal", code, errOut)
	}
}
