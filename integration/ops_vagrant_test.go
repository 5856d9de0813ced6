package integration

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/testtier"
)

// TestOpsVagrantValidate checks the Vagrantfile with `vagrant validate`. No VM provider exists in CI, so the
// providers' own settings are left out (--ignore-provider); the machines, networks and provisioners are checked.
// The provisioning itself is deploy/install.sh, which TestOpsInstallNetns runs on three hosts.
func TestOpsVagrantValidate(t *testing.T) {
	vagrant, err := exec.LookPath("vagrant")
	if err != nil {
		testtier.Skip(t, "vagrant is not installed (apt-get install vagrant; CI installs it through .ci/run)")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, vagrant, "validate", "--ignore-provider")
	cmd.Dir = root
	home := t.TempDir()
	// Vagrant's state and home go to the test's temp dir, not into the checkout or the user's ~/.vagrant.d, and
	// it asks no server for news of a newer version.
	cmd.Env = append(cleanEnv(), "VAGRANT_DOTFILE_PATH="+filepath.Join(home, "dot"), "VAGRANT_HOME="+filepath.Join(home, "home"),
		"VAGRANT_CHECKPOINT_DISABLE=1", "VAGRANT_NO_COLOR=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "validated successfully") {
		t.Fatalf("vagrant validate: %v\n%s", err, out)
	}
}

// TestOpsVagrantProvisionScripts checks the shell scripts the Vagrantfile provisions with (INIT and JOIN, Ruby
// heredocs): Ruby loads the Vagrantfile with a stand-in for Vagrant's configure block and writes them out, and
// bash -n and shellcheck read them.
func TestOpsVagrantProvisionScripts(t *testing.T) {
	ruby, err := exec.LookPath("ruby")
	if err != nil {
		testtier.Skip(t, "ruby is not installed (it comes with vagrant; CI installs vagrant through .ci/run)")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	prog := `module Vagrant; def self.configure(*); end; end
load ARGV[0]
File.write(File.join(ARGV[1], "init.sh"), INIT)
File.write(File.join(ARGV[1], "join.sh"), JOIN)`
	if out, err := exec.Command(ruby, "-e", prog, filepath.Join(root, "Vagrantfile"), dir).CombinedOutput(); err != nil {
		t.Fatalf("ruby could not load the Vagrantfile's provisioning scripts: %v\n%s", err, out)
	}
	scripts := []string{filepath.Join(dir, "init.sh"), filepath.Join(dir, "join.sh")}
	for _, s := range scripts {
		if out, err := exec.Command("bash", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("bash -n on the Vagrantfile's %s: %v\n%s", filepath.Base(s), err, out)
		}
	}
	if _, err := exec.LookPath("shellcheck"); err != nil {
		testtier.Skip(t, "shellcheck is not installed (apt-get install shellcheck; CI installs it through .ci/run)")
	}
	if out, err := exec.Command("shellcheck", scripts...).CombinedOutput(); err != nil {
		t.Errorf("shellcheck on the Vagrantfile's provisioning scripts: %v\n%s", err, out)
	}
}
