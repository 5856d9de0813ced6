package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/deployer"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/raftfsm"
)

// appServerEnv makes this test binary run as the app the deploy tests ship: a small HTTP service, so they need
// nothing but bash and this binary on the machine. It is checked in init, before TestMain, because a supervised
// app process runs the test binary without any test flags.
const appServerEnv = "SHOAL_TEST_APP_SERVER"

func init() {
	if os.Getenv(appServerEnv) != "" {
		os.Exit(runAppServer())
	}
}

// runAppServer serves the release it runs from (its working directory, the app home): GET / answers
// "<content of version.txt> pid=<pid>", GET /health answers 200 unless the release holds a file "unhealthy".
// It listens on 127.0.0.1 at the port in PORT_<node name>.
func runAppServer() int {
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("PORT_"+os.Getenv("SHOAL_NODE")))
	if err != nil {
		fmt.Fprintln(os.Stderr, "app server:", err)
		return 1
	}
	mux := http.NewServeMux()
	if _, err := os.Stat("chatter"); err == nil {
		go chatter() // a release that holds a file "chatter" writes to stdout all the time (exec log tests)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("app: GET %s\n", r.URL.Path) // the app's own output, which `node logs` shows
		b, err := os.ReadFile("version.txt")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "%s pid=%d", strings.TrimSpace(string(b)), os.Getpid())
	})
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		if _, err := os.Stat("unhealthy"); err == nil {
			http.Error(w, "broken on purpose", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	if err := http.Serve(ln, mux); err != nil {
		fmt.Fprintln(os.Stderr, "app server:", err)
		return 1
	}
	return 0
}

// chatterLine is the size of each line chatter writes.
const chatterLine = 1024

// chatter writes numbered lines of chatterLine bytes to stdout every 2 ms, until the process is stopped.
func chatter() {
	pad := strings.Repeat("x", chatterLine-len("chatter 00000000 \n"))
	for i := 0; ; i++ {
		fmt.Printf("chatter %08d %s\n", i, pad)
		time.Sleep(2 * time.Millisecond) // the app's pace, not a wait for a condition
	}
}

// deployApp is an app the deploy tests ship to a mesh, with the port each server's copy listens on.
type deployApp struct {
	t     testing.TB
	name  string
	env   string
	ports map[string]int
	gates string // directory of the step gates (see gateScript)
	hc    *http.Client
	// dataDirs finds a server's data dir, to stop the app processes at the end (they outlive agents).
	dataDirs func() []string
}

// gateScript is packaged in every release as gate.sh: `sh gate.sh STEP` marks that STEP was reached and then
// waits while the test holds STEP's gate closed (file block-STEP), at most 2 minutes.
const gateScript = `#!/bin/sh
touch "$GATES/at-$1"
i=0
while [ -e "$GATES/block-$1" ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done
`

// deployManifest is the shoal.yml of the test app: every hook passes its gate, the app server is the Exec
// process, and the health check asks it over bash's /dev/tcp (no curl needed).
const deployManifest = `package:
  include: ['*']
deploy:
  pre_install: [sh "$GATES/gate.sh" PreInstall]
  post_install: [sh "$SHOAL_INSTALLHOME/gate.sh" PostInstall]
  pre_start: [sh gate.sh PreStart]
  exec:
    - exec "$APP_SERVER"
  post_start: [sh gate.sh PostStart]
  health_check:
    command:
      - |
        sh gate.sh Health
        p=PORT_$SHOAL_NODE
        exec 3<>/dev/tcp/127.0.0.1/${!p}
        printf 'GET /health HTTP/1.0\r\n\r\n' >&3
        read -r status <&3
        case "$status" in *" 200 "*) exit 0;; esac
        echo "health: $status"
        exit 1
    interval: 100ms
    deadline: 10s
`

// newDeployApp creates app and environment env through cl: servers by name, strategy st. servers lists every
// server that may ever run the app (its port is reserved now).
func newDeployApp(t testing.TB, cl *client.Client, app, env string, servers, portsFor []string, st raftfsm.Strategy, auto bool, repo string) *deployApp {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	a := &deployApp{t: t, name: app, env: env, ports: map[string]int{}, gates: t.TempDir(), hc: &http.Client{Timeout: 2 * time.Second}}
	if err := os.WriteFile(filepath.Join(a.gates, "gate.sh"), []byte(gateScript), 0o755); err != nil {
		t.Fatal(err)
	}
	vars := map[string]raftfsm.Var{"APP_SERVER": {Value: bin}, appServerEnv: {Value: runMarker}, "GATES": {Value: a.gates}}
	for _, name := range portsFor {
		a.ports[name] = freePort(t, "127.0.0.1")
		vars["PORT_"+name] = raftfsm.Var{Value: strconv.Itoa(a.ports[name])}
	}
	if repo == "" {
		repo = "/srv/git/" + app + ".git"
	}
	ctx := context.Background()
	if _, err := cl.Post(ctx, "/v1/apps", map[string]any{"name": app, "repo": repo, "branch": "main"}, nil); err != nil {
		t.Fatalf("create app %s: %v", app, err)
	}
	// A release without a health check proves healthy by its Exec staying up this long: short, for the tests
	// that do not test it (the default is 10 s).
	if _, err := cl.Post(ctx, "/v1/envs", map[string]any{"name": env, "app": app, "servers": servers, "vars": vars,
		"strategy": st, "auto_deploy": auto, "min_healthy_time": testMinHealthy}, nil); err != nil {
		t.Fatalf("create environment %s: %v", env, err)
	}
	return a
}

// testMinHealthy is the minimum healthy time of the tests' environments.
const testMinHealthy = "100ms"

// releaseFiles are the files of a test release serving version.
func releaseFiles(version string, unhealthy bool) map[string]string {
	files := map[string]string{"shoal.yml": deployManifest, "version.txt": version + "\n", "gate.sh": gateScript}
	if unhealthy {
		files["unhealthy"] = "yes\n"
	}
	return files
}

// tarGzFiles makes a release archive of files (at the root, sorted). A name ending in .fifo becomes a named
// pipe, which the deployer's extraction refuses: a release that fails at Extract.
func tarGzFiles(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		mode := int64(0o644)
		if strings.HasSuffix(n, ".sh") {
			mode = 0o755
		}
		if strings.HasSuffix(n, ".fifo") {
			if err := tw.WriteHeader(&tar.Header{Name: n, Mode: mode, Typeflag: tar.TypeFifo}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: mode, Size: int64(len(files[n])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, files[n]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// push uploads a release of the app through cl (`node release push`).
func (a *deployApp) push(cl *client.Client, version string, unhealthy bool) {
	a.t.Helper()
	a.pushFiles(cl, version, releaseFiles(version, unhealthy))
}

// pushFiles uploads a release made of files (see releaseFiles), e.g. one whose gate.sh fails at a step.
func (a *deployApp) pushFiles(cl *client.Client, version string, files map[string]string) {
	a.t.Helper()
	data := tarGzFiles(a.t, files)
	var rel raftfsm.Release
	if err := cl.Upload(context.Background(), "/v1/apps/"+a.name+"/releases?version="+url.QueryEscape(version), bytes.NewReader(data), &rel); err != nil {
		a.t.Fatalf("push release %s: %v", version, err)
	}
}

// deploy starts a deployment through cl.
func (a *deployApp) deploy(cl *client.Client, req deployer.CreateRequest) raftfsm.Deployment {
	a.t.Helper()
	var res deployer.CreateResult
	if _, err := cl.Post(context.Background(), "/v1/envs/"+a.env+"/deployments", req, &res); err != nil || res.Deployment == nil {
		a.t.Fatalf("deploy %+v: %+v %v", req, res, err)
	}
	return *res.Deployment
}

// deployment reads one deployment.
func getDeployment(cl *client.Client, id string) (raftfsm.Deployment, error) {
	var d raftfsm.Deployment
	_, err := cl.Get(context.Background(), "/v1/deployments/"+id, &d)
	return d, err
}

// waitDeployment waits until deployment id is in one of states, reading through whichever of clients answers.
func waitDeployment(t testing.TB, clients func() []*client.Client, id string, timeout time.Duration, states ...string) raftfsm.Deployment {
	t.Helper()
	var d raftfsm.Deployment
	testutil.Eventually(t, timeout, "deployment "+id+" to be "+strings.Join(states, " or "), func() (bool, string) {
		var errs []string
		for _, cl := range clients() {
			got, err := getDeployment(cl, id)
			if err != nil {
				errs = append(errs, err.Error())
				continue
			}
			d = got
			return slices.Contains(states, d.State), describeDeployment(d)
		}
		return false, strings.Join(errs, "; ")
	})
	return d
}

func describeDeployment(d raftfsm.Deployment) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s: %s batch %d/%d %q;", d.ID, d.Kind, d.Release, d.State, d.Batch+1, len(d.Batches), d.Error)
	names := make([]string, 0, len(d.Nodes))
	for n := range d.Nodes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		st := d.Nodes[n]
		fmt.Fprintf(&b, " %s=%s/%s", n, st.State, st.Phase)
		if st.Error != "" {
			fmt.Fprintf(&b, "(%s)", st.Error)
		}
	}
	return b.String()
}

// serving asks server name's copy of the app what it serves: "v1 pid=123", or "" when it does not answer.
func (a *deployApp) serving(name string) string {
	resp, err := a.hc.Get(fmt.Sprintf("http://127.0.0.1:%d/", a.ports[name]))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return string(b)
}

func versionOf(serving string) string {
	v, _, _ := strings.Cut(serving, " ")
	return v
}

// waitServing waits until every named server's copy serves version.
func (a *deployApp) waitServing(timeout time.Duration, version string, names ...string) {
	a.t.Helper()
	testutil.Eventually(a.t, timeout, "every server serving "+version, func() (bool, string) {
		ok := true
		var seen []string
		for _, n := range names {
			got := a.serving(n)
			seen = append(seen, n+"="+got)
			ok = ok && versionOf(got) == version
		}
		return ok, strings.Join(seen, ", ")
	})
}

// block closes a step's gate: the next hook of that step waits at it. open opens it again.
func (a *deployApp) block(step string) {
	a.t.Helper()
	if err := os.WriteFile(filepath.Join(a.gates, "block-"+step), nil, 0o644); err != nil {
		a.t.Fatal(err)
	}
	_ = os.Remove(filepath.Join(a.gates, "at-"+step))
}

func (a *deployApp) open(step string) {
	_ = os.Remove(filepath.Join(a.gates, "block-"+step))
}

// reached reports whether a hook of step has come to its gate.
func (a *deployApp) reached(step string) bool {
	_, err := os.Stat(filepath.Join(a.gates, "at-"+step))
	return err == nil
}

// envDir is where a server keeps the app's environment.
func (a *deployApp) envDir(dataDir string) string {
	return filepath.Join(dataDir, "apps", a.name, a.env)
}

// stopApps stops the app processes left on the given data dirs: they outlive their agents by design, and a test
// must not leave them behind. Gates are opened so no hook waits.
func (a *deployApp) stopApps(dataDirs ...string) {
	entries, _ := os.ReadDir(a.gates)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "block-") {
			_ = os.Remove(filepath.Join(a.gates, e.Name()))
		}
	}
	for _, dir := range dataDirs {
		state := filepath.Join(a.envDir(dir), "supervisor")
		if _, err := os.Stat(state); err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		if err := deployer.NewSupervisor(state, nil).Stop(ctx); err != nil {
			a.t.Errorf("stop the app processes of %s: %v", dir, err)
		}
		cancel()
	}
}

// checkCurrent fails unless the environment's `current` link names a complete release: a directory that holds
// the whole release (its version.txt and manifest).
func (a *deployApp) checkCurrent(dataDir string) string {
	a.t.Helper()
	cur, err := deployer.Current(a.envDir(dataDir))
	if err != nil {
		return "" // nothing installed yet
	}
	for _, f := range []string{"version.txt", "shoal.yml", "gate.sh"} {
		if _, err := os.Stat(filepath.Join(cur, f)); err != nil {
			a.t.Fatalf("current points at %s, which is not a complete release: %v", cur, err)
		}
	}
	b, _ := os.ReadFile(filepath.Join(cur, "version.txt"))
	return strings.TrimSpace(string(b))
}
