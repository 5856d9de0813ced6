// Command node is Shoal: every server runs it as its agent, and operators use it to drive the mesh.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shoal-ci/shoal/client"
)

// cli holds the global flags shared by operator verbs.
type cli struct {
	addr    string
	token   string
	json    bool
	out     io.Writer
	errOut  io.Writer
	verbose bool
}

func main() {
	c := &cli{out: os.Stdout, errOut: os.Stderr}
	root := c.root()
	stop := profileCPU()
	err := root.Execute()
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// profileCPU writes a CPU profile of the whole run to $SHOAL_CPUPROFILE_DIR/<pid>.pprof when that variable is set
// (a development aid: the swarm benchmark profiles every node of a mesh this way).
func profileCPU() (stop func()) {
	dir := os.Getenv("SHOAL_CPUPROFILE_DIR")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, strconv.Itoa(os.Getpid())+".pprof"))
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "warning: SHOAL_CPUPROFILE_DIR:", err)
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

func (c *cli) root() *cobra.Command {
	root := &cobra.Command{
		Use:   "node",
		Short: "Shoal: self-hosted CI/CD as a mesh of servers",
		Long: `Shoal links apps to git repositories, builds every check-in into a release, and deploys releases to
environments of servers. Every server runs this same binary.

Start a mesh with 'node init', add servers with 'node join', or try it all on one machine with 'node dev'.
Operator verbs talk to any node's HTTP API: --addr/SHOAL_ADDR and --token/SHOAL_TOKEN, or save them with
'node config set'. Shell completion: 'node completion bash|zsh|fish|powershell --help'.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&c.addr, "addr", defaultAddr, "API address of any node (else env SHOAL_ADDR, else 'node config set addr')")
	pf.StringVar(&c.token, "token", "", "API token (else env SHOAL_TOKEN, else 'node config set token')")
	// Flag > environment > config file > default, resolved once the flags are parsed.
	root.PersistentPreRun = func(cmd *cobra.Command, args []string) {
		if p := cmd.Parent(); p != nil && p.Name() == "config" {
			return // the config verbs read the file themselves, and must work when it is broken
		}
		addr, token, _ := c.connection(cmd)
		c.addr, c.token = addr.Value, token.Value
	}
	pf.BoolVar(&c.json, "json", false, "print JSON instead of tables")
	root.AddCommand(c.initCmd(), c.joinCmd(), c.agentCmd(), c.devCmd(), c.leaveCmd(), c.membersCmd(), c.statusCmd(),
		c.tokenCmd(), c.appCmd(), c.envCmd(), c.releaseCmd(),
		c.buildCmd(), c.buildsCmd(), c.logCmd(), c.logsCmd(), c.releasesCmd(),
		c.deployCmd(), c.deploymentsCmd(), c.deploymentCmd(), c.rollbackCmd(), c.promoteCmd(), c.approveCmd(), c.restartCmd(), c.terminateCmd(), c.pinCmd(true), c.pinCmd(false), c.pipelineCmd(),
		c.configCmd())
	return root
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// api returns a client for the operator verbs. While the mesh has no leader it says so and retries.
func (c *cli) api() *client.Client {
	cl := client.New(c.addr, c.token)
	// Said once per message: the client retries every half second, and one line tells the user all there is.
	var (
		mu   sync.Mutex
		last string
	)
	cl.OnRetry = func(e *client.Error) {
		mu.Lock()
		defer mu.Unlock()
		if e.Message != last {
			last = e.Message
			fmt.Fprintf(c.errOut, "waiting: %s (retrying for up to %s)\n", e.Message, cl.RetryNoLeader)
		}
	}
	return cl
}

// explain turns API errors into messages that say what to do.
func explain(err error) error {
	var e *client.Error
	if !errors.As(err, &e) {
		return err
	}
	switch e.Status {
	case 401:
		return fmt.Errorf("%s", e.Message)
	case 403:
		return fmt.Errorf("%s: use a token with that role (an admin can create one with `node token create`)", e.Message)
	}
	return err
}

// print writes v as JSON with --json, and otherwise calls table.
func (c *cli) print(v any, table func(w *tabwriter.Writer)) error {
	if c.json {
		enc := json.NewEncoder(c.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	w := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	table(w)
	return w.Flush()
}

func ctx() context.Context { return context.Background() }

// parseKV turns ["a=b", "c=d"] into a map.
func parseKV(items []string, what string) (map[string]string, error) {
	if len(items) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, it := range items {
		k, v, ok := strings.Cut(it, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q must look like KEY=VALUE", what, it)
		}
		out[k] = v
	}
	return out, nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
