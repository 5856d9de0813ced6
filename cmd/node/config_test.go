package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// runCLI runs the real root command with args and returns what it printed on stdout, and on stderr too when it
// fails.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	c := &cli{in: strings.NewReader(""), out: &out, errOut: &errOut}
	root := c.root()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	if err := root.Execute(); err != nil {
		return out.String() + errOut.String(), err
	}
	return out.String(), nil
}

// isolate points the CLI at a config file in a fresh directory and clears the environment it reads.
func isolate(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "shoal", "cli.yaml")
	t.Setenv("SHOAL_CONFIG", path)
	t.Setenv("SHOAL_ADDR", "")
	t.Setenv("SHOAL_TOKEN", "")
	return path
}

type shown struct {
	File  string  `json:"file"`
	Addr  setting `json:"addr"`
	Token setting `json:"token"`
}

func showConfig(t *testing.T, args ...string) shown {
	t.Helper()
	out, err := runCLI(t, append([]string{"config", "show", "--json"}, args...)...)
	if err != nil {
		t.Fatalf("config show: %v: %s", err, out)
	}
	var s shown
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("config show --json printed %q: %v", out, err)
	}
	return s
}

func TestConfigPrecedence(t *testing.T) {
	path := isolate(t)

	s := showConfig(t)
	if s.Addr != (setting{defaultAddr, "default"}) || s.Token.Source != "unset" || s.File != path {
		t.Fatalf("with nothing set: %+v", s)
	}

	for _, args := range [][]string{{"config", "set", "addr", "file.example:7420"}, {"config", "set", "token", "abc123.tok-from-the-file-0123"}} {
		if out, err := runCLI(t, args...); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("config file mode %v, want 0600 (it holds a token)", fi.Mode().Perm())
	}
	s = showConfig(t)
	if s.Addr != (setting{"file.example:7420", "config file"}) || s.Token.Source != "config file" {
		t.Fatalf("from the file: %+v", s)
	}
	if s.Token.Value != "abc123.****" {
		t.Errorf("config show printed the token as %q, want its id and the secret masked", s.Token.Value)
	}

	t.Setenv("SHOAL_ADDR", "env.example:7420")
	s = showConfig(t)
	if s.Addr != (setting{"env.example:7420", "env SHOAL_ADDR"}) || s.Token.Source != "config file" {
		t.Fatalf("env over file: %+v", s)
	}

	s = showConfig(t, "--addr", "flag.example:7420")
	if s.Addr != (setting{"flag.example:7420", "flag"}) {
		t.Fatalf("flag over env: %+v", s)
	}
}

// TestConfigReachesTheAPI runs an operator verb against a real HTTP server and checks which address and token
// it used.
func TestConfigReachesTheAPI(t *testing.T) {
	path := isolate(t)
	var (
		mu   sync.Mutex
		auth []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"node":"n1","state":"leader"}`))
	}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	if err := saveCLIConfig(path, cliConfig{Addr: addr, Token: "tok-file"}); err != nil {
		t.Fatal(err)
	}
	last := func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(auth) == 0 {
			return ""
		}
		return auth[len(auth)-1]
	}

	if out, err := runCLI(t, "status", "--json"); err != nil {
		t.Fatalf("status with the config file's address: %v: %s", err, out)
	}
	if got := last(); got != "Bearer tok-file" {
		t.Errorf("token from the file: server saw %q", got)
	}
	t.Setenv("SHOAL_TOKEN", "tok-env")
	if out, err := runCLI(t, "status", "--json"); err != nil {
		t.Fatalf("status: %v: %s", err, out)
	}
	if got := last(); got != "Bearer tok-env" {
		t.Errorf("env over file: server saw %q", got)
	}
	if out, err := runCLI(t, "status", "--json", "--token", "tok-flag"); err != nil {
		t.Fatalf("status: %v: %s", err, out)
	}
	if got := last(); got != "Bearer tok-flag" {
		t.Errorf("flag over env: server saw %q", got)
	}
}

func TestConfigBrokenFile(t *testing.T) {
	path := isolate(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("addr: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// `config set` refuses to overwrite what it cannot read, and says what to do.
	out, err := runCLI(t, "config", "set", "addr", "x:1")
	if err == nil || !strings.Contains(err.Error(), "fix it, or remove it") {
		t.Fatalf("config set over a broken file: err %v, output %s", err, out)
	}
	// Other verbs warn and go on with flags, environment and defaults.
	s := showConfig(t)
	if s.Addr.Source != "default" {
		t.Fatalf("with a broken file: %+v", s)
	}
}

func TestSaveTightensMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cli.yaml")
	if err := os.WriteFile(path, []byte("addr: a:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := saveCLIConfig(path, cliConfig{Addr: "a:1", Token: "t"}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v after saving a token, want 0600", fi.Mode().Perm())
	}
	cfg, err := loadCLIConfig(path)
	if err != nil || cfg != (cliConfig{Addr: "a:1", Token: "t"}) {
		t.Fatalf("round trip: %+v %v", cfg, err)
	}
}

func TestProgressBar(t *testing.T) {
	for _, c := range []struct {
		f    float64
		want string
	}{{0, "[--------------------]   0%"}, {0.45, "[#########-----------]  45%"}, {1, "[####################] 100%"}, {2, "[####################] 100%"}} {
		if got := progressBar(c.f); got != c.want {
			t.Errorf("progressBar(%v) = %q, want %q", c.f, got, c.want)
		}
	}
}
