package builder

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// mesh is an in-process cluster of real nodes (Raft, QUIC, HTTP on loopback) with a builder on each.
type mesh struct {
	t    *testing.T
	c    *meshtest.Cluster
	svcs []*Service
}

func newMesh(t *testing.T, size int, opts Options) *mesh {
	t.Helper()
	if opts.KillGrace == 0 {
		opts.KillGrace = time.Second
	}
	m := &mesh{t: t, c: meshtest.New(t, size, nil)}
	for _, n := range m.c.Nodes {
		svc, err := Attach(n, m.c.API(n), opts)
		if err != nil {
			t.Fatalf("attach the builder to %s: %v", n.Name(), err)
		}
		t.Cleanup(func() { svc.Close() })
		m.svcs = append(m.svcs, svc)
	}
	return m
}

func (m *mesh) api(i int) *client.Client {
	return client.New(m.c.Nodes[i].HTTPAddr(), m.c.AdminToken)
}

func (m *mesh) svcOf(n *node.Node) *Service {
	for _, s := range m.svcs {
		if s.n == n {
			return s
		}
	}
	m.t.Fatalf("no builder on %s", n.Name())
	return nil
}

// createApp creates an app through node 0; fields are the POST /v1/apps body beyond the name.
func (m *mesh) createApp(name string, fields map[string]any) {
	m.t.Helper()
	body := map[string]any{"name": name, "branch": "main"}
	for k, v := range fields {
		body[k] = v
	}
	if _, err := m.api(0).Post(context.Background(), "/v1/apps", body, nil); err != nil {
		m.t.Fatalf("create app %s: %v", name, err)
	}
}

// startBuild queues a manual build through node i.
func (m *mesh) startBuild(i int, app, ref string) raftfsm.Build {
	m.t.Helper()
	var b raftfsm.Build
	if _, err := m.api(i).Post(context.Background(), "/v1/apps/"+app+"/builds", BuildRequest{Ref: ref}, &b); err != nil {
		m.t.Fatalf("start a build of %s at %q: %v", app, ref, err)
	}
	return b
}

func (m *mesh) getBuild(i int, id string) (raftfsm.Build, error) {
	var b raftfsm.Build
	_, err := m.api(i).Get(context.Background(), "/v1/builds/"+id, &b)
	return b, err
}

// waitBuild waits until build id satisfies cond as node 0 sees it.
func (m *mesh) waitBuild(id, what string, cond func(b raftfsm.Build) bool) raftfsm.Build {
	m.t.Helper()
	var b raftfsm.Build
	deadline := time.Now().Add(60 * time.Second)
	for {
		var err error
		b, err = m.getBuild(0, id)
		if err == nil && cond(b) {
			return b
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("timed out waiting for build %s to be %s; last seen %+v (%v)\nlog:\n%s", id, what, b, err, m.buildLog(id))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (m *mesh) waitFinished(id string) raftfsm.Build {
	m.t.Helper()
	return m.waitBuild(id, "finished", func(b raftfsm.Build) bool { return b.Finished() })
}

func (m *mesh) waitRunning(id string) raftfsm.Build {
	m.t.Helper()
	return m.waitBuild(id, "running", func(b raftfsm.Build) bool { return b.State == raftfsm.BuildRunning })
}

// buildLog reads a build's whole log through node 0's API.
func (m *mesh) buildLog(id string) string {
	resp, err := m.rawGet(0, "/v1/builds/"+id+"/log")
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return string(data)
}

func (m *mesh) rawGet(i int, path string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+m.c.Nodes[i].HTTPAddr()+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+m.c.AdminToken)
	return http.DefaultClient.Do(req)
}

func (m *mesh) releases(app string) []raftfsm.Release {
	m.t.Helper()
	var rels []raftfsm.Release
	if _, err := m.api(0).Get(context.Background(), "/v1/apps/"+url.PathEscape(app)+"/releases", &rels); err != nil {
		m.t.Fatalf("list releases of %s: %v", app, err)
	}
	return rels
}

// newAppRepo makes a repository whose main branch holds shoal.yml and the given files.
func newAppRepo(t *testing.T, manifest string, files map[string]string) (*gitRepo, string) {
	t.Helper()
	repo := newGitRepo(t, filepath.Join(t.TempDir(), "app.git"))
	all := map[string]string{"shoal.yml": manifest}
	for k, v := range files {
		all[k] = v
	}
	return repo, repo.commit("first commit", all)
}

func TestManualBuildMakesARelease(t *testing.T) {
	repo, head := newAppRepo(t, `
build:
  build:
    - echo "building $SHOAL_APP build $SHOAL_BUILD of $SHOAL_BRANCH at $DISTELLI_RELREVISION"
    - mkdir -p dist && cp index.js dist/ && echo '{"name":"web"}' > dist/package.json
package:
  include: ['dist/**']
`, map[string]string{"index.js": "console.log('hi')\n"})
	m := newMesh(t, 1, Options{})
	m.createApp("web", map[string]any{"repo": repo.dir})

	b := m.startBuild(0, "web", "")
	if b.Commit != head || b.Branch != "main" || b.Trigger != "manual" || b.ID != "web-1" {
		t.Fatalf("queued build %+v; want web-1 of main at %s", b, head)
	}
	b = m.waitFinished(b.ID)
	if b.State != raftfsm.BuildSucceeded || b.Release != "v1" || b.Node != "n1" || b.Attempt != 1 {
		t.Fatalf("build ended %+v\nlog:\n%s", b, m.buildLog(b.ID))
	}

	var rel raftfsm.Release
	if _, err := m.api(0).Get(context.Background(), "/v1/apps/web/releases/v1", &rel); err != nil {
		t.Fatal(err)
	}
	if rel.Commit != head || rel.Branch != "main" || rel.Build != b.ID || rel.Size <= 0 || len(rel.Pieces) == 0 ||
		len(rel.Digest) != 64 || strings.Join(rel.Holders, ",") != "n1" {
		t.Fatalf("release %+v", rel)
	}
	svc := m.svcs[0]
	if !svc.Store().Complete(rel.Digest) {
		t.Error("the release archive is not complete in the node's artifact store")
	}
	if meta, _ := svc.Store().Meta(rel.Digest); meta.Size != rel.Size || meta.PieceSize != rel.PieceSize {
		t.Errorf("stored meta %+v does not match the release", meta)
	}
	log := m.buildLog(b.ID)
	if !strings.Contains(log, "building web build 1 of main at "+head) || !strings.Contains(log, "build succeeded: release v1") {
		t.Errorf("log lacks the script's output or the result:\n%s", log)
	}
	if data, err := os.ReadFile(filepath.Join(m.c.Nodes[0].DataDir(), "builds", b.ID+".log")); err != nil || string(data) != log {
		t.Errorf("the log is not kept in the data dir (%v)", err)
	}
	if left, _ := os.ReadDir(svc.workDir); len(left) != 0 {
		t.Errorf("work dir not cleaned: %v", left)
	}
	if got := metricValue(svc.m.builds.WithLabelValues("web", resultSucceeded)); got != 1 {
		t.Errorf("shoal_builds_total{app=web,result=succeeded} = %v", got)
	}
	if got := metricValue(svc.m.duration); got != 1 {
		t.Errorf("shoal_build_duration_seconds counted %v builds", got)
	}
}

// metricValue reads a counter's or gauge's value, or a histogram's sample count.
func metricValue(m prometheus.Metric) float64 {
	var pb dto.Metric
	if err := m.Write(&pb); err != nil {
		return -1
	}
	switch {
	case pb.Counter != nil:
		return pb.Counter.GetValue()
	case pb.Gauge != nil:
		return pb.Gauge.GetValue()
	case pb.Histogram != nil:
		return float64(pb.Histogram.GetSampleCount())
	}
	return -1
}

func readLines(r io.Reader) []string {
	data, _ := io.ReadAll(r)
	return strings.Split(string(data), "\n")
}

func parseFloat(s string) float64 {
	var v float64
	if _, err := fmt.Sscan(strings.TrimSpace(s), &v); err != nil {
		return -1
	}
	return v
}

func TestAttachStopsProcessesLeftByAnEarlierLife(t *testing.T) {
	c := meshtest.New(t, 1, nil)
	n := c.Nodes[0]
	// A build script of a node that was killed -9: its own process group, a background child, in a work dir.
	dir := filepath.Join(n.DataDir(), "builds", "work", "web-1.1", "src")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(t.TempDir(), "bg.pid")
	cmd := exec.Command("sh", "-c", `sleep 300 & echo $! > "$1"; wait`, "sh", pidFile)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); <-exited })
	bg := readPid(t, pidFile)

	svc, err := Attach(n, c.API(n), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	testutil.Until(t, 20*time.Second, "the left-over script and its child to be stopped", func() bool {
		select {
		case <-exited:
		default:
			return false
		}
		return processGone(bg)
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("old work dir still there: %v", err)
	}
}
