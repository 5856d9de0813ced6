package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/internal/testtier"
)

// startPrometheus runs Prometheus scraping targets (host:port of nodes' APIs) every second with token. Any test
// that has a mesh can use it: a build or deploy test can start one after its work and wait for its metrics.
func startPrometheus(t testing.TB, targets []string, token string) *promServer {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		testtier.Skip(t, "the prometheus server is not installed (apt-get install prometheus; CI installs it through .ci/run)")
	}
	dir := t.TempDir()
	// The shipped config, with this mesh's targets and a 1 s rhythm.
	var cfg map[string]any
	b, err := os.ReadFile(opsRepoFile(t, "monitoring/prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("monitoring/prometheus.yml: %v", err)
	}
	cfg["global"] = map[string]any{"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"}
	jobs, _ := cfg["scrape_configs"].([]any)
	if len(jobs) != 1 {
		t.Fatalf("monitoring/prometheus.yml has %d scrape configs; the test expects the one shoal job", len(jobs))
	}
	job := jobs[0].(map[string]any)
	job["static_configs"] = []any{map[string]any{"targets": targets}}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile(opsRepoFile(t, "monitoring/alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string][]byte{"prometheus.yml": out, "alerts.yml": rules, "shoal-token": []byte(token + "\n")} {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// The listen port is picked free just before the start; if another process takes it in between, Prometheus
	// exits at once and the next try picks another.
	var p *promServer
	for attempt := 0; attempt < 3 && p == nil; attempt++ {
		p = tryPrometheus(t, bin, dir, net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, "127.0.0.1"))))
	}
	if p == nil {
		t.Fatal("prometheus did not start in 3 tries (its logs are above)")
	}
	return p
}

func tryPrometheus(t testing.TB, bin, dir, addr string) *promServer {
	t.Helper()
	p := &promServer{t: t, addr: addr, log: filepath.Join(dir, fmt.Sprintf("prometheus-%s.log", strings.ReplaceAll(addr, ":", "-"))),
		hc: &http.Client{Timeout: 10 * time.Second}, done: make(chan struct{})}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	p.cmd = exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=info")
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = sysProcAttr()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-p.done:
			b, _ := os.ReadFile(p.log)
			t.Logf("prometheus on %s exited at start:\n%s", addr, b)
			return nil
		default:
		}
		if resp, err := p.hc.Get("http://" + addr + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(p.log)
			t.Fatalf("prometheus on %s not ready within 60s; its log:\n%s", addr, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *promServer) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = killGroup(p.cmd.Process.Pid, 9)
		<-p.done
	}
	if p.t.Failed() {
		b, _ := os.ReadFile(p.log)
		p.t.Logf("prometheus log:\n%s", b)
	}
}

// promSample is one element of an instant vector.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  float64
}

// query runs an instant query through Prometheus's HTTP API and returns the vector (a scalar comes back as a
// vector of one sample without labels).
func (p *promServer) query(q string) ([]promSample, error) {
	resp, err := p.hc.Get("http://" + p.addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
		Data      struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("query %q: %d: %w", q, resp.StatusCode, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %q: %s: %s", q, r.ErrorType, r.Error)
	}
	parse := func(v []any) float64 {
		s, _ := v[1].(string)
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return math.NaN()
		}
		return f
	}
	switch r.Data.ResultType {
	case "vector":
		var raw []struct {
			Metric map[string]string `json:"metric"`
			Value  []any             `json:"value"`
		}
		if err := json.Unmarshal(r.Data.Result, &raw); err != nil {
			return nil, err
		}
		out := make([]promSample, len(raw))
		for i, s := range raw {
			out[i] = promSample{Metric: s.Metric, Value: parse(s.Value)}
		}
		return out, nil
	case "scalar":
		var v []any
		if err := json.Unmarshal(r.Data.Result, &v); err != nil {
			return nil, err
		}
		return []promSample{{Value: parse(v)}}, nil
	}
	return nil, fmt.Errorf("query %q: a %s result; the test reads vectors and scalars", q, r.Data.ResultType)
}

// promExpect is a query and what its answer must satisfy.
type promExpect struct {
	query string
	ok    func([]promSample) bool
	want  string // what ok checks, for the failure message
}

// promOne is satisfied by a single sample that passes ok.
func promOne(ok func(float64) bool) func([]promSample) bool {
	return func(s []promSample) bool { return len(s) == 1 && ok(s[0].Value) }
}

// waitAll polls every expectation until each holds, or fails the test with the last answers after timeout.
func (p *promServer) waitAll(timeout time.Duration, exps []promExpect) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	pending := slices.Clone(exps)
	last := map[string]string{}
	for len(pending) > 0 {
		var still []promExpect
		for _, e := range pending {
			res, err := p.query(e.query)
			switch {
			case err != nil:
				last[e.query] = err.Error()
				still = append(still, e)
			case !e.ok(res):
				last[e.query] = fmt.Sprintf("%v", res)
				still = append(still, e)
			}
		}
		pending = still
		if len(pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, e := range pending {
				p.t.Errorf("after %v, Prometheus answers %s with %s; want %s", timeout, e.query, last[e.query], e.want)
			}
			p.t.FailNow()
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestOpsPrometheusScrapesMesh runs a real Prometheus against a 3-node mesh, with the repository's config and
// alert rules, and finds the mesh's metrics through the query API. The build and deploy metrics join this list
// once a test mesh builds and deploys (issue 6): run a build and a deployment on a mesh with the builder and
// deployer attached, start Prometheus on it with startPrometheus, and wait (waitAll) for, for example,
// sum(shoal_builds_total{result="succeeded"}) >= 1 and sum(shoal_deployments_total{result="succeeded"}) >= 1.
func TestOpsPrometheusScrapesMesh(t *testing.T) {
	if _, err := exec.LookPath("prometheus"); err != nil {
		testtier.Skip(t, "the prometheus server is not installed (apt-get install prometheus; CI installs it through .ci/run)")
	}
	c := meshtest.New(t, 3, nil)
	// Prometheus gets a token of its own with the least role, as docs/install.md advises.
	var tok api.TokenView
	if _, err := client.New(c.Nodes[0].HTTPAddr(), c.AdminToken).Post(context.Background(), "/v1/tokens",
		map[string]string{"name": "prometheus", "role": "reader"}, &tok); err != nil {
		t.Fatalf("create a reader token for Prometheus: %v", err)
	}
	var targets []string
	present := map[string]bool{} // the metric families the nodes serve, for the dashboard's queries below
	for _, n := range c.Nodes {
		targets = append(targets, n.HTTPAddr())
		for _, line := range strings.Split(string(opsScrape(t, n.HTTPAddr(), c.AdminToken)), "\n") {
			if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
				present[strings.Fields(name)[0]] = true
			}
		}
	}
	p := startPrometheus(t, targets, tok.Token)

	is := func(v float64) func(float64) bool { return func(x float64) bool { return x == v } }
	exps := []promExpect{
		{`count(up{job="shoal"} == 1)`, promOne(is(3)), "3 targets up"},
		{`sum(shoal_raft_leader{job="shoal"})`, promOne(is(1)), "exactly one leader"},
		{`max(shoal_raft_servers{job="shoal", suffrage="voter"})`, promOne(is(3)), "3 voters"},
		{`count(max by (instance) (shoal_raft_term{job="shoal"}) > 0)`, promOne(is(3)), "a term on every node"},
		{`sum(shoal_api_requests_total{job="shoal", route="GET /metrics", code="200"})`,
			promOne(func(x float64) bool { return x > 0 }), "the scrapes counted as API requests"},
		{`count(shoal_api_requests_total{job="shoal"})`, promOne(func(x float64) bool { return x > 0 }), "shoal_api_requests_total series"},
	}
	// Every dashboard query answers, and those whose metrics the nodes serve answer with data.
	for where, expr := range opsLoadDashboard(t).queries() {
		q := opsGrafanaExpr(expr, "10s")
		needData := true
		for _, m := range promqlMetrics(q) {
			if base := opsBaseMetric(m, present); !present[base] && !opsPromBuiltin[base] {
				needData = false
			}
		}
		if needData {
			exps = append(exps, promExpect{q, func(s []promSample) bool { return len(s) > 0 }, where + " with data"})
		} else {
			exps = append(exps, promExpect{q, func([]promSample) bool { return true }, where + " without an error"})
		}
	}
	p.waitAll(60*time.Second, exps)

	// The alert rules are loaded and evaluate without error against the real metrics; on a healthy mesh none
	// fires.
	deadline := time.Now().Add(30 * time.Second)
	for {
		rules, err := p.rules()
		if err == nil {
			err = opsRulesHealthy(rules)
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alert rules in the real Prometheus: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// promRule is one alerting rule as /api/v1/rules reports it.
type promRule struct {
	Name      string `json:"name"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
	State     string `json:"state"`
}

func (p *promServer) rules() ([]promRule, error) {
	resp, err := p.hc.Get("http://" + p.addr + "/api/v1/rules?type=alert")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Groups []struct {
				Rules []promRule `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	var out []promRule
	for _, g := range r.Data.Groups {
		out = append(out, g.Rules...)
	}
	return out, nil
}

// opsRulesHealthy says what is wrong with the loaded rules: too few, not evaluated yet, failing, or firing.
func opsRulesHealthy(rules []promRule) error {
	if len(rules) < 4 {
		return fmt.Errorf("%d alerting rules loaded; monitoring/alerts.yml has more", len(rules))
	}
	for _, r := range rules {
		switch {
		case r.Health == "err":
			return fmt.Errorf("rule %s fails: %s", r.Name, r.LastError)
		case r.Health != "ok":
			return fmt.Errorf("rule %s not evaluated yet (%s)", r.Name, r.Health)
		case r.State != "inactive":
			return fmt.Errorf("rule %s is %s on a healthy mesh", r.Name, r.State)
		}
	}
	return nil
}
