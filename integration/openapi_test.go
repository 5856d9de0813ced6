package integration

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// specPath is the API reference this test holds to the server.
const specPath = "../docs/openapi.yaml"

// routeSources are the packages that register HTTP routes on a node.
var routeSources = []string{"../api", "../builder", "../deployer", "../spread", "../ui", "../notify"}

// routePattern is a net/http pattern with a method, as every API route is registered.
var routePattern = regexp.MustCompile(`^(GET|POST|PUT|PATCH|DELETE|HEAD) (/\S*)$`)

type openAPISpec struct {
	Paths      map[string]map[string]yaml.Node `yaml:"paths"`
	Components struct {
		Schemas map[string]*specSchema `yaml:"schemas"`
	} `yaml:"components"`
}

type specOperation struct {
	OperationID string `yaml:"operationId"`
	Role        string `yaml:"x-shoal-role"`
	GoInput     string `yaml:"x-go-input"`
	RequestBody *struct {
		Content map[string]struct {
			Schema *specSchema `yaml:"schema"`
		} `yaml:"content"`
	} `yaml:"requestBody"`
	Responses map[string]struct {
		Content map[string]any `yaml:"content"`
	} `yaml:"responses"`
}

type specSchema struct {
	Ref        string                 `yaml:"$ref"`
	Properties map[string]*specSchema `yaml:"properties"`
	AllOf      []*specSchema          `yaml:"allOf"`
}

// operation is one documented method on one path.
type operation struct {
	method, path string
	specOperation
}

func (o operation) key() string { return o.method + " " + o.path }

func loadSpec(t *testing.T) (openAPISpec, []operation) {
	t.Helper()
	raw, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatalf("read the API reference: %v", err)
	}
	var spec openAPISpec
	if err := yaml.Unmarshal(raw, &spec); err != nil {
		t.Fatalf("parse %s: %v", specPath, err)
	}
	var ops []operation
	for path, item := range spec.Paths {
		for key, node := range item {
			method := strings.ToUpper(key)
			switch method {
			case "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD":
			default:
				continue // parameters, summary, ...
			}
			var op specOperation
			if err := node.Decode(&op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			ops = append(ops, operation{method: method, path: path, specOperation: op})
		}
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].key() < ops[j].key() })
	return spec, ops
}

// registeredRoutes finds every route pattern the server's packages register, by reading their source: a new
// Handle call without a line in docs/openapi.yaml fails TestOpenAPIMatchesRoutes.
func registeredRoutes(t *testing.T) []string {
	t.Helper()
	var out []string
	fset, files := parseSources(t)
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleLimit" && sel.Sel.Name != "HandleFunc") {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true // a variable: not an HTTP route (e.g. a QUIC ALPN handler)
			}
			pattern, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatalf("%s: %v", fset.Position(lit.Pos()), err)
			}
			switch {
			case pattern == "/":
				// The catch-all that answers "no API route".
			case routePattern.MatchString(pattern):
				out = append(out, pattern)
			default:
				t.Errorf("%s: route %q has no method: register it as \"GET /path\" (and document it in %s)",
					fset.Position(lit.Pos()), pattern, specPath)
			}
			return true
		})
	}
	sort.Strings(out)
	if len(out) < 10 {
		t.Fatalf("found only %d routes in %v: has the source layout changed?", len(out), routeSources)
	}
	return out
}

// TestOpenAPIMatchesRoutes holds docs/openapi.yaml and the registered routes to each other, both ways, without
// a server.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	_, ops := loadSpec(t)
	documented := map[string]bool{}
	ids := map[string]string{}
	for _, op := range ops {
		documented[op.key()] = true
		if op.Role == "" {
			t.Errorf("%s: no x-shoal-role (reader, deployer, admin or none)", op.key())
		}
		// Client generators name their functions after operationId.
		if other, dup := ids[op.OperationID]; op.OperationID == "" || dup {
			t.Errorf("%s: operationId %q is missing or also used by %s", op.key(), op.OperationID, other)
		}
		ids[op.OperationID] = op.key()
	}
	registered := map[string]bool{}
	for _, r := range registeredRoutes(t) {
		registered[r] = true
		if !documented[r] {
			t.Errorf("route %q is registered but not documented in %s", r, specPath)
		}
	}
	for _, op := range ops {
		if !registered[op.key()] {
			t.Errorf("%s is documented in %s but no package registers it", op.key(), specPath)
		}
	}
}

// TestOpenAPIRequestBodies checks that each documented request body names the fields of the Go struct that
// decodes it (x-go-input), both ways. Bodies are decoded strictly, so a documented field the struct lacks is
// an error for every client that sends it.
func TestOpenAPIRequestBodies(t *testing.T) {
	spec, ops := loadSpec(t)
	structs := goStructFields(t)
	checked := 0
	for _, op := range ops {
		if op.GoInput == "" {
			continue
		}
		want, ok := structs[op.GoInput]
		if !ok {
			t.Errorf("%s: x-go-input %q names no struct in %v", op.key(), op.GoInput, routeSources)
			continue
		}
		if op.RequestBody == nil || op.RequestBody.Content["application/json"].Schema == nil {
			t.Errorf("%s: x-go-input without a JSON request body", op.key())
			continue
		}
		got := spec.properties(op.RequestBody.Content["application/json"].Schema)
		for _, f := range want {
			if !slices.Contains(got, f) {
				t.Errorf("%s: field %q of %s is not documented", op.key(), f, op.GoInput)
			}
		}
		for _, f := range got {
			if !slices.Contains(want, f) {
				t.Errorf("%s: documented field %q is not in %s (the server rejects unknown fields)", op.key(), f, op.GoInput)
			}
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no operation has x-go-input")
	}
}

// properties lists a schema's property names, following $ref and allOf.
func (s openAPISpec) properties(sc *specSchema) []string {
	if sc == nil {
		return nil
	}
	if sc.Ref != "" {
		return s.properties(s.Components.Schemas[strings.TrimPrefix(sc.Ref, "#/components/schemas/")])
	}
	var out []string
	for name := range sc.Properties {
		out = append(out, name)
	}
	for _, sub := range sc.AllOf {
		out = append(out, s.properties(sub)...)
	}
	return out
}

// goStructFields maps "package.Type" to the JSON names of its fields, for every struct type declared in the
// route sources (unexported ones included, which a test outside the package cannot reflect on).
func goStructFields(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	_, files := parseSources(t)
	for _, f := range files {
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.TYPE {
				continue
			}
			for _, spec := range gd.Specs {
				ts := spec.(*ast.TypeSpec)
				st, ok := ts.Type.(*ast.StructType)
				if !ok {
					continue
				}
				var fields []string
				for _, fld := range st.Fields.List {
					if fld.Tag == nil {
						continue
					}
					tag, _ := strconv.Unquote(fld.Tag.Value)
					jsonName, _, _ := strings.Cut(reflectTag(tag, "json"), ",")
					if jsonName != "" && jsonName != "-" {
						fields = append(fields, jsonName)
					}
				}
				out[f.Name.Name+"."+ts.Name.Name] = fields
			}
		}
	}
	return out
}

// parseSources parses the non-test Go files of the route sources.
func parseSources(t *testing.T) (*token.FileSet, []*ast.File) {
	t.Helper()
	var out []*ast.File
	fset := token.NewFileSet()
	for _, dir := range routeSources {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, file := range files {
			if strings.HasSuffix(file, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, file, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatalf("parse %s: %v", file, err)
			}
			out = append(out, f)
		}
	}
	return fset, out
}

func reflectTag(tag, key string) string {
	for _, part := range strings.Fields(tag) {
		if k, v, ok := strings.Cut(part, ":"); ok && k == key {
			s, _ := strconv.Unquote(v)
			return s
		}
	}
	return ""
}

// TestOpenAPIServed asks a real node with every service attached for each documented operation: each is
// served (it does not reach the catch-all "no API route" answer), and each needs exactly the role the
// reference says. Requests are refused before their handler runs (no token, or a token one role too low), so
// no operation has a side effect and the order does not matter.
func TestOpenAPIServed(t *testing.T) {
	_, ops := loadSpec(t)
	c := startDaemonMesh(t, 1, nil) // the node with every service, as the binary runs it
	n := c.Nodes[0]

	base := "http://" + n.HTTPAddr()
	tokens := map[string]string{"admin": c.AdminToken}
	for _, role := range []string{"reader", "deployer"} {
		tokens[role] = createToken(t, base, c.AdminToken, role)
	}
	// A request with the role below the needed one must be refused with this status.
	below := map[string]struct {
		token  string
		status int
	}{
		"reader":   {"", http.StatusUnauthorized},
		"deployer": {tokens["reader"], http.StatusForbidden},
		"admin":    {tokens["deployer"], http.StatusForbidden},
	}

	for _, op := range ops {
		path := strings.NewReplacer("{app}", "no-such-app", "{env}", "no-such-env", "{id}", "no-such-id",
			"{version}", "no-such-version", "{node}", "no-such-node", "{name}", "no-such-name").Replace(op.path)
		if strings.Contains(path, "{") {
			t.Errorf("%s: a path parameter this test does not know: add it to the replacer", op.key())
			continue
		}
		switch op.Role {
		case "none":
			status, body := request(t, op.method, base+path, "")
			if isCatchAll(status, body) {
				t.Errorf("%s is documented but not served: %s", op.key(), body)
			}
			if status == http.StatusUnauthorized && !strings.Contains(body, "bad_signature") {
				t.Errorf("%s is documented as needing no token but answered 401: %s", op.key(), body)
			}
		case "reader", "deployer", "admin":
			lower := below[op.Role]
			status, body := request(t, op.method, base+path, lower.token)
			if isCatchAll(status, body) {
				t.Errorf("%s is documented but not served: %s", op.key(), body)
				continue
			}
			if status != lower.status {
				t.Errorf("%s is documented as needing role %s, but a lower token got %d (want %d): %s",
					op.key(), op.Role, status, lower.status, body)
			}
			// A GET is safe to run for real: with the right token it reaches its handler.
			if op.method == "GET" && !streams(op) {
				status, body := request(t, op.method, base+path, tokens[op.Role])
				if isCatchAll(status, body) || status == http.StatusUnauthorized || status == http.StatusForbidden {
					t.Errorf("%s with a %s token: %d %s", op.key(), op.Role, status, body)
				}
			}
		default:
			t.Errorf("%s: x-shoal-role %q is not reader, deployer, admin or none", op.key(), op.Role)
		}
	}

	// The catch-all itself, so that isCatchAll cannot silently stop recognising it.
	status, body := request(t, "GET", base+"/v1/no-such-route", c.AdminToken)
	if !isCatchAll(status, body) {
		t.Fatalf("an unknown route answered %d %s: isCatchAll no longer recognises the catch-all", status, body)
	}
}

// streams says whether an operation answers a stream that does not end by itself.
func streams(op operation) bool {
	for _, r := range op.Responses {
		if _, ok := r.Content["text/event-stream"]; ok {
			return true
		}
	}
	return false
}

// isCatchAll recognises the node's answer to a request no route matches. A 404 for a missing resource has the
// same code; only the message tells them apart.
func isCatchAll(status int, body string) bool {
	if status != http.StatusNotFound {
		return false
	}
	var e struct {
		Code  string `json:"code"`
		Error string `json:"error"`
	}
	return json.Unmarshal([]byte(body), &e) == nil && e.Code == "not_found" && strings.HasPrefix(e.Error, "no API route")
}

func request(t *testing.T, method, url, tok string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	cl := &http.Client{Timeout: 30 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(body)
}

// createToken makes an API token of role, retrying while the new node settles its leadership.
func createToken(t *testing.T, base, admin, role string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"name": "openapi-" + role, "role": role})
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest("POST", base+"/v1/tokens", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+admin)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusCreated {
			var out struct {
				Token string `json:"token"`
			}
			if err := json.Unmarshal(raw, &out); err != nil || out.Token == "" {
				t.Fatalf("create a %s token: %s", role, raw)
			}
			return out.Token
		}
		if resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("create a %s token: %d %s", role, resp.StatusCode, raw)
		}
		time.Sleep(100 * time.Millisecond) // a poll interval, not a wait for an event
	}
}
