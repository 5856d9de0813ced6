package integration

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestOpsVagrantValidate checks the Vagrantfile with `vagrant validate`. No VM provider exists in CI, so the
// providers' own settings are left out (--ignore-provider); the machines, networks and provisioners are checked.
// The provisioning itself is deploy/install.sh, which TestOpsInstallNetns runs on three hosts.
func TestOpsVagrantValidate(t *testing.T) {
	vagrant, err := exec.LookPath("vagrant")
	if err != nil {
		t.Skip("vagrant is not installed (apt-get install vagrant; CI installs it through .ci/run)")
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
