package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/node"

	"github.com/shoal-ci/shoal/internal/testtier"
)

// The monitoring files in monitoring/ are checked with Prometheus's own tools (Debian's prometheus package:
// promtool and the server), against docs/metrics.md, and against a real Prometheus scraping a real mesh.

// opsRepoFile is the path of a file in this checkout.
func opsRepoFile(t testing.TB, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// needPromtool returns promtool's path, or skips.
func needPromtool(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		testtier.Skip(t, "promtool is not installed (apt-get install prometheus; CI installs it through .ci/run)")
	}
	return p
}

func runPromtool(t testing.TB, stdin io.Reader, args ...string) {
	t.Helper()
	cmd := exec.Command(needPromtool(t), args...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestOpsPromtoolRules(t *testing.T) {
	runPromtool(t, nil, "check", "rules", opsRepoFile(t, "monitoring/alerts.yml"))
	// The rules' unit tests: made-up series, and the alerts (with their rendered annotations) that must fire.
	runPromtool(t, nil, "test", "rules", opsRepoFile(t, "monitoring/alerts_test.yml"))
}

func TestOpsPromtoolConfig(t *testing.T) {
	needPromtool(t)
	// The config names its token file and rule file relative to itself; promtool checks that both exist, so the
	// check runs on a copy with a token file beside it, as an operator's /etc/prometheus would have.
	dir := t.TempDir()
	for _, f := range []string{"prometheus.yml", "alerts.yml"} {
		b, err := os.ReadFile(opsRepoFile(t, "monitoring/"+f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "shoal-token"), []byte("token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, nil, "check", "config", filepath.Join(dir, "prometheus.yml"))
}

// TestOpsPromtoolCheckMetrics runs `promtool check metrics` (Prometheus's naming and format lint) on what every
// node of a 3-node mesh serves at /metrics.
func TestOpsPromtoolCheckMetrics(t *testing.T) {
	needPromtool(t)
	c := node.NewTestCluster(t, 3, nil)
	for _, n := range c.Nodes {
		body := opsScrape(t, n.HTTPAddr(), c.AdminToken)
		if !bytes.Contains(body, []byte("shoal_raft_leader")) {
			t.Fatalf("%s: /metrics lacks shoal_raft_leader:\n%s", n.Name(), body)
		}
		cmd := exec.Command(needPromtool(t), "check", "metrics")
		cmd.Stdin = bytes.NewReader(body)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: promtool check metrics: %v\n%s", n.Name(), err, out)
		}
	}
}

// opsScrape fetches /metrics from a node's API.
func opsScrape(t testing.TB, addr, token string) []byte {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %d %v\n%s", addr, resp.StatusCode, err, body)
	}
	return body
}

// --- metric names: the dashboard and the rules use only metrics that docs/metrics.md lists ------------------

// opsPendingDocs are metrics that the dashboard and the alert rules use, that the builder and the deployer
// register, and that docs/metrics.md does not list yet: their owners add them to the catalog (issue 6). The test
// still checks that each is registered somewhere in the code, and says which ones the catalog has by now, so
// that they can leave this list.
var opsPendingDocs = []string{
	"shoal_builds_total", "shoal_build_duration_seconds", "shoal_build_queue_depth",
	"shoal_deployments_total", "shoal_deployment_duration_seconds", "shoal_auto_deployments_total",
	"shoal_nodes_on_release", "shoal_rollbacks_total",
}

// opsPromBuiltin are series that Prometheus makes itself for every target.
var opsPromBuiltin = map[string]bool{"up": true, "scrape_duration_seconds": true, "scrape_samples_scraped": true}

// opsDocumentedMetrics reads the metric names from docs/metrics.md's tables (the first column, in backquotes).
func opsDocumentedMetrics(t testing.TB) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(opsRepoFile(t, "docs/metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?m)^\\|\\s*`([a-zA-Z_:][a-zA-Z0-9_:]*)`\\s*\\|")
	out := map[string]bool{}
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		out[m[1]] = true
	}
	if len(out) == 0 {
		t.Fatal("docs/metrics.md lists no metric (rows like | `shoal_raft_leader` | gauge | …)")
	}
	return out
}

var (
	promqlStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promqlRanges    = regexp.MustCompile(`\[[^\]]*\]`)
	promqlGroupings = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlMatchers  = regexp.MustCompile(`\{[^}]*\}`)
	promqlIdent     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promqlKeywords  = map[string]bool{"and": true, "or": true, "unless": true, "by": true, "without": true, "on": true,
		"ignoring": true, "group_left": true, "group_right": true, "offset": true, "bool": true, "inf": true, "nan": true}
)

// promqlMetrics returns the metric names a PromQL expression selects: its identifiers once strings, label
// matchers, ranges and groupings are taken out, less functions and keywords.
func promqlMetrics(expr string) []string {
	s := promqlStrings.ReplaceAllString(expr, `""`)
	s = promqlMatchers.ReplaceAllString(s, " ")
	s = promqlRanges.ReplaceAllString(s, " ")
	s = promqlGroupings.ReplaceAllString(s, " ")
	var out []string
	for _, loc := range promqlIdent.FindAllStringIndex(s, -1) {
		name := s[loc[0]:loc[1]]
		if loc[0] > 0 && strings.ContainsRune("0123456789.$", rune(s[loc[0]-1])) {
			continue // the unit of a number (30m) or a variable
		}
		if strings.HasPrefix(strings.TrimLeft(s[loc[1]:], " \t\n"), "(") || promqlKeywords[strings.ToLower(name)] {
			continue // a function or aggregation, or a keyword
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

// opsBaseMetric maps a histogram's or summary's series (_bucket, _sum, _count) to the metric docs list.
func opsBaseMetric(name string, known map[string]bool) string {
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok && known[base] {
			return base
		}
	}
	return name
}

// opsDashboard is the part of a Grafana dashboard the tests read.
type opsDashboard struct {
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"list"`
	} `json:"templating"`
	Panels []opsPanel `json:"panels"`
}

type opsPanel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource json.RawMessage `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []opsPanel `json:"panels"` // a collapsed row's
}

func opsLoadDashboard(t testing.TB) opsDashboard {
	t.Helper()
	b, err := os.ReadFile(opsRepoFile(t, "monitoring/grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d opsDashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("monitoring/grafana-dashboard.json is not valid JSON: %v", err)
	}
	return d
}

// queries returns every panel's expressions, labelled with the panel's title.
func (d opsDashboard) queries() map[string]string {
	out := map[string]string{}
	var walk func([]opsPanel)
	walk = func(ps []opsPanel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out[fmt.Sprintf("panel %q %s", p.Title, tg.RefID)] = tg.Expr
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// opsAlertExprs returns the expressions of monitoring/alerts.yml by alert name.
func opsAlertExprs(t testing.TB) map[string]string {
	t.Helper()
	b, err := os.ReadFile(opsRepoFile(t, "monitoring/alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("monitoring/alerts.yml: %v", err)
	}
	out := map[string]string{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			out["alert "+r.Alert] = r.Expr
		}
	}
	return out
}

func TestOpsGrafanaDashboard(t *testing.T) {
	d := opsLoadDashboard(t)
	if d.Title == "" || d.UID == "" || d.SchemaVersion == 0 {
		t.Errorf("the dashboard needs a title, a uid and a schemaVersion (got %q, %q, %d)", d.Title, d.UID, d.SchemaVersion)
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	ids := map[int]string{}
	var check func([]opsPanel)
	check = func(ps []opsPanel) {
		for _, p := range ps {
			if prev, dup := ids[p.ID]; dup || p.ID == 0 {
				t.Errorf("panel %q has id %d, which is missing or also %q's", p.Title, p.ID, prev)
			}
			ids[p.ID] = p.Title
			if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("panel %q: gridPos %+v does not fit Grafana's 24 columns", p.Title, p.GridPos)
			}
			check(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Title == "" || len(p.Targets) == 0 {
				t.Errorf("panel %d (%s) needs a title and at least one query", p.ID, p.Type)
			}
			if !bytes.Contains(p.Datasource, []byte("${datasource}")) {
				t.Errorf("panel %q does not use the dashboard's ${datasource} variable: %s", p.Title, p.Datasource)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q: query %s has no expression", p.Title, tg.RefID)
				}
				for _, m := range regexp.MustCompile(`\$\{?([a-zA-Z_][a-zA-Z0-9_]*)`).FindAllStringSubmatch(tg.Expr, -1) {
					if !vars[m[1]] && !strings.HasPrefix(m[1], "__") {
						t.Errorf("panel %q uses $%s, which the dashboard does not define", p.Title, m[1])
					}
				}
			}
		}
	}
	check(d.Panels)
	if len(d.queries()) < 10 {
		t.Errorf("the dashboard has %d queries; it should show Raft, the API, builds and deployments", len(d.queries()))
	}

	// Every expression parses: promtool checks them as recording rules, with Grafana's variables filled in.
	if _, err := exec.LookPath("promtool"); err != nil {
		testtier.Skip(t, "promtool is not installed (apt-get install prometheus; CI installs it through .ci/run): the dashboard's expressions are checked with it")
	}
	{ // the rules file
		var rules strings.Builder
		rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
		for i, q := range sortedValues(d.queries()) {
			b, _ := json.Marshal(opsGrafanaExpr(q, "1m"))
			fmt.Fprintf(&rules, "      - record: dashboard:query%d\n        expr: %s\n", i, b)
		}
		p := filepath.Join(t.TempDir(), "dashboard-rules.yml")
		if err := os.WriteFile(p, []byte(rules.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		runPromtool(t, nil, "check", "rules", p)
	}
}

// opsGrafanaExpr fills in the dashboard's variables as Grafana would for the job "shoal".
func opsGrafanaExpr(expr, rateInterval string) string {
	return strings.NewReplacer("$job", "shoal", "${job}", "shoal", "$__rate_interval", rateInterval,
		"$__interval", rateInterval, "$__range", "1h").Replace(expr)
}

func sortedValues(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = m[k]
	}
	return out
}

func TestOpsMonitoringMetricsDocumented(t *testing.T) {
	docs := opsDocumentedMetrics(t)
	pending := map[string]bool{}
	for _, name := range opsPendingDocs {
		if docs[name] {
			t.Logf("docs/metrics.md lists %s now: take it off opsPendingDocs", name)
			continue
		}
		pending[name] = true
	}
	// A pending name must at least be registered by some package, so that a typo cannot hide behind the list.
	registered := opsRegisteredNames(t)
	for name := range pending {
		if !registered[name] {
			t.Errorf("%s is on opsPendingDocs but no package registers a metric of that name", name)
		}
	}
	exprs := opsAlertExprs(t)
	for k, v := range opsLoadDashboard(t).queries() {
		exprs[k] = v
	}
	known := map[string]bool{}
	for k := range docs {
		known[k] = true
	}
	for k := range pending {
		known[k] = true
	}
	for where, expr := range exprs {
		names := promqlMetrics(expr)
		if len(names) == 0 && !strings.Contains(expr, "vector(") {
			t.Errorf("%s: found no metric in %q", where, expr)
		}
		for _, name := range names {
			base := opsBaseMetric(name, known)
			if !known[base] && !opsPromBuiltin[base] {
				t.Errorf("%s uses %s, which docs/metrics.md does not list", where, name)
			}
		}
	}
}

// opsRegisteredNames collects the string literals that look like Shoal metric names in the non-test Go code.
func opsRegisteredNames(t testing.TB) map[string]bool {
	t.Helper()
	root := opsRepoFile(t, ".")
	re := regexp.MustCompile(`"(shoal_[a-z0-9_]+)"`)
	out := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "integration") && p != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			out[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestOpsPromqlMetrics(t *testing.T) {
	for expr, want := range map[string][]string{
		`(sum(shoal_raft_leader{job="shoal"}) or vector(0)) == 0`:                                            {"shoal_raft_leader"},
		`histogram_quantile(0.9, sum by (le, app) (rate(shoal_build_duration_seconds_bucket[1h])))`:          {"shoal_build_duration_seconds_bucket"},
		`sum by (app) (increase(a_total{r="x"}[30m] offset 30m)) > 0 unless on (app) b_total{x=~"a|b"}`:      {"a_total", "b_total"},
		`shoal_raft_commit_index{job="$job"} - shoal_raft_applied_index{job="$job"}`:                         {"shoal_raft_commit_index", "shoal_raft_applied_index"},
		`sum by (code) (rate(shoal_api_requests_total{job="$job", route="GET /v1/apps"}[$__rate_interval]))`: {"shoal_api_requests_total"},
		`up{job="shoal"} == 0`: {"up"},
	} {
		if got := promqlMetrics(expr); !slices.Equal(got, want) {
			t.Errorf("promqlMetrics(%q) = %v, want %v", expr, got, want)
		}
	}
}

// --- a real Prometheus server scraping a real mesh ---------------------------------------------------------------

// promServer is a Prometheus server (Debian's prometheus binary) that this test runs on loopback, with the
// repository's prometheus.yml and alerts.yml, its targets and intervals changed for the test.
type promServer struct {
	t    testing.TB
	addr string
	cmd  *exec.Cmd
	log  string
	hc   *http.Client
	done chan struct{}
}

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
	c := node.NewTestCluster(t, 3, nil)
	// Prometheus gets a token of its own with the least role, as docs/install.md advises.
	var tok node.TokenView
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
