package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-ci/shoal/artifact"
	"github.com/shoal-ci/shoal/builder"
	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/manifest"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/transport"

	"github.com/shoal-ci/shoal/internal/testtier"
)

// deployCluster is an in-process mesh with a deployer on every node, releases of a small HTTP app (this
// test binary in appServer mode) and helpers to deploy them and to ask every node's app what it serves.
type deployCluster struct {
	t      *testing.T
	c      *meshtest.Cluster
	origin *artifact.Store // where releases are "built"; every node's fetcher copies from it

	mu     sync.Mutex
	deps   map[string]*Deployer
	stores map[string]*artifact.Store
	ports  map[string]int
	tags   func(name string) map[string]string
	opts   func(*Options)
	http   *http.Client
}

// newDeployCluster starts size nodes n1..nN; tags gives each node's gossip tags.
func newDeployCluster(t *testing.T, size int, tags func(name string) map[string]string) *deployCluster {
	t.Helper()
	if _, err := os.Stat("/bin/bash"); err != nil {
		testtier.Skip(t, "the deployer runs hooks with bash, which this machine lacks")
	}
	dc := &deployCluster{t: t, deps: map[string]*Deployer{}, stores: map[string]*artifact.Store{}, ports: map[string]int{},
		tags: tags, http: &http.Client{Timeout: 2 * time.Second}}
	var err error
	if dc.origin, err = artifact.New(filepath.Join(t.TempDir(), "origin"), nil); err != nil {
		t.Fatal(err)
	}
	dc.c = meshtest.New(t, size, dc.tweak)
	// Registered after the cluster's own cleanup, so it runs first: deployers stop before their nodes, and
	// the app processes (which outlive agents by design) are stopped last.
	t.Cleanup(dc.close)
	for _, n := range dc.c.Nodes {
		dc.attach(n, nil)
	}
	return dc
}

func (dc *deployCluster) tweak(cfg *node.Config) {
	if dc.tags != nil {
		cfg.Tags = dc.tags(cfg.Name)
	}
	// Deployments wait on gossip for liveness; keep membership quick to settle.
	cfg.DeadGrace = 30 * time.Second
}

// port is the port node name's app listens on.
func (dc *deployCluster) port(name string) int {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if p, ok := dc.ports[name]; ok {
		return p
	}
	p := appPort(dc.t)
	dc.ports[name] = p
	return p
}

// appPorts hands out each port once per test binary.
var appPorts struct {
	sync.Mutex
	used map[int]bool
}

// appPort returns a port free on 127.0.0.1, below the kernel's ephemeral range: an app may bind it long after
// it was chosen, and no outgoing connection of another process on this shared machine can take it meanwhile.
func appPort(t *testing.T) int {
	lo, hi := 20000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if start, err := strconv.Atoi(f[0]); err == nil && start > lo+1000 {
				hi = start
			}
		}
	}
	appPorts.Lock()
	defer appPorts.Unlock()
	if appPorts.used == nil {
		appPorts.used = map[int]bool{}
	}
	for range 1000 {
		p := lo + rand.IntN(hi-lo)
		if appPorts.used[p] {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		ln.Close()
		appPorts.used[p] = true
		return p
	}
	t.Fatalf("no free port in [%d, %d)", lo, hi)
	return 0
}

// attach starts a deployer on n (reg nil: the node's registry).
func (dc *deployCluster) attach(n *node.Node, reg prometheus.Registerer) *Deployer {
	dc.t.Helper()
	dc.mu.Lock()
	store := dc.stores[n.Name()]
	dc.mu.Unlock()
	if store == nil {
		var err error
		if store, err = artifact.New(filepath.Join(n.DataDir(), "blobs"), nil); err != nil {
			dc.t.Fatal(err)
		}
	}
	opts := Options{
		Fetcher:      &StoreFetcher{Store: store, Sources: []*artifact.Store{dc.origin}},
		Exec:         ExecSpec{MinStable: time.Second, InitialBackoff: 50 * time.Millisecond, MaxBackoff: time.Second, StopGrace: 2 * time.Second},
		RetryBackoff: 100 * time.Millisecond, MaxRetryBackoff: time.Second,
		DeadAfter: 3 * time.Second,
		// Releases without a health check prove healthy by staying up this long (tests of it set their own).
		MinHealthyTime: 200 * time.Millisecond,
		Registerer:     reg,
	}
	if dc.opts != nil {
		dc.opts(&opts)
	}
	d, err := Attach(n, dc.c.API(n), opts)
	if err != nil {
		dc.t.Fatalf("attach the deployer to %s: %v", n.Name(), err)
	}
	dc.mu.Lock()
	dc.deps[n.Name()] = d
	dc.stores[n.Name()] = store
	dc.mu.Unlock()
	return d
}

// detach stops node name's deployer, as an agent that stops does: its apps keep running.
func (dc *deployCluster) detach(name string) {
	dc.mu.Lock()
	d := dc.deps[name]
	delete(dc.deps, name)
	dc.mu.Unlock()
	if d != nil {
		d.Close()
	}
}

// join adds a node to the mesh and attaches a deployer to it.
func (dc *deployCluster) join(name string) *node.Node {
	n := dc.c.Join(name, dc.tweak)
	dc.attach(n, nil)
	return n
}

func (dc *deployCluster) close() {
	dc.mu.Lock()
	deps := dc.deps
	dc.deps = map[string]*Deployer{}
	dc.mu.Unlock()
	for _, d := range deps {
		d.Close()
	}
	dc.mu.Lock()
	for _, s := range dc.stores {
		s.Close()
	}
	dc.mu.Unlock()
	dc.origin.Close()
	// The apps outlive their agents on purpose; a test must not leave them behind.
	dirs, _ := filepath.Glob(filepath.Join(dc.c.Dir, "*", "apps", "*", "*", "supervisor"))
	for _, dir := range dirs {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := NewSupervisor(dir, nil).Stop(ctx); err != nil {
			dc.t.Errorf("stop the app processes of %s: %v", dir, err)
		}
		cancel()
	}
}

func (dc *deployCluster) node(name string) *node.Node {
	for _, n := range dc.c.Nodes {
		if n != nil && n.Name() == name {
			return n
		}
	}
	dc.t.Fatalf("no node %s", name)
	return nil
}

func (dc *deployCluster) names() []string {
	var out []string
	for _, n := range dc.c.Nodes {
		if n != nil {
			out = append(out, n.Name())
		}
	}
	return out
}

// apply writes a command through the first node. A write cut by a leadership change on a loaded machine
// ("may or may not have been applied") is tried again, and a conflict on that retry means the first try landed.
func (dc *deployCluster) apply(c raftfsm.Command) *node.Applied {
	dc.t.Helper()
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		// As the admin: if the first node no longer leads, the leader refuses admin commands from a node alone.
		adminID, _, _ := strings.Cut(dc.c.AdminToken, ".")
		res, err := dc.c.Nodes[0].Apply(node.WithTokenID(ctx, adminID), c)
		cancel()
		if err == nil {
			return res
		}
		if attempt > 0 && raftfsm.KindOf(err) == raftfsm.KindConflict {
			return &node.Applied{}
		}
		var re *transport.RemoteError
		if attempt < 3 && errors.As(err, &re) && (re.Code == node.CodeUnavailable || re.Code == node.CodeNoLeader) {
			continue
		}
		dc.t.Fatalf("apply %T: %v", c, err)
	}
}

func (dc *deployCluster) api(name string) *client.Client {
	cl := client.New(dc.node(name).HTTPAddr(), dc.c.AdminToken)
	cl.RetryNoLeader = 10 * time.Second
	return cl
}

// createApp creates app and an environment env of it: servers by name and/or tags, strategy st. The env's
// variables tell the app server where each node's copy listens.
func (dc *deployCluster) createApp(app, env string, servers []string, tags map[string]string, st raftfsm.Strategy, autoDeploy bool) {
	dc.t.Helper()
	dc.apply(&raftfsm.AppPut{App: raftfsm.App{Name: app, Repo: "/srv/git/" + app + ".git", Branch: "main"}, Create: true})
	dc.createEnv(app, env, servers, tags, st, autoDeploy)
}

func (dc *deployCluster) createEnv(app, env string, servers []string, tags map[string]string, st raftfsm.Strategy, autoDeploy bool) {
	dc.t.Helper()
	bin, err := os.Executable()
	if err != nil {
		dc.t.Fatal(err)
	}
	vars := map[string]raftfsm.Var{"APP_SERVER": {Value: bin}, appServerEnv: {Value: "1"}}
	for i := 1; i <= 20; i++ {
		name := fmt.Sprintf("n%d", i)
		vars["PORT_"+name] = raftfsm.Var{Value: strconv.Itoa(dc.port(name))}
	}
	dc.apply(&raftfsm.EnvPut{Env: raftfsm.Env{Name: env, App: app, Servers: servers, Tags: tags, Vars: vars,
		AutoDeploy: autoDeploy, Strategy: st}, Create: true})
}

// releaseOpts shapes a test release.
type releaseOpts struct {
	unhealthy bool              // the health check never passes
	deploy    map[string]string // extra deploy sections (shoal.yml keys) as YAML lines
	manifest  string            // the whole shoal.yml instead of appManifest's
}

// appManifest is the test app's shoal.yml: the app server as the Exec process, and a health check that
// asks it over bash's /dev/tcp (no curl needed).
func appManifest(o releaseOpts) string {
	var b strings.Builder
	b.WriteString("package:\n  include: ['*']\ndeploy:\n  exec:\n    - exec \"$APP_SERVER\"\n")
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range o.deploy {
			if !yield(k) {
				return
			}
		}
	}) {
		fmt.Fprintf(&b, "  %s:\n    - %s\n", k, o.deploy[k])
	}
	b.WriteString(`  health_check:
    command:
      - |
        p=PORT_$SHOAL_NODE
        exec 3<>/dev/tcp/127.0.0.1/${!p}
        printf 'GET /health HTTP/1.0\r\n\r\n' >&3
        read -r status <&3
        case "$status" in *" 200 "*) exit 0;; esac
        echo "health: $status"
        exit 1
    interval: 100ms
`)
	// A release that is broken on purpose fails fast; the others get time for a loaded machine.
	if o.unhealthy {
		b.WriteString("    deadline: 1500ms\n")
	} else {
		b.WriteString("    deadline: 20s\n")
	}
	return b.String()
}

// release packages a release of app with builder.Package, stores it at the origin and records it.
func (dc *deployCluster) release(app, version string, o releaseOpts) *raftfsm.Release {
	dc.t.Helper()
	src := dc.t.TempDir()
	files := map[string]string{"shoal.yml": appManifest(o), "version.txt": version + "\n"}
	if o.manifest != "" {
		files["shoal.yml"] = o.manifest
	}
	if o.unhealthy {
		files["unhealthy"] = "yes\n"
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o644); err != nil {
			dc.t.Fatal(err)
		}
	}
	out := filepath.Join(dc.t.TempDir(), "release.tar.gz")
	art, err := builder.Package(src, []manifest.Include{{Glob: "*"}}, nil, out, 0)
	if err != nil {
		dc.t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		dc.t.Fatal(err)
	}
	defer f.Close()
	if err := dc.origin.Put(art.Meta(), f); err != nil {
		dc.t.Fatal(err)
	}
	res := dc.apply(&raftfsm.ReleaseCreate{Release: raftfsm.Release{App: app, Version: version, Branch: "main", Digest: art.Digest,
		Size: art.Size, PieceSize: art.PieceSize, Pieces: art.Pieces, CreatedAt: time.Now().UTC()}})
	var rel *raftfsm.Release
	dc.c.Nodes[0].FSM().Read(func(s *raftfsm.State) {
		if r := s.Releases[raftfsm.ReleaseKey(app, version)]; r != nil {
			c := *r
			rel = &c
		}
	})
	if rel == nil {
		dc.t.Fatalf("release %s not recorded (index %d)", version, res.Index)
	}
	return rel
}

// deploy starts a deployment through node via's API.
func (dc *deployCluster) deploy(via, env string, req CreateRequest) CreateResult {
	dc.t.Helper()
	var out CreateResult
	if _, err := dc.api(via).Post(context.Background(), "/v1/envs/"+env+"/deployments", req, &out); err != nil {
		dc.t.Fatalf("deploy %+v to %s: %v", req, env, err)
	}
	return out
}

// deployment reads a deployment from the first live node.
func (dc *deployCluster) deployment(id string) raftfsm.Deployment {
	var out raftfsm.Deployment
	var ok bool
	for _, n := range dc.c.Nodes {
		if n == nil {
			continue
		}
		n.FSM().Read(func(s *raftfsm.State) {
			if d := s.Deploys[id]; d != nil {
				out, ok = copyDeployment(d), true
			}
		})
		break
	}
	if !ok {
		dc.t.Fatalf("deployment %s does not exist", id)
	}
	return out
}

// waitDeployment waits until deployment id is in one of states.
func (dc *deployCluster) waitDeployment(id string, timeout time.Duration, states ...string) raftfsm.Deployment {
	dc.t.Helper()
	var d raftfsm.Deployment
	dc.eventually(timeout, "deployment "+id+" to be "+strings.Join(states, " or "), func() (bool, string) {
		d = dc.deployment(id)
		return slices.Contains(states, d.State), describe(d)
	})
	return d
}

func describe(d raftfsm.Deployment) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s: %s batch %d/%d %q;", d.ID, d.Kind, d.Release, d.State, d.Batch+1, len(d.Batches), d.Error)
	for _, name := range sortedKeys(d.Nodes) {
		st := d.Nodes[name]
		fmt.Fprintf(&b, " %s=%s", name, st.State)
		if st.Error != "" {
			fmt.Fprintf(&b, "(%s)", firstLine(st.Error))
		}
	}
	return b.String()
}

// serving asks node name's app what it serves: "v1 pid=123", or "" when it does not answer.
func (dc *deployCluster) serving(name string) string {
	resp, err := dc.http.Get(fmt.Sprintf("http://127.0.0.1:%d/", dc.port(name)))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return ""
	}
	return string(b)
}

// version is the release part of what serving returns.
func version(serving string) string {
	v, _, _ := strings.Cut(serving, " ")
	return v
}

// waitServing waits until every named node's app serves version.
func (dc *deployCluster) waitServing(timeout time.Duration, want string, names ...string) {
	dc.t.Helper()
	dc.eventually(timeout, "every node serving "+want, func() (bool, string) {
		var seen []string
		ok := true
		for _, name := range names {
			got := dc.serving(name)
			seen = append(seen, name+"="+got)
			if version(got) != want {
				ok = false
				seen = append(seen, dc.agentState(name))
			}
		}
		return ok, strings.Join(seen, ", ")
	})
}

// eventually polls cond until it holds or the timeout passes; the last detail is shown on failure.
func (dc *deployCluster) eventually(timeout time.Duration, what string, cond func() (bool, string)) {
	dc.t.Helper()
	testutil.Eventually(dc.t, timeout, what, cond)
}

// env reads an environment from the first node.
func (dc *deployCluster) env(name string) raftfsm.Env {
	var e raftfsm.Env
	dc.c.Nodes[0].FSM().Read(func(s *raftfsm.State) {
		if x := s.Envs[name]; x != nil {
			e = *x
		}
	})
	return e
}

// deploymentsOf lists an environment's deployments, oldest first.
func (dc *deployCluster) deploymentsOf(env string) []raftfsm.Deployment {
	var out []raftfsm.Deployment
	dc.c.Nodes[0].FSM().Read(func(s *raftfsm.State) {
		for _, d := range s.Deploys {
			if d.Env == env {
				out = append(out, copyDeployment(d))
			}
		}
	})
	slices.SortFunc(out, func(a, b raftfsm.Deployment) int { return int(a.CreateIndex) - int(b.CreateIndex) })
	return out
}

// agentState describes what node name's agent has done for web/prod, for failure messages.
func (dc *deployCluster) agentState(name string) string {
	dir := filepath.Join(dc.c.Dir, name, "apps", "web", "prod")
	rec, err := loadRecord(dir)
	var b strings.Builder
	fmt.Fprintf(&b, "[%s: current %q, record %+v %v", name, currentBase(dir), rec, err)
	if logs, _ := filepath.Glob(filepath.Join(dir, "logs", "*.log")); len(logs) > 0 {
		slices.Sort(logs)
		for _, l := range logs {
			fmt.Fprintf(&b, "; %s: %s", filepath.Base(l), fileTail(l, 600))
		}
	}
	if tail := fileTail(filepath.Join(dir, "exec.log"), 300); tail != "" {
		fmt.Fprintf(&b, "; exec.log: %s", tail)
	}
	b.WriteString("]")
	return b.String()
}
