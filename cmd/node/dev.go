package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/daemon"
	"github.com/shoal-ci/shoal/deployer"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// The sample that `node dev` builds and deploys.
const (
	devApp    = "sample"
	devEnv    = "dev"
	devBranch = "main"
)

func (c *cli) devCmd() *cobra.Command {
	var (
		f       nodeFlags
		keep    bool
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a single-node mesh with a sample app, built and deployed, for a first look",
		Long: `Start a single-node mesh in a temporary data dir, create a sample app from a git repository made there,
build it, deploy it to the environment "dev" on this node, and print the dashboard URL, an admin token and the
sample service's URL. Commit to the sample repository and a new release rolls out (the app polls every 2 s).
Ctrl-C stops the sample service and the node, and removes the data dir unless --keep.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.runDev(&f, keep, verbose)
		},
	}
	f.register(cmd, false)
	// dev always runs in a fresh temporary dir; a --data-dir given here would be ignored.
	_ = cmd.Flags().MarkHidden("data-dir")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the temporary data dir on exit")
	cmd.Flags().BoolVar(&verbose, "verbose", false, "print the node's log here instead of to the log file it names")
	cmd.AddCommand(sampleServerCmd())
	return cmd
}

// devSession is one `node dev` run: the node, its services and the sample it set up.
type devSession struct {
	c      *cli
	n      *node.Node
	main   *daemon.Main
	api    *client.Client
	dir    string
	repo   string
	port   int
	status func(format string, a ...any)
}

func (c *cli) runDev(f *nodeFlags, keep, verbose bool) error {
	dir, err := os.MkdirTemp("", "shoal-dev-")
	if err != nil {
		return fmt.Errorf("create the dev data dir: %w", err)
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	f.dataDir = dir
	m, err := f.daemon(daemon.Init)
	if err != nil {
		return err
	}
	m.MeshName, m.JoinTTL = "dev", time.Hour
	cfg := &m.Config
	cfg.Name, cfg.Voters = "dev", 1
	// The node's log would bury the summary (an election, every build and deploy step): it goes to a file that
	// outlives the data dir, and the summary names it. --verbose prints it here as before.
	logPath := ""
	if !verbose {
		lf, err := os.CreateTemp("", "shoal-dev-*.log")
		if err != nil {
			return fmt.Errorf("create the dev log file: %w", err)
		}
		defer lf.Close()
		logPath = lf.Name()
		cfg.Logger = slog.New(slog.NewTextHandler(lf, &slog.HandlerOptions{Level: f.level()}))
	}

	// A signal during the setup (a build can take a while) stops it too.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	setupCtx, cancelSetup := context.WithCancel(context.Background())
	defer cancelSetup()

	if err := m.Run(setupCtx); err != nil {
		return err
	}
	n, res := m.Node, m.InitResult
	s := &devSession{c: c, n: n, main: m, api: client.New(res.API, res.AdminToken), dir: dir,
		repo: filepath.Join(dir, "sample")}
	// With --json, stdout carries only the final document; the progress goes to stderr.
	progress := c.out
	if c.json {
		progress = c.errOut
	}
	s.status = func(format string, a ...any) { fmt.Fprintf(progress, format+"\n", a...) }
	defer s.stop()

	s.status("Shoal dev mesh is running (data dir %s%s).", dir, map[bool]string{true: ", kept", false: ", removed on exit"}[keep])
	if logPath != "" {
		s.status("node log: %s (--verbose prints it here)", logPath)
	}
	setupDone := make(chan error, 1)
	go func() { setupDone <- s.setup(setupCtx) }()
	select {
	case err := <-setupDone:
		if err != nil {
			return fmt.Errorf("set up the sample app: %w (the mesh itself ran; see the log above)", err)
		}
	case sg := <-sig:
		n.Logger().Info("stopping", "signal", sg.String())
		cancelSetup()
		<-setupDone
		return nil
	}

	sampleURL := fmt.Sprintf("http://127.0.0.1:%d/", s.port)
	if c.json {
		_ = c.print(map[string]any{"api": "http://" + res.API, "dashboard": "http://" + res.API + "/ui/",
			"admin_token": res.AdminToken, "data_dir": dir, "sample_repo": s.repo, "sample_url": sampleURL}, nil)
	} else {
		self := selfPath()
		fmt.Fprintf(c.out, "\ndashboard:      http://%s/ui/\n", res.API)
		fmt.Fprintf(c.out, "admin token:    %s\n", res.AdminToken)
		fmt.Fprintf(c.out, "sample service: %s\n", sampleURL)
		fmt.Fprintf(c.out, "\nIn another shell:\n  export SHOAL_ADDR=%s SHOAL_TOKEN=%s\n  %s builds %s\n  %s env show %s\n  %s deployments %s\n",
			res.API, res.AdminToken, self, devApp, self, devEnv, self, devEnv)
		fmt.Fprintf(c.out, "\nCommit to %s and watch a new release roll out:\n  cd %s && echo 'Hello again' > message.txt && git commit -qam 'new message'\n  curl %s\n",
			s.repo, s.repo, sampleURL)
		fmt.Fprintf(c.out, "\nPress Ctrl-C to stop (the sample service stops with the mesh).\n\n")
	}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() { defer close(watched); s.announce(watchCtx) }()
	select {
	case sg := <-sig:
		n.Logger().Info("stopping", "signal", sg.String())
	case <-n.Left():
	}
	stopWatch()
	<-watched
	return nil
}

// setup creates the sample repository, app and environment, and waits until the first release is deployed.
func (s *devSession) setup(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	s.port = port
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary to run the sample service with: %w", err)
	}
	if err := writeSampleRepo(ctx, s.repo, self, port); err != nil {
		return err
	}
	s.status("sample app: git repository %s (branch %s)", s.repo, devBranch)
	app := map[string]any{"name": devApp, "repo": s.repo, "branch": devBranch, "auto_build": true, "poll_interval": "2s"}
	if _, err := s.api.Post(ctx, "/v1/apps", app, nil); err != nil {
		return fmt.Errorf("create app %s: %w", devApp, err)
	}
	env := map[string]any{"name": devEnv, "app": devApp, "servers": []string{s.n.Name()}, "auto_deploy": true}
	if _, err := s.api.Post(ctx, "/v1/envs", env, nil); err != nil {
		return fmt.Errorf("create environment %s: %w", devEnv, err)
	}
	s.status("environment %s: this node, auto deploy on; waiting for the first build (the app polls every 2s)", devEnv)
	release, err := s.waitBuild(ctx)
	if err != nil {
		return err
	}
	return s.waitDeployment(ctx, release)
}

// poll calls check every 300 ms until it reports done or an error, ctx ends, or 5 minutes pass.
func poll(ctx context.Context, what string, check func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	t := time.NewTicker(300 * time.Millisecond)
	defer t.Stop()
	for {
		done, err := check()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}

func (s *devSession) waitBuild(ctx context.Context) (string, error) {
	last, release := "", ""
	err := poll(ctx, "wait for the sample's first build", func() (bool, error) {
		var bs []raftfsm.Build
		if _, err := s.api.Get(ctx, "/v1/apps/"+devApp+"/builds?limit=1", &bs); err != nil {
			return false, err
		}
		if len(bs) == 0 {
			return false, nil
		}
		b := bs[0]
		if line := fmt.Sprintf("build %s: %s", b.ID, b.State); line != last {
			last = line
			if b.State == raftfsm.BuildSucceeded {
				line += ", release " + b.Release
			}
			s.status("%s", line)
		}
		switch {
		case b.State == raftfsm.BuildSucceeded:
			release = b.Release
			return true, nil
		case b.Finished():
			return false, fmt.Errorf("build %s %s: %s (its log: %s log %s)", b.ID, b.State, b.Error, selfPath(), b.ID)
		}
		return false, nil
	})
	return release, err
}

func (s *devSession) waitDeployment(ctx context.Context, release string) error {
	last := ""
	return poll(ctx, "wait for the sample's deployment", func() (bool, error) {
		var ds []raftfsm.Deployment
		if _, err := s.api.Get(ctx, "/v1/envs/"+devEnv+"/deployments?limit=5", &ds); err != nil {
			return false, err
		}
		var d *raftfsm.Deployment
		for i := range ds {
			if ds[i].Kind == raftfsm.DeployKindDeploy && ds[i].Release == release {
				d = &ds[i]
				break
			}
		}
		if d == nil {
			return false, nil
		}
		line := fmt.Sprintf("deployment %s of %s: %s", d.ID, d.Release, d.State)
		if st := d.Nodes[s.n.Name()]; st != nil && d.State == raftfsm.DeployRunning {
			line += fmt.Sprintf(" (%s %s", s.n.Name(), st.State)
			if st.Phase != "" {
				line += ", " + st.Phase
			}
			line += ")"
		}
		if line != last {
			last = line
			s.status("%s", line)
		}
		switch d.State {
		case raftfsm.DeploySucceeded:
			return true, nil
		case raftfsm.DeployFailed, raftfsm.DeployCancelled, raftfsm.DeployRolledBack:
			return false, fmt.Errorf("deployment %s %s: %s (its log: %s deployment %s)", d.ID, d.State, d.Error, selfPath(), d.ID)
		}
		return false, nil
	})
}

// stop terminates the sample service and stops the node. The deployer leaves supervised apps running when it
// closes (a restarted agent adopts them), so a dev mesh must stop its sample itself: a terminate deployment
// first, then the process groups recorded in the supervisor's state for whatever that left.
func (s *devSession) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var res deployer.CreateResult
	if _, err := s.api.Post(ctx, "/v1/envs/"+devEnv+"/deployments", deployer.CreateRequest{Kind: raftfsm.DeployKindTerminate}, &res); err == nil && res.Deployment != nil {
		id := res.Deployment.ID
		_ = poll(ctx, "terminate the sample", func() (bool, error) {
			var d raftfsm.Deployment
			if _, err := s.api.Get(ctx, "/v1/deployments/"+url.PathEscape(id), &d); err != nil {
				return false, err
			}
			return d.Finished(), nil
		})
	}
	s.main.Close()
	killSupervised(filepath.Join(s.dir, "apps"))
}

// killSupervised kills the process group of every process recorded in a supervisor state file under root.
func killSupervised(root string) {
	states, _ := filepath.Glob(filepath.Join(root, "*", "*", "supervisor", "exec-state.json"))
	for _, path := range states {
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var st struct {
			Instances []struct {
				PID int `json:"pid"`
			} `json:"instances"`
		}
		if json.Unmarshal(data, &st) != nil {
			continue
		}
		for _, in := range st.Instances {
			// Each supervised copy leads its own session, so its pid is its process group.
			if in.PID > 1 {
				_ = unix.Kill(-in.PID, unix.SIGKILL)
			}
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port for the sample service: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// writeSampleRepo creates the sample's git repository: a message, and a shoal.yml whose build stamps the message
// with the build, and whose deploy serves it with this binary's hidden sample server.
func writeSampleRepo(ctx context.Context, dir, self string, port int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create the sample repository: %w", err)
	}
	manifest := fmt.Sprintf(`# The sample app of 'node dev'. Edit message.txt (or this file), commit, and a new release rolls out.
build:
  build:
    - printf '%%s (build %%s, commit %%.7s)\n' "$(cat message.txt)" "$SHOAL_BUILD" "$SHOAL_COMMIT" > version.txt

package:
  include:
    - version.txt

deploy:
  env:
    PORT: %d
    SAMPLE_SERVER_BIN: %s
  exec:
    - exec "$SAMPLE_SERVER_BIN" dev sample-server --port "$PORT" --text "$(cat version.txt), release $SHOAL_RELEASE"
  health_check:
    http: http://127.0.0.1:%d/
    interval: 1s
    deadline: 30s
`, port, strconv.Quote(self), port)
	files := map[string]string{
		"shoal.yml":   manifest,
		"message.txt": "Hello from Shoal\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return fmt.Errorf("write the sample's %s: %w", name, err)
		}
	}
	steps := [][]string{
		{"init", "-q", "-b", devBranch},
		{"config", "user.name", "Shoal dev"},
		{"config", "user.email", "dev@shoal.invalid"},
		{"add", "shoal.yml", "message.txt"},
		{"commit", "-q", "-m", "sample app"},
	}
	for _, args := range steps {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %s in %s: %w: %s (node dev needs git installed)", strings.Join(args, " "), dir, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// sampleServerCmd is the sample app's service: it answers every request with a text. Hidden: only the sample's
// manifest runs it, so that the sample works on any machine that has this binary.
func sampleServerCmd() *cobra.Command {
	var (
		port int
		text string
	)
	cmd := &cobra.Command{
		Use:    "sample-server",
		Short:  "Serve a text over HTTP (the sample app of node dev)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serveSample(port, text)
		},
	}
	cmd.Flags().IntVar(&port, "port", 8080, "port on 127.0.0.1 to listen on")
	cmd.Flags().StringVar(&text, "text", "Hello from Shoal", "the text every request is answered with")
	return cmd
}

func serveSample(port int, text string) error {
	srv := &http.Server{
		Addr:              net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = io.WriteString(w, text+"\n")
		}),
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return fmt.Errorf("sample server on port %d: %w", port, err)
	case <-sig:
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		<-errc
		return nil
	}
}
