package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/node"

	"github.com/shoal-ci/shoal/internal/testtier"
)

// The install script is tested the way the Vagrantfile uses it: three hosts on one network, the first runs
// `install.sh --init`, the others `install.sh --join` with the join token the first wrote. The hosts are network
// namespaces on a bridge (the swarm benchmark's lab), so each has its own address and the default ports. The
// script's paths point into the test's temp dir and the node runs as root (SHOAL_USER empty), so the test
// creates no user and writes nothing outside its temp dir.

// opsScript is deploy/install.sh in this checkout.
func opsScript(t testing.TB) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "deploy", "install.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the install script: %v", err)
	}
	return p
}

// opsHost is one namespace host with its own install paths.
type opsHost struct {
	*netnsHost
	root string // the host's own directory in the test's temp dir
}

func (h *opsHost) prefix() string { return filepath.Join(h.root, "opt", "shoal") }
func (h *opsHost) data() string   { return filepath.Join(h.root, "var", "lib", "shoal") }
func (h *opsHost) etc() string    { return filepath.Join(h.root, "etc", "shoal") }
func (h *opsHost) unit() string {
	return filepath.Join(h.root, "etc", "systemd", "system", "shoal.service")
}
func (h *opsHost) run() string     { return filepath.Join(h.root, "run", "shoal") }
func (h *opsHost) bin() string     { return filepath.Join(h.prefix(), "bin", "node") }
func (h *opsHost) api() string     { return "http://" + h.ip + ":7420" }
func (h *opsHost) pidFile() string { return filepath.Join(h.run(), "agent.pid") }

// install runs deploy/install.sh inside the host's namespace with its paths, and returns what it printed.
func (h *opsHost) install(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.ns, "bash", opsScript(t)}, args...)...)
	// The go command is on PATH for the host that builds its binary from the checkout; Shoal's bin dir never is.
	path := os.Getenv("PATH")
	if _, err := exec.LookPath("go"); err != nil {
		path = filepath.Dir(goTool()) + string(os.PathListSeparator) + path
	}
	cmd.Env = append(cleanEnv(), "PATH="+path,
		"SHOAL_PREFIX="+h.prefix(), "SHOAL_DATA="+h.data(), "SHOAL_ETC="+h.etc(),
		"SHOAL_UNIT_DIR="+filepath.Dir(h.unit()), "SHOAL_RUN="+h.run(), "SHOAL_USER=",
		// Never the real systemd, even on a machine that runs it: its absence is what the script must handle.
		"SHOAL_SYSTEMD_MARKER="+filepath.Join(h.root, "no-systemd-here"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second // the agent it starts must not hold our pipes; if it did, this ends the wait
	err := cmd.Run()
	t.Logf("install.sh %s on %s:\n%s", strings.Join(args, " "), h.name, out.String())
	return out.String(), err
}

// agentPid is the pid the script recorded for the agent it started, or 0.
func (h *opsHost) agentPid() int {
	b, err := os.ReadFile(h.pidFile())
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// opsNetnsRequire skips unless this process may build network namespaces with veth pairs on a bridge.
func opsNetnsRequire(t *testing.T) {
	t.Helper()
	needProcesses(t)
	if os.Geteuid() != 0 {
		testtier.Skip(t, "the install test builds network namespaces as its hosts, which needs root: "+
			"run it as root (CI does), for example `sudo -E go test ./integration -run OpsInstall -v`")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		testtier.Skipf(t, "the install test needs `ip` from iproute2 (apt-get install iproute2): %v", err)
	}
	netnsRemoveStale(t)
	probe := fmt.Sprintf("%s%d-opsprobe", netnsPrefix, os.Getpid())
	defer exec.Command("ip", "netns", "del", probe).Run()
	for _, args := range [][]string{
		{"netns", "add", probe},
		{"-n", probe, "link", "add", "pa", "type", "veth", "peer", "name", "pb"},
		{"-n", probe, "link", "add", "br0", "type", "bridge"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			testtier.Skipf(t, "this machine does not let the test build its network (ip %s: %v: %s); it needs network namespaces, veth and bridges",
				strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
}

// opsKillNamespaces kills every process inside the lab's namespaces (the agents the script started there, which
// are no children of ours) and waits until they are gone, so that the namespaces can go after them.
func opsKillNamespaces(t testing.TB, l *netnsLab) {
	var pids []int
	for _, ns := range l.names() {
		out, err := exec.Command("ip", "netns", "pids", ns).Output()
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				pids = append(pids, pid)
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for processRunning(pid) {
			if time.Now().After(deadline) {
				t.Errorf("process %d in the lab's namespaces still runs 10s after SIGKILL", pid)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// processRunning reports whether pid exists and is not a zombie waiting for its parent.
func processRunning(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

func TestOpsInstallNetns(t *testing.T) {
	opsNetnsRequire(t)
	bin := nodeBinary(t)
	lab := newNetnsLab(t, []string{"s1", "s2", "s3"})
	t.Cleanup(func() { opsKillNamespaces(t, lab) }) // runs before the lab's own cleanup removes the namespaces
	dir := t.TempDir()
	var hosts []*opsHost
	for _, h := range lab.hosts {
		hosts = append(hosts, &opsHost{netnsHost: h, root: filepath.Join(dir, h.name)})
	}
	s1, s2, s3 := hosts[0], hosts[1], hosts[2]

	// The first server builds its binary from the checkout (no binary argument) and creates the mesh.
	if _, err := s1.install(t, "--init", "--name", "s1", "--bind", s1.ip, "--tag", "role=web", "--no-systemd"); err != nil {
		t.Fatalf("install.sh --init: %v", err)
	}
	tokens := filepath.Join(s1.etc(), "tokens")
	st, err := os.Stat(tokens)
	if err != nil {
		t.Fatalf("install.sh --init wrote no tokens file: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v; the tokens must be readable by root only (0600)", tokens, st.Mode().Perm())
	}
	b, _ := os.ReadFile(tokens)
	admin, join := opsTokenLine(string(b), "admin token:"), opsTokenLine(string(b), "join token:")
	if admin == "" || join == "" {
		t.Fatalf("the tokens file lacks an \"admin token:\" or \"join token:\" line:\n%s", b)
	}

	// The second server joins where systemd is absent: the script joins, installs everything, starts nothing and
	// says how to start the agent. Run again with --no-systemd, it starts the agent on the joined data dir.
	out, err := s2.install(t, bin, "--join", s1.ip, "--token", join, "--api-token", admin, "--name", "s2", "--bind", s2.ip, "--tag", "role=web")
	if err != nil {
		t.Fatalf("install.sh --join without systemd: %v", err)
	}
	if !strings.Contains(out, "systemd is not running") || !strings.Contains(out, s2.bin()+" agent --data-dir "+s2.data()) {
		t.Errorf("without systemd, install.sh must say so and print the agent's command line; it printed:\n%s", out)
	}
	if pid := s2.agentPid(); pid != 0 {
		t.Errorf("without systemd and without --no-systemd, install.sh started an agent (pid %d)", pid)
	}
	if _, err := s2.install(t, bin, "--join", s1.ip, "--token", join, "--api-token", admin, "--name", "s2", "--bind", s2.ip, "--no-systemd"); err != nil {
		t.Fatalf("install.sh --join --no-systemd on a joined data dir: %v", err)
	}

	if _, err := s3.install(t, bin, "--join", s1.ip, "--token", join, "--api-token", admin, "--name", "s3", "--bind", s3.ip, "--tag", "role=db", "--no-systemd"); err != nil {
		t.Fatalf("install.sh --join: %v", err)
	}

	// Running it again changes nothing: the agent keeps running under the same pid.
	pid3 := s3.agentPid()
	out, err = s3.install(t, bin, "--join", s1.ip, "--token", join, "--name", "s3", "--bind", s3.ip, "--no-systemd")
	if err != nil {
		t.Fatalf("install.sh run a second time: %v", err)
	}
	if pid := s3.agentPid(); pid != pid3 || !processRunning(pid3) || !strings.Contains(out, "already running") {
		t.Errorf("a second run must leave the running agent alone (pid %d before, %d after); it printed:\n%s", pid3, pid, out)
	}

	// The mesh, as every server's API shows it: three members alive, three voters, one leader.
	helper := startNetnsHelper(t, s1.netnsHost)
	deadline := time.Now().Add(60 * time.Second)
	for _, h := range hosts {
		for {
			var st node.Status
			var ms []node.Member
			_, err := helper.api("GET", h.api()+"/v1/status", admin, nil, &st)
			if err == nil {
				_, err = helper.api("GET", h.api()+"/v1/members", admin, nil, &ms)
			}
			if err == nil {
				err = opsMeshComplete(st, ms)
			}
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the mesh did not form within 60s: %v", h.name, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	// Each agent runs the unit's command line, with the binary by its full path and Shoal's bin dir off its PATH.
	for _, h := range hosts {
		pid := h.agentPid()
		if pid == 0 || !processRunning(pid) {
			t.Errorf("%s: no agent running (pid file %s)", h.name, h.pidFile())
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		got := strings.Join(strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00"), " ")
		if want := h.bin() + " agent --data-dir " + h.data(); got != want {
			t.Errorf("%s: the agent runs %q; the unit runs %q", h.name, got, want)
		}
		unit, err := os.ReadFile(h.unit())
		if err != nil {
			t.Errorf("%s: no unit installed: %v", h.name, err)
		} else if !strings.Contains(string(unit), "\nExecStart="+h.bin()+" agent --data-dir "+h.data()+" $SHOAL_ARGS\n") {
			t.Errorf("%s: the installed unit does not run %s by its full path:\n%s", h.name, h.bin(), unit)
		}
		environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		for _, kv := range strings.Split(string(environ), "\x00") {
			if path, ok := strings.CutPrefix(kv, "PATH="); ok {
				for _, d := range filepath.SplitList(path) {
					if filepath.Clean(d) == filepath.Dir(h.bin()) {
						t.Errorf("%s: the agent's PATH holds %s, where its node would shadow Node.js: %s", h.name, d, path)
					}
				}
			}
		}
		for _, line := range strings.Split(string(unit), "\n") {
			if strings.HasPrefix(line, "Environment=PATH=") && strings.Contains(line, filepath.Dir(h.bin())) {
				t.Errorf("%s: the unit puts Shoal's bin dir on PATH: %s", h.name, line)
			}
		}
	}
}

// opsMeshComplete says what is missing from a 3-server mesh as one node's status and members show it.
func opsMeshComplete(st node.Status, ms []node.Member) error {
	if st.Leader == "" || st.Voters != 3 || st.Members != 3 {
		return fmt.Errorf("status: leader %q, %d voters, %d members alive (want a leader, 3 and 3)", st.Leader, st.Voters, st.Members)
	}
	if len(ms) != 3 {
		return fmt.Errorf("%d members listed, want 3", len(ms))
	}
	for _, m := range ms {
		if m.Status != "alive" || m.Role != "voter" {
			return fmt.Errorf("member %s is %s with role %q (want alive, voter)", m.Name, m.Status, m.Role)
		}
	}
	return nil
}

// opsTokenLine returns the value of the line that starts with label.
func opsTokenLine(text, label string) string {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, label); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
