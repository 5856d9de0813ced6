package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/daemon"
	"github.com/shoal-ci/shoal/deployer"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/spread"
)

// nodeFlags are the flags of the verbs that run a node.
type nodeFlags struct {
	dataDir    string
	name       string
	bind       string
	advertise  string
	httpPort   int
	gossipPort int
	quicPort   int
	tags       []string
	voters     int
	logLevel   string
	openMetric bool
	profile    string
	deadGrace  time.Duration
	certLife   time.Duration
	// The release spread's settings (spread.Options).
	uploadLimit, downloadLimit string
	minHolders, keepReleases   int
	gcInterval                 time.Duration
	// The app output's rotation (deployer.Options.ExecLogMax, ExecLogKeep).
	execLogMax  string
	execLogKeep int
}

func (f *nodeFlags) register(cmd *cobra.Command, forNew bool) {
	fl := cmd.Flags()
	fl.StringVar(&f.dataDir, "data-dir", envOr("SHOAL_DATA_DIR", "/var/lib/shoal"), "data dir (env SHOAL_DATA_DIR)")
	fl.StringVar(&f.bind, "bind", "", "IP address to listen on (default 127.0.0.1 for a new node)")
	fl.StringVar(&f.advertise, "advertise", "", "IP address other servers reach this one at (default: --bind)")
	fl.IntVar(&f.httpPort, "http-port", 0, fmt.Sprintf("HTTP API port (default %d)", node.DefaultHTTPPort))
	fl.IntVar(&f.gossipPort, "gossip-port", 0, fmt.Sprintf("gossip port, TCP and UDP (default %d)", node.DefaultGossipPort))
	fl.IntVar(&f.quicPort, "quic-port", 0, fmt.Sprintf("QUIC port, UDP (default %d)", node.DefaultQUICPort))
	fl.StringArrayVar(&f.tags, "tag", nil, "tag KEY=VALUE that environments select servers by (repeatable)")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fl.BoolVar(&f.openMetric, "metrics-open", false, "serve /metrics without a token (for a Prometheus without credentials)")
	fl.StringVar(&f.profile, "raft-profile", "lan", "Raft timeouts: lan (400 ms heartbeat/election) or wan (hashicorp/raft's 1 s defaults)")
	fl.DurationVar(&f.deadGrace, "dead-grace", 30*time.Minute, "how long a dead server stays in Raft before the leader removes it")
	fl.DurationVar(&f.certLife, "cert-lifetime", node.DefaultCertLifetime, "how long the node certificates this server signs are valid (members renew at half-life)")
	fl.StringVar(&f.uploadLimit, "upload-limit", "0", "cap on the release pieces this server sends, e.g. 50mbit or 6MB (per second; 0: none; auto: paced by the queueing delay it causes)")
	fl.StringVar(&f.downloadLimit, "download-limit", "0", "cap on the release pieces this server receives, e.g. 100mbit or 12MB (per second; 0: none)")
	fl.IntVar(&f.minHolders, "min-holders", 2, "servers that must hold a new release whole before it counts as available (set it alike on every server)")
	fl.IntVar(&f.keepReleases, "keep-releases", 5, "newest releases per app kept in the artifact store besides those in use")
	fl.DurationVar(&f.gcInterval, "gc-interval", time.Minute, "how often old release archives are collected from the artifact store")
	fl.StringVar(&f.execLogMax, "exec-log-max", "10MiB", "size past which an app's exec.log is rotated (copy and truncate), e.g. 10MiB")
	fl.IntVar(&f.execLogKeep, "exec-log-keep", 3, "rotated copies of an app's exec.log kept (exec.log.1 …)")
	if forNew {
		host, _ := os.Hostname()
		fl.StringVar(&f.name, "name", host, "this server's name in the mesh (unique)")
	}
}

// level is --log-level's level (info when it does not parse: config says so).
func (f *nodeFlags) level() slog.Level {
	level := slog.LevelInfo
	_ = level.UnmarshalText([]byte(f.logLevel))
	return level
}

func (f *nodeFlags) config() (node.Config, error) {
	tags, err := parseKV(f.tags, "tag")
	if err != nil {
		return node.Config{}, err
	}
	level := f.level()
	if err := new(slog.Level).UnmarshalText([]byte(f.logLevel)); err != nil {
		return node.Config{}, fmt.Errorf("--log-level %q: use debug, info, warn or error", f.logLevel)
	}
	dir, err := filepath.Abs(f.dataDir)
	if err != nil {
		return node.Config{}, err
	}
	timing, err := node.TimingProfile(f.profile)
	if err != nil {
		return node.Config{}, err
	}
	return node.Config{
		Name: f.name, DataDir: dir, BindIP: f.bind, AdvertiseIP: f.advertise,
		HTTPPort: f.httpPort, GossipPort: f.gossipPort, QUICPort: f.quicPort, Tags: tags, Voters: f.voters,
		Timing: timing, DeadGrace: f.deadGrace, CertLifetime: f.certLife,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	}, nil
}

// daemon makes the server the flags describe: the node's config and the services' settings.
func (f *nodeFlags) daemon(start daemon.Start) (*daemon.Main, error) {
	cfg, err := f.config()
	if err != nil {
		return nil, err
	}
	sp, err := f.spreadOptions()
	if err != nil {
		return nil, err
	}
	if f.gcInterval < time.Second {
		return nil, fmt.Errorf("--gc-interval %s: give at least 1s (the default is 1m)", f.gcInterval)
	}
	sp.GCInterval = f.gcInterval
	size, err := parseSize("--exec-log-max", f.execLogMax)
	if err != nil {
		return nil, err
	}
	if f.execLogKeep < 1 {
		return nil, fmt.Errorf("--exec-log-keep %d: give at least 1 (the default is 3)", f.execLogKeep)
	}
	bo, err := builderOptions()
	if err != nil {
		return nil, err
	}
	return &daemon.Main{Config: cfg, API: api.Config{MetricsOpen: f.openMetric}, Start: start, Spread: sp, Builder: bo,
		Deployer: deployer.Options{ExecLogMax: size, ExecLogKeep: f.execLogKeep}}, nil
}

// parseSize reads a size such as 10MiB or 500KB.
func parseSize(flag, v string) (int64, error) {
	s := strings.ToLower(strings.TrimSpace(v))
	for _, u := range rateUnits {
		if strings.HasSuffix(u.suffix, "bit") {
			continue
		}
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			if x, err := strconv.ParseFloat(strings.TrimSpace(num), 64); err == nil && x*u.bytes >= 1024 && x*u.bytes < math.MaxInt64/2 {
				return int64(x * u.bytes), nil
			}
			break
		}
	}
	return 0, fmt.Errorf("%s %q: give a size of at least 1KiB with a unit (KB, MB, GB, KiB, MiB, GiB), e.g. 10MiB", flag, v)
}

// spreadOptions are the release spread's settings from the flags. The verbs check them before they touch the
// data dir, so a bad value changes nothing.
func (f *nodeFlags) spreadOptions() (spread.Options, error) {
	pacing := strings.EqualFold(strings.TrimSpace(f.uploadLimit), "auto")
	up, err := int64(0), error(nil)
	if !pacing {
		up, err = parseRate("--upload-limit", f.uploadLimit)
	}
	if err != nil {
		return spread.Options{}, err
	}
	down, err := parseRate("--download-limit", f.downloadLimit)
	if err != nil {
		return spread.Options{}, err
	}
	if f.minHolders < 1 {
		return spread.Options{}, fmt.Errorf("--min-holders %d: give at least 1 (2, the default, survives the loss of any one server)", f.minHolders)
	}
	if f.keepReleases < 1 {
		return spread.Options{}, fmt.Errorf("--keep-releases %d: give at least 1 (the default is 5)", f.keepReleases)
	}
	return spread.Options{UploadLimit: up, UploadPacing: pacing, DownloadLimit: down, MinHolders: f.minHolders, Keep: f.keepReleases}, nil
}

// rateUnits are the units a rate limit is written in, per second: bits as tc writes them, bytes as file sizes.
var rateUnits = []struct {
	suffix string
	bytes  float64
}{
	{"gbit", 1e9 / 8}, {"mbit", 1e6 / 8}, {"kbit", 1e3 / 8},
	{"gib", 1 << 30}, {"mib", 1 << 20}, {"kib", 1 << 10},
	{"gb", 1e9}, {"mb", 1e6}, {"kb", 1e3},
}

// parseRate reads a rate limit such as 50mbit (bits per second) or 6MB (bytes per second) and returns bytes per
// second; 0 means no limit.
func parseRate(flag, v string) (int64, error) {
	s := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(v), "/s"))
	if s == "0" || s == "" {
		return 0, nil
	}
	for _, u := range rateUnits {
		num, ok := strings.CutSuffix(s, u.suffix)
		if !ok {
			continue
		}
		x, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
		if err != nil || x <= 0 || math.IsInf(x, 0) {
			break
		}
		if b := x * u.bytes; b >= 1 && b < math.MaxInt64/2 {
			return int64(b), nil
		}
		break
	}
	return 0, fmt.Errorf("%s %q: give a positive rate with a unit, in bits (kbit, mbit, gbit) or bytes (KB, MB, GB, KiB, MiB, GiB) per second, e.g. 50mbit or 6MB; 0 means no limit", flag, v)
}

// runUntilSignal keeps a started server running until SIGINT/SIGTERM (stop, stay a member) or until it has left
// the mesh through `node leave`, then stops it.
func runUntilSignal(m *daemon.Main) error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	select {
	case s := <-sig:
		m.Node.Logger().Info("stopping", "signal", s.String())
	case <-m.Node.Left():
	}
	return m.Close()
}

func (c *cli) initCmd() *cobra.Command {
	var (
		f       nodeFlags
		mesh    string
		joinTTL time.Duration
		exit    bool
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a new mesh with this server as its first node, and run it",
		Long: `Create a new mesh: its certificate authority, this server's identity, an admin API token and a join
token, printed once (an admin can print the join token again with 'node token join list'). The node then keeps
running as this server's agent, unless --exit is given (then start it later with 'node agent').`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := f.daemon(daemon.Init)
			if err != nil {
				return err
			}
			m.MeshName, m.JoinTTL = mesh, joinTTL
			if exit {
				m.Services = daemon.NodeOnly
			}
			if err := m.Run(context.Background()); err != nil {
				return err
			}
			n, res := m.Node, m.InitResult
			if c.json {
				_ = c.print(res, nil)
			} else {
				fmt.Fprintf(c.out, "mesh: %s\nnode: %s\napi: http://%s\nadmin token: %s\njoin token: %s\n\n", res.Mesh, res.Node, res.API, res.AdminToken, res.JoinToken)
				fmt.Fprintf(c.out, "Add servers with:\n  %s join %s --token %s --name NAME --bind IP\n", selfPath(), n.RaftAddr(), res.JoinToken)
				fmt.Fprintf(c.out, "Talk to the mesh with:\n  export SHOAL_ADDR=%s SHOAL_TOKEN=%s\n", res.API, res.AdminToken)
			}
			if exit {
				return m.Close()
			}
			return runUntilSignal(m)
		},
	}
	f.register(cmd, true)
	cmd.Flags().IntVar(&f.voters, "voters", 3, "Raft voters the mesh keeps, 1, 3 or 5 (the rest are non-voters): recorded in the mesh, so whichever node leads keeps it")
	cmd.Flags().StringVar(&mesh, "mesh", "shoal", "the mesh's name")
	cmd.Flags().DurationVar(&joinTTL, "join-ttl", node.DefaultJoinTTL, "how long the printed join token stays valid")
	cmd.Flags().BoolVar(&exit, "exit", false, "initialise and exit instead of running the node")
	return cmd
}

func (c *cli) joinCmd() *cobra.Command {
	var (
		f     nodeFlags
		token string
		exit  bool
	)
	cmd := &cobra.Command{
		Use:   "join ADDR",
		Short: "Join this server to the mesh that the server at ADDR belongs to, and run it",
		Long: `Join the mesh through any of its servers (ADDR is its IP, or IP:PORT of its QUIC port, default 7422).
The join token pins the mesh's CA: the server's certificate is checked against it before the token's secret is
sent. The node then keeps running as this server's agent; later starts need only 'node agent --data-dir DIR'.
Running join again on a joined data dir just starts the node.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := f.daemon(daemon.Join)
			if err != nil {
				return err
			}
			cfg := m.Config
			if token == "" && !node.Joined(cfg.DataDir) {
				return fmt.Errorf("join needs --token (or SHOAL_JOIN_TOKEN): the join token printed by `node init` or `node token join`")
			}
			m.JoinAddr, m.JoinToken = args[0], token
			if exit {
				m.Services = daemon.NodeOnly
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := m.Run(ctx); err != nil {
				return err
			}
			n := m.Node
			fmt.Fprintf(c.errOut, "joined as %s; API at http://%s\n", n.Name(), n.HTTPAddr())
			if exit {
				// Stay until the leader has added this server to Raft, so the join is complete when we exit.
				deadline := time.Now().Add(2 * time.Minute)
				for !n.InRaft() {
					if time.Now().After(deadline) {
						m.Close()
						return fmt.Errorf("joined gossip, but the leader has not added this server to Raft within 2 minutes: check `node members` on the mesh")
					}
					time.Sleep(100 * time.Millisecond)
				}
				fmt.Fprintf(c.errOut, "%s is a member; start it with `%s agent --data-dir %s`\n", n.Name(), selfPath(), cfg.DataDir)
				return m.Close()
			}
			return runUntilSignal(m)
		},
	}
	f.register(cmd, true)
	// --voters is the mesh's, set at init: a joining node takes it from the state. Accepted and ignored, so
	// scripts that passed it keep working.
	cmd.Flags().IntVar(&f.voters, "voters", 0, "")
	_ = cmd.Flags().MarkDeprecated("voters", "the mesh's number of voters is set at 'init' and kept by whichever node leads")
	cmd.Flags().StringVar(&token, "token", os.Getenv("SHOAL_JOIN_TOKEN"), "join token (env SHOAL_JOIN_TOKEN)")
	cmd.Flags().BoolVar(&exit, "exit", false, "exit once this server is a member, instead of running it (then start it with `node agent`)")
	return cmd
}

func (c *cli) agentCmd() *cobra.Command {
	var f nodeFlags
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run this server's node from its data dir (after init or join)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := f.daemon(daemon.Open)
			if err != nil {
				return err
			}
			if err := m.Run(context.Background()); err != nil {
				return err
			}
			return runUntilSignal(m)
		},
	}
	f.register(cmd, false)
	return cmd
}

// selfPath is how to call this binary again (never from PATH: `node` there is usually Node.js).
func selfPath() string {
	p, err := os.Executable()
	if err != nil || strings.Contains(p, "go-build") {
		return "./bin/node"
	}
	return p
}
