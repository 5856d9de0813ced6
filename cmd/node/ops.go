package main

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

func (c *cli) leaveCmd() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "leave NAME",
		Short: "Take the node NAME, the one at --addr, out of the mesh for good (it hands off leadership, is removed from Raft, and exits)",
		Long: `Take a server out of the mesh for good: it hands off leadership if it leads, is removed from Raft, and
exits; its certificate stops being accepted. Point --addr (or SHOAL_ADDR) at that server's API and name it, so that
a stale SHOAL_ADDR cannot take out another server: the command refuses when the node at --addr has another name.
It asks before it acts unless --yes is given.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl := c.api()
			var st struct {
				Node string `json:"node"`
			}
			if _, err := cl.Get(ctx(), "/v1/status", &st); err != nil {
				return explain(err)
			}
			if st.Node != args[0] {
				return fmt.Errorf("the node at %s is %q, not %q: point --addr at %s's API to take it out (nothing was changed)", c.addr, st.Node, args[0], args[0])
			}
			if err := c.confirm(yes, fmt.Sprintf("take %s (%s) out of the mesh for good?", st.Node, c.addr)); err != nil {
				return err
			}
			var out map[string]string
			if _, err := cl.Post(ctx(), "/v1/leave", struct{}{}, &out); err != nil {
				return explain(err)
			}
			return c.print(out, func(w *tabwriter.Writer) { fmt.Fprintf(w, "%s left the mesh\n", out["left"]) })
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

func (c *cli) membersCmd() *cobra.Command {
	cmd := c.membersListCmd()
	cmd.AddCommand(&cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a member that cannot leave by itself (lost or no longer trusted): the mesh refuses its certificate at once (admin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out map[string]string
			if _, err := c.api().Post(ctx(), "/v1/members/"+url.PathEscape(args[0])+"/remove", struct{}{}, &out); err != nil {
				return explain(err)
			}
			return c.print(out, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "%s removed: the mesh refuses its certificate; it may join again with a new join token\n", out["removed"])
			})
		},
	})
	return cmd
}

func (c *cli) membersListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "members",
		Short: "List the mesh's servers: gossip status, Raft role, addresses, tags",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ms []node.Member
			if _, err := c.api().Get(ctx(), "/v1/members", &ms); err != nil {
				return explain(err)
			}
			return c.print(ms, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "NAME\tSTATUS\tROLE\tADDR\tAPI\tTAGS")
				for _, m := range ms {
					role := m.Role
					if m.Leader {
						role += " (leader)"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Status, role, m.Addr, m.HTTP, kv(m.Tags))
				}
			})
		},
	}
}

func (c *cli) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the node at --addr and the mesh as it sees them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st node.Status
			if _, err := c.api().Get(ctx(), "/v1/status", &st); err != nil {
				return explain(err)
			}
			return c.print(st, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "node:\t%s (%s)\n", st.Node, st.State)
				fmt.Fprintf(w, "mesh:\t%s\n", st.Mesh)
				fmt.Fprintf(w, "leader:\t%s\n", dash(st.Leader))
				fmt.Fprintf(w, "members:\t%d alive; raft: %d voters, %d non-voters\n", st.Members, st.Voters, st.NonVoters)
				fmt.Fprintf(w, "raft:\tterm %d, commit %d, applied %d\n", st.Term, st.CommitIndex, st.AppliedIndex)
				fmt.Fprintf(w, "version:\t%s\n", st.Version)
			})
		},
	}
}

func (c *cli) tokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage API tokens and join tokens (admin)"}
	list := &cobra.Command{
		Use: "list", Short: "List API tokens", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ts []api.TokenView
			if _, err := c.api().Get(ctx(), "/v1/tokens", &ts); err != nil {
				return explain(err)
			}
			return c.print(ts, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "ID\tNAME\tROLE\tCREATED")
				for _, t := range ts {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Role, t.CreatedAt.Format(time.RFC3339))
				}
			})
		},
	}
	var role string
	create := &cobra.Command{
		Use: "create NAME", Short: "Create an API token (its text is shown once)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var t api.TokenView
			if _, err := c.api().Post(ctx(), "/v1/tokens", map[string]string{"name": args[0], "role": role}, &t); err != nil {
				return explain(err)
			}
			return c.print(t, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "token: %s\nid: %s\nrole: %s\n", t.Token, t.ID, t.Role)
			})
		},
	}
	create.Flags().StringVar(&role, "role", raftfsm.RoleReader, "role: admin, deployer or reader")
	revoke := &cobra.Command{
		Use: "revoke ID", Short: "Revoke an API token", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := c.api().Do(ctx(), "DELETE", "/v1/tokens/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return explain(err)
			}
			fmt.Fprintf(c.out, "revoked %s\n", args[0])
			return nil
		},
	}
	var ttl time.Duration
	join := &cobra.Command{
		Use: "join [list|revoke ID]", Short: "Create a join token (or list them, or revoke one)", Args: cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 0:
				var t api.JoinTokenView
				if _, err := c.api().Post(ctx(), "/v1/tokens/join", map[string]string{"ttl": ttl.String()}, &t); err != nil {
					return explain(err)
				}
				return c.print(t, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "join token: %s\nexpires: %s\n", t.Token, t.ExpiresAt.Format(time.RFC3339))
				})
			case args[0] == "list":
				var ts []api.JoinTokenView
				if _, err := c.api().Get(ctx(), "/v1/tokens/join", &ts); err != nil {
					return explain(err)
				}
				return c.print(ts, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "ID\tEXPIRES\tTOKEN")
					for _, t := range ts {
						exp := t.ExpiresAt.Format(time.RFC3339)
						if t.Expired {
							exp += " (expired)"
						}
						fmt.Fprintf(w, "%s\t%s\t%s\n", t.ID, exp, t.Token)
					}
				})
			case args[0] == "revoke" && len(args) == 2:
				if _, err := c.api().Do(ctx(), "DELETE", "/v1/tokens/join/"+url.PathEscape(args[1]), nil, nil); err != nil {
					return explain(err)
				}
				fmt.Fprintf(c.out, "revoked join token %s\n", args[1])
				return nil
			}
			return fmt.Errorf("usage: node token join [list | revoke ID]")
		},
	}
	join.Flags().DurationVar(&ttl, "ttl", node.DefaultJoinTTL, "how long the new join token stays valid")
	cmd.AddCommand(list, create, revoke, join)
	return cmd
}

func (c *cli) appCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "app", Short: "Manage apps: a git repository and branch that build into releases"}
	var appPage pageFlags
	list := &cobra.Command{
		Use: "list", Short: "List apps, by name", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var apps []api.AppView
			if err := c.getPage("/v1/apps", appPage, &apps); err != nil {
				return err
			}
			return c.print(apps, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "NAME\tREPO\tBRANCH\tAUTO BUILD\tBUILDS\tRELEASES")
				for _, a := range apps {
					fmt.Fprintf(w, "%s\t%s\t%s\t%v\t%d\t%d\n", a.Name, dash(a.Repo), a.Branch, a.AutoBuild, a.NextBuild-1, a.NextRelease-1)
				}
			})
		},
	}
	appPage.register(list, 0, "apps")
	show := &cobra.Command{
		Use: "show NAME", Short: "Show an app", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var a api.AppView
			if _, err := c.api().Get(ctx(), "/v1/apps/"+url.PathEscape(args[0]), &a); err != nil {
				return explain(err)
			}
			return c.print(a, func(w *tabwriter.Writer) { c.appTable(w, a) })
		},
	}
	var af appFlags
	create := &cobra.Command{
		Use: "create NAME", Short: "Create an app", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := af.body(cmd)
			if err != nil {
				return err
			}
			body["name"] = args[0]
			var a api.AppView
			if _, err := c.api().Post(ctx(), "/v1/apps", body, &a); err != nil {
				return explain(err)
			}
			return c.print(a, func(w *tabwriter.Writer) { c.appTable(w, a) })
		},
	}
	af.register(create)
	var uf appFlags
	update := &cobra.Command{
		Use: "update NAME", Short: "Change an app's settings (only the flags given)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := uf.body(cmd)
			if err != nil {
				return err
			}
			var a api.AppView
			if _, err := c.api().Do(ctx(), "PUT", "/v1/apps/"+url.PathEscape(args[0]), body, &a); err != nil {
				return explain(err)
			}
			return c.print(a, func(w *tabwriter.Writer) { c.appTable(w, a) })
		},
	}
	uf.register(update)
	var yesApp bool
	del := &cobra.Command{
		Use: "delete NAME", Short: "Delete an app (its environments first); asks unless --yes", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.confirm(yesApp, fmt.Sprintf("delete app %s with its builds and releases?", args[0])); err != nil {
				return err
			}
			if _, err := c.api().Do(ctx(), "DELETE", "/v1/apps/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return explain(err)
			}
			fmt.Fprintf(c.out, "deleted app %s\n", args[0])
			return nil
		},
	}
	del.Flags().BoolVarP(&yesApp, "yes", "y", false, "do not ask for confirmation")
	cmd.AddCommand(list, show, create, update, del)
	return cmd
}

func (c *cli) appTable(w *tabwriter.Writer, a api.AppView) {
	fmt.Fprintf(w, "name:\t%s\nrepo:\t%s\nbranch:\t%s\nmanifest:\t%s\nauto build:\t%v\nwebhook secret:\t%v\n",
		a.Name, dash(a.Repo), a.Branch, dash(a.Manifest), a.AutoBuild, a.WebhookSecretSet)
	if a.PollInterval > 0 {
		fmt.Fprintf(w, "poll every:\t%s\n", time.Duration(a.PollInterval))
	}
	if a.PullRequests {
		fmt.Fprintf(w, "pull requests:\tbuilt\n")
	}
	if len(a.BuildCapabilities) > 0 {
		fmt.Fprintf(w, "build capabilities:\t%s\n", strings.Join(a.BuildCapabilities, ", "))
	}
	for _, k := range sortedKeys(a.BuildVars) {
		v := a.BuildVars[k]
		val := v.Value
		if v.Secret {
			val = "(secret)"
		}
		fmt.Fprintf(w, "var %s:\t%s\n", k, val)
	}
}

// appFlags are the settable fields of an app; only flags the user gave are sent.
type appFlags struct {
	repo, branch, manifest, secret string
	autoBuild, pullRequests        bool
	poll                           time.Duration
	vars, secretVars               []string
	caps                           []string
}

func (f *appFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.repo, "repo", "", "git repository URL or path (anything `git` fetches)")
	fl.StringVar(&f.branch, "branch", "", "branch to build (default main)")
	fl.StringVar(&f.manifest, "manifest", "", "manifest path in the repository (default shoal.yml, then distelli-manifest.yml)")
	fl.StringVar(&f.secret, "webhook-secret", "", "secret that push webhooks are signed with")
	fl.BoolVar(&f.autoBuild, "auto-build", false, "build every push to the branch")
	fl.BoolVar(&f.pullRequests, "pull-requests", false, "build the head of each pull/merge request a webhook announces (releases marked as from a pull request)")
	fl.DurationVar(&f.poll, "poll", 0, "poll the repository with git ls-remote at this interval (0: off)")
	fl.StringArrayVar(&f.vars, "var", nil, "build variable KEY=VALUE (repeatable)")
	fl.StringArrayVar(&f.secretVars, "secret-var", nil, "secret build variable KEY=VALUE, redacted from logs (repeatable)")
	fl.StringSliceVar(&f.caps, "build-capability", nil,
		"capability a build server must offer (its --tag build=...) to build this app (repeatable or comma-separated; \"\" clears)")
}

func (f *appFlags) body(cmd *cobra.Command) (map[string]any, error) {
	b := map[string]any{}
	ch := cmd.Flags().Changed
	if ch("repo") {
		b["repo"] = f.repo
	}
	if ch("branch") {
		b["branch"] = f.branch
	}
	if ch("manifest") {
		b["manifest"] = f.manifest
	}
	if ch("webhook-secret") {
		b["webhook_secret"] = f.secret
	}
	if ch("auto-build") {
		b["auto_build"] = f.autoBuild
	}
	if ch("pull-requests") {
		b["pull_requests"] = f.pullRequests
	}
	if ch("poll") {
		b["poll_interval"] = f.poll.String()
	}
	if ch("build-capability") {
		caps := []string{}
		for _, c := range f.caps {
			if c = strings.TrimSpace(c); c != "" {
				caps = append(caps, c)
			}
		}
		b["build_capabilities"] = caps
	}
	if ch("var") || ch("secret-var") {
		vars, err := varsOf(f.vars, f.secretVars)
		if err != nil {
			return nil, err
		}
		b["build_vars"] = vars
	}
	return b, nil
}

func varsOf(plain, secret []string) (map[string]raftfsm.Var, error) {
	out := map[string]raftfsm.Var{}
	p, err := parseKV(plain, "--var")
	if err != nil {
		return nil, err
	}
	s, err := parseKV(secret, "--secret-var")
	if err != nil {
		return nil, err
	}
	for k, v := range p {
		out[k] = raftfsm.Var{Value: v}
	}
	for k, v := range s {
		out[k] = raftfsm.Var{Value: v, Secret: true}
	}
	return out, nil
}

func (c *cli) envCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "env", Short: "Manage environments: the servers of an app, by name and tag"}
	var appFilter string
	var envPage pageFlags
	list := &cobra.Command{
		Use: "list", Short: "List environments, by name", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := "/v1/envs"
			if appFilter != "" {
				path += "?app=" + url.QueryEscape(appFilter)
			}
			var envs []raftfsm.Env
			if err := c.getPage(path, envPage, &envs); err != nil {
				return err
			}
			return c.print(envs, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "NAME\tAPP\tSERVERS\tTAGS\tDESIRED\tSTABLE\tAUTO DEPLOY\tPINNED")
				for _, e := range envs {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%v\t%v\n", e.Name, e.App, dash(strings.Join(e.Servers, ",")), kv(e.Tags),
						dash(e.Desired), dash(e.Stable), e.AutoDeploy, e.Pinned)
				}
			})
		},
	}
	list.Flags().StringVar(&appFilter, "app", "", "only this app's environments")
	envPage.register(list, 0, "environments")
	show := &cobra.Command{
		Use: "show NAME", Short: "Show an environment", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var e envView
			if _, err := c.api().Get(ctx(), "/v1/envs/"+url.PathEscape(args[0]), &e); err != nil {
				return explain(err)
			}
			return c.print(e, func(w *tabwriter.Writer) {
				envTable(w, e.Env)
				runtimeTable(w, e.Runtime)
			})
		},
	}
	var ef envFlags
	create := &cobra.Command{
		Use: "create NAME --app APP", Short: "Create an environment", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := ef.body(cmd)
			if err != nil {
				return err
			}
			body["name"] = args[0]
			var e raftfsm.Env
			if _, err := c.api().Post(ctx(), "/v1/envs", body, &e); err != nil {
				return explain(err)
			}
			return c.print(e, func(w *tabwriter.Writer) { envTable(w, e) })
		},
	}
	ef.register(create)
	var uf envFlags
	update := &cobra.Command{
		Use: "update NAME", Short: "Change an environment's settings (only the flags given)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := uf.body(cmd)
			if err != nil {
				return err
			}
			var e raftfsm.Env
			if _, err := c.api().Do(ctx(), "PUT", "/v1/envs/"+url.PathEscape(args[0]), body, &e); err != nil {
				return explain(err)
			}
			return c.print(e, func(w *tabwriter.Writer) { envTable(w, e) })
		},
	}
	uf.register(update)
	var yesEnv bool
	del := &cobra.Command{
		Use: "delete NAME", Short: "Delete an environment; asks unless --yes", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.confirm(yesEnv, fmt.Sprintf("delete environment %s?", args[0])); err != nil {
				return err
			}
			if _, err := c.api().Do(ctx(), "DELETE", "/v1/envs/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return explain(err)
			}
			fmt.Fprintf(c.out, "deleted environment %s\n", args[0])
			return nil
		},
	}
	del.Flags().BoolVarP(&yesEnv, "yes", "y", false, "do not ask for confirmation")
	cmd.AddCommand(list, show, create, update, del)
	cmd.AddCommand(c.envPinCmds()...)
	return cmd
}

func envTable(w *tabwriter.Writer, e raftfsm.Env) {
	fmt.Fprintf(w, "name:\t%s\napp:\t%s\nservers:\t%s\ntags:\t%s\n", e.Name, e.App, dash(strings.Join(e.Servers, ", ")), kv(e.Tags))
	st := e.Strategy
	strategy := st.Kind
	if st.Kind == "rolling" {
		if st.BatchPercent > 0 {
			strategy += fmt.Sprintf(", %d%% per batch", st.BatchPercent)
		} else {
			strategy += fmt.Sprintf(", %d per batch", st.BatchSize)
		}
	}
	if st.AutoRollback {
		strategy += ", auto rollback"
	}
	fmt.Fprintf(w, "strategy:\t%s\nauto deploy:\t%v\ndesired:\t%s\nstable:\t%s\n", strategy, e.AutoDeploy, dash(e.Desired), dash(e.Stable))
	deadline := "10m0s (default)"
	if e.ProgressDeadline > 0 {
		deadline = time.Duration(e.ProgressDeadline).String()
	}
	fmt.Fprintf(w, "progress deadline:\t%s\n", deadline)
	if e.MinHealthyTime > 0 {
		fmt.Fprintf(w, "min healthy time:\t%s\n", time.Duration(e.MinHealthyTime))
	}
	if e.Pinned {
		fmt.Fprintf(w, "pinned:\tyes (%s): auto deploy is suspended until `node unpin %s`\n", e.PinReason, e.Name)
	}
	if e.AllowPullRequests {
		fmt.Fprintf(w, "pull requests:\tallowed (by hand)\n")
	}
	for _, k := range sortedKeys(e.Vars) {
		v := e.Vars[k]
		val := v.Value
		if v.Secret {
			val = "(secret)"
		}
		fmt.Fprintf(w, "var %s:\t%s\n", k, val)
	}
}

type envFlags struct {
	app                  string
	servers, tags        []string
	vars, secretVars     []string
	autoDeploy, rollback bool
	allowPRs             bool
	strategy             string
	batch                string
	minHealthy, abort    int
	progressDeadline     time.Duration
	minHealthyTime       time.Duration
}

func (f *envFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.app, "app", "", "the app this environment belongs to")
	fl.StringArrayVar(&f.servers, "server", nil, "a server by node name (repeatable)")
	fl.StringArrayVar(&f.tags, "tag", nil, "select servers with tag KEY=VALUE (repeatable; all must match)")
	fl.StringArrayVar(&f.vars, "var", nil, "variable KEY=VALUE for hooks (repeatable)")
	fl.StringArrayVar(&f.secretVars, "secret-var", nil, "secret variable KEY=VALUE, redacted from logs (repeatable)")
	fl.BoolVar(&f.autoDeploy, "auto-deploy", false, "deploy new releases of the app's branch automatically")
	fl.BoolVar(&f.allowPRs, "allow-pull-requests", false, "let releases built from pull requests be deployed here (by hand only)")
	fl.StringVar(&f.strategy, "strategy", "", "all (at once) or rolling")
	fl.StringVar(&f.batch, "batch", "", "rolling batch: a number of servers, or a percent like 25%")
	fl.IntVar(&f.minHealthy, "min-healthy", 0, "servers that must stay healthy during a rolling deploy")
	fl.IntVar(&f.abort, "abort-after", 0, "failed servers that abort a deployment (0: the first)")
	fl.BoolVar(&f.rollback, "auto-rollback", false, "on a failed deployment, go back to the last stable release and pin")
	fl.DurationVar(&f.progressDeadline, "progress-deadline", 0, "fail a server of a deployment that makes no progress for this long (0: the default, 10m)")
	fl.DurationVar(&f.minHealthyTime, "min-healthy-time", 0,
		"without a health check, how long Exec processes must stay up to count as healthy (0: the default, 10s)")
}

func (f *envFlags) body(cmd *cobra.Command) (map[string]any, error) {
	b := map[string]any{}
	ch := cmd.Flags().Changed
	if ch("app") {
		b["app"] = f.app
	}
	if ch("server") {
		b["servers"] = f.servers
	}
	if ch("allow-pull-requests") {
		b["allow_pull_requests"] = f.allowPRs
	}
	if ch("tag") {
		tags, err := parseKV(f.tags, "--tag")
		if err != nil {
			return nil, err
		}
		b["tags"] = tags
	}
	if ch("var") || ch("secret-var") {
		vars, err := varsOf(f.vars, f.secretVars)
		if err != nil {
			return nil, err
		}
		b["vars"] = vars
	}
	if ch("auto-deploy") {
		b["auto_deploy"] = f.autoDeploy
	}
	if ch("progress-deadline") {
		if f.progressDeadline < 0 || (f.progressDeadline > 0 && f.progressDeadline < time.Second) {
			return nil, fmt.Errorf("--progress-deadline %s: give at least 1s, or 0 for the default (10m)", f.progressDeadline)
		}
		b["progress_deadline"] = f.progressDeadline.String()
	}
	if ch("min-healthy-time") {
		b["min_healthy_time"] = f.minHealthyTime.String()
	}
	if ch("strategy") || ch("batch") || ch("min-healthy") || ch("abort-after") || ch("auto-rollback") {
		st := raftfsm.Strategy{Kind: f.strategy, MinHealthy: f.minHealthy, AbortAfter: f.abort, AutoRollback: f.rollback}
		if f.batch != "" {
			var err error
			if st.BatchSize, st.BatchPercent, err = parseBatch(f.batch); err != nil {
				return nil, err
			}
			if st.Kind == "" {
				st.Kind = "rolling"
			}
		}
		b["strategy"] = st
	}
	return b, nil
}

func kv(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// parseBatch reads --batch: a number of servers ("3") or a percent of them ("25%").
func parseBatch(v string) (size, percent int, err error) {
	bad := fmt.Errorf("--batch %q: use a number of servers like 3, or a percent like 25%%", v)
	var n int
	if p, ok := strings.CutSuffix(strings.TrimSpace(v), "%"); ok {
		if _, err := fmt.Sscanf(p, "%d", &n); err != nil || n <= 0 || n > 100 || fmt.Sprint(n) != p {
			return 0, 0, bad
		}
		return 0, n, nil
	}
	if _, err := fmt.Sscanf(v, "%d", &n); err != nil || n <= 0 || fmt.Sprint(n) != strings.TrimSpace(v) {
		return 0, 0, bad
	}
	return n, 0, nil
}
