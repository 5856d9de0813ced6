package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/raftfsm"
)

// argKinds says what each positional argument of a command names, by command path, so the shell can complete
// them from the mesh. The names are asked of the API at --addr (or SHOAL_ADDR, or the config file) with the token
// the command would use; when that fails, nothing is offered (the shell then falls back to files for none).
var argKinds = map[string][]string{
	"node build": {"app"}, "node builds": {"app"}, "node releases": {"app", "release"},
	"node deploy": {"app", "release"}, "node promote": {"app", "release"}, "node rollback": {"env"},
	"node approve": {"deployment"}, "node deployments": {"env"},
	"node deployment": {"deployment"}, "node deployment cancel": {"deployment"}, "node deployment log": {"deployment", "server"},
	"node pipeline": {"app"}, "node pipeline set": {"app", "env"}, "node leave": {"server"},
	"node app show": {"app"}, "node app update": {"app"}, "node app delete": {"app"},
	"node env show": {"env"}, "node env update": {"env"}, "node env delete": {"env"},
	"node env pin": {"env"}, "node env unpin": {"env"}, "node pin": {"env"}, "node unpin": {"env"},
	"node restart": {"env"}, "node terminate": {"env"}, "node release push": {"app"}, "node release fetch": {"app", "release"},
	"node logs":       {"env"},
	"node notify add": {"app"}, "node notify list": {"app"}, "node forge set": {"app"}, "node forge show": {"app"},
	"node forge rm": {"app"},
}

// flagKinds says what a flag names, for every command that has it.
var flagKinds = map[string]string{"env": "env", "app": "app", "from": "env", "to": "env", "server": "server"}

// addCompletion gives every command in argKinds, and every flag in flagKinds, a completion from the mesh.
func (c *cli) addCompletion(cmd *cobra.Command) {
	if kinds, ok := argKinds[cmd.CommandPath()]; ok && cmd.ValidArgsFunction == nil {
		cmd.ValidArgsFunction = func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) >= len(kinds) {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return c.namesOf(cmd, kinds[len(args)], args), cobra.ShellCompDirectiveNoFileComp
		}
	}
	for flag, kind := range flagKinds {
		if cmd.Flags().Lookup(flag) == nil || (flag == "to" && cmd.Name() == "rollback") {
			continue
		}
		_ = cmd.RegisterFlagCompletionFunc(flag, func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			return c.namesOf(cmd, kind, args), cobra.ShellCompDirectiveNoFileComp
		})
	}
	for _, sub := range cmd.Commands() {
		c.addCompletion(sub)
	}
}

// namesOf lists the names of one kind for completion, each with a short description after a tab. args are the
// arguments typed so far: a release is completed among the releases of the app named first.
func (c *cli) namesOf(cmd *cobra.Command, kind string, args []string) []string {
	addr, token, _ := c.connection(cmd)
	cl := client.New(addr.Value, token.Value)
	cl.RetryNoLeader = 0
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var out []string
	switch kind {
	case "app":
		var apps []raftfsm.App
		if _, err := cl.Get(ctx, "/v1/apps", &apps); err == nil {
			for _, a := range apps {
				out = append(out, a.Name+"\t"+a.Repo)
			}
		}
	case "env":
		var envs []raftfsm.Env
		if _, err := cl.Get(ctx, "/v1/envs", &envs); err == nil {
			for _, e := range envs {
				out = append(out, e.Name+"\tapp "+e.App)
			}
		}
	case "release":
		if len(args) == 0 {
			return nil
		}
		var rels []raftfsm.Release
		if _, err := cl.Get(ctx, "/v1/apps/"+url.PathEscape(args[0])+"/releases", &rels); err == nil {
			slices.SortFunc(rels, func(a, b raftfsm.Release) int { return b.CreatedAt.Compare(a.CreatedAt) })
			for _, r := range rels {
				out = append(out, r.Version+"\t"+r.CreatedAt.Local().Format("2006-01-02 15:04"))
			}
		}
	case "server":
		var ms []struct {
			Name, Status string
		}
		if _, err := cl.Get(ctx, "/v1/members", &ms); err == nil {
			for _, m := range ms {
				out = append(out, m.Name+"\t"+m.Status)
			}
		}
	case "deployment":
		var envs []raftfsm.Env
		if _, err := cl.Get(ctx, "/v1/envs", &envs); err != nil {
			return nil
		}
		for _, e := range envs {
			var deps []raftfsm.Deployment
			if _, err := cl.Get(ctx, "/v1/envs/"+url.PathEscape(e.Name)+"/deployments", &deps); err == nil {
				for _, d := range deps {
					out = append(out, fmt.Sprintf("%s\t%s %s to %s, %s", d.ID, d.Kind, d.Release, d.Env, d.State))
				}
			}
		}
	}
	return out
}

// completionCmd prints a completion script for the shell, registered for the command name --name: the binary is
// called `node`, as Node.js is, so a completion registered for `node` would take over Node.js's. Install it under
// the name you call Shoal by (a symlink such as /usr/local/bin/shoal, or an alias).
func (c *cli) completionCmd(root *cobra.Command) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell [--name shoal]",
		Short: "Print a shell completion script, registered for the name you call Shoal by (default shoal)",
		Long: `Print a shell completion script. It completes commands, flags, and the names of apps, environments,
releases, deployments and servers, which it asks of the mesh (--addr or SHOAL_ADDR, with your token).

The binary is named 'node', like Node.js's, so the script is registered for the name given with --name (default
'shoal') and never for 'node'. Call Shoal by that name, for example with a symlink outside Node.js's way:

  sudo ln -s /opt/shoal/bin/node /usr/local/bin/shoal
  /opt/shoal/bin/node completion bash --name shoal | sudo tee /etc/bash_completion.d/shoal >/dev/null
  /opt/shoal/bin/node completion zsh --name shoal > "${fpath[1]}/_shoal"
  /opt/shoal/bin/node completion fish --name shoal > ~/.config/fish/completions/shoal.fish`,
		ValidArgs: []string{"bash", "zsh", "fish", "powershell"},
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" || name == "node" {
				return fmt.Errorf("--name %q: choose the name you call Shoal by (for example shoal): a completion for 'node' would replace Node.js's", name)
			}
			return genCompletion(root, args[0], name, c.out)
		},
	}
	cmd.Flags().StringVar(&name, "name", "shoal", "the command name the script completes")
	return cmd
}

// genCompletion writes the script for shell, with the root command renamed to name while it is generated.
func genCompletion(root *cobra.Command, shell, name string, w io.Writer) error {
	use := root.Use
	root.Use = name
	defer func() { root.Use = use }()
	switch shell {
	case "bash":
		return root.GenBashCompletionV2(w, true)
	case "zsh":
		return root.GenZshCompletion(w)
	case "fish":
		return root.GenFishCompletion(w, true)
	default:
		return root.GenPowerShellCompletionWithDesc(w)
	}
}
