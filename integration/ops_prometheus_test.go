package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/shoal-ci/shoal/internal/meshtest"
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
	c := meshtest.New(t, 3, nil)
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
