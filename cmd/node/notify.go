package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shoal-ci/shoal/notify"
	"github.com/shoal-ci/shoal/raftfsm"
)

// readSecret returns the flag's value, or with fromStdin the first line of standard input (so that the secret
// stays out of the shell's history and the process list).
func readSecret(value string, fromStdin bool, what string) (string, error) {
	if !fromStdin {
		return value, nil
	}
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read the %s from standard input: %w", what, err)
	}
	line = strings.TrimSpace(line)
	if line == "" {
		return "", fmt.Errorf("standard input held no %s", what)
	}
	return line, nil
}

func (c *cli) notifyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "notify", Short: "Send an app's build and deployment events to webhooks and Slack",
		Long: `Subscriptions send an app's events to a webhook (JSON, signed with X-Shoal-Signature-256 when it has a
secret) or to a Slack incoming webhook. Events: ` + strings.Join(raftfsm.EventNames, ", ") + `.
The leader delivers them, retries with back-off, and records every attempt: 'node notify log'.`}
	var (
		env, kind, secret string
		events            []string
		slack, stdin      bool
	)
	add := &cobra.Command{
		Use:   "add APP URL",
		Short: "Subscribe URL to APP's events (all, or --events; one environment's with --env)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			sec, err := readSecret(secret, stdin, "secret")
			if err != nil {
				return err
			}
			if slack {
				kind = raftfsm.NotifyKindSlack
			}
			body := map[string]any{"app": args[0], "url": args[1], "kind": kind}
			if env != "" {
				body["env"] = env
			}
			if sec != "" {
				body["secret"] = sec
			}
			if len(events) > 0 {
				body["events"] = events
			}
			var v notify.SubscriptionView
			if _, err := c.api().Post(ctx(), "/v1/subscriptions", body, &v); err != nil {
				return explain(err)
			}
			return c.print(v, func(w *tabwriter.Writer) { subTable(w, []notify.SubscriptionView{v}) })
		},
	}
	fl := add.Flags()
	fl.StringVar(&env, "env", "", "only this environment's deployment and approval events")
	fl.StringSliceVar(&events, "events", nil, "events to send, comma-separated (default: all)")
	fl.StringVar(&kind, "kind", raftfsm.NotifyKindWebhook, "webhook or slack")
	fl.BoolVar(&slack, "slack", false, "URL is a Slack incoming webhook (same as --kind slack)")
	fl.StringVar(&secret, "secret", "", "sign webhook bodies with this secret (HMAC-SHA256)")
	fl.BoolVar(&stdin, "secret-stdin", false, "read the secret from the first line of standard input")

	list := &cobra.Command{
		Use: "list [APP]", Short: "List subscriptions (secrets are never shown)", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/v1/subscriptions"
			if len(args) == 1 {
				path += "?app=" + url.QueryEscape(args[0])
			}
			var out []notify.SubscriptionView
			if _, err := c.api().Get(ctx(), path, &out); err != nil {
				return explain(err)
			}
			return c.print(out, func(w *tabwriter.Writer) { subTable(w, out) })
		},
	}
	rm := &cobra.Command{
		Use: "rm ID", Short: "Delete a subscription (what it still had to deliver is cancelled)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := c.api().Do(ctx(), "DELETE", "/v1/subscriptions/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return explain(err)
			}
			fmt.Fprintf(c.out, "deleted subscription %s\n", args[0])
			return nil
		},
	}
	var (
		app, sub, state string
		limit           int
	)
	logCmd := &cobra.Command{
		Use: "log", Short: "Show the delivery log, newest first: every attempt, its answer and its node", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			q.Set("limit", fmt.Sprint(limit))
			for k, v := range map[string]string{"app": app, "subscription": sub, "state": state} {
				if v != "" {
					q.Set(k, v)
				}
			}
			var out []raftfsm.Delivery
			if _, err := c.api().Get(ctx(), "/v1/deliveries?"+q.Encode(), &out); err != nil {
				return explain(err)
			}
			return c.print(out, func(w *tabwriter.Writer) { deliveryTable(w, out) })
		},
	}
	lf := logCmd.Flags()
	lf.StringVar(&app, "app", "", "only this app's deliveries")
	lf.StringVar(&sub, "subscription", "", "only this subscription's deliveries ('forge' for commit statuses)")
	lf.StringVar(&state, "state", "", "only deliveries in this state: pending, delivered, failed, cancelled")
	lf.IntVar(&limit, "limit", 20, "show at most this many deliveries")
	cmd.AddCommand(add, list, rm, logCmd)
	return cmd
}

func subTable(w *tabwriter.Writer, subs []notify.SubscriptionView) {
	fmt.Fprintln(w, "ID\tAPP\tENV\tKIND\tURL\tEVENTS\tSECRET")
	for _, s := range subs {
		events := "all"
		if len(s.Events) > 0 {
			events = strings.Join(s.Events, ",")
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%v\n", s.ID, s.App, dash(s.Env), s.Kind, s.URL, events, s.SecretSet)
	}
}

func deliveryTable(w *tabwriter.Writer, ds []raftfsm.Delivery) {
	fmt.Fprintln(w, "DELIVERY\tEVENT\tTARGET\tSTATE\tATTEMPT\tWHEN\tNODE\tANSWER")
	for _, d := range ds {
		if len(d.Attempts) == 0 {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t-\t-\t-\t-\n", d.ID, d.Event.Name, d.Target, d.State)
			continue
		}
		for i, a := range d.Attempts {
			id, ev, target, st := d.ID, d.Event.Name, d.Target, d.State
			if i > 0 {
				id, ev, target, st = "", "", "", ""
			}
			answer := fmt.Sprint(a.Status)
			if a.Error != "" {
				answer = a.Error
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s (%d ms)\n", id, ev, target, st, a.N, ago(a.At), a.Node, answer, a.Millis)
		}
	}
}

func (c *cli) forgeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "forge", Short: "Report each build's result as a commit status on GitHub, Gitea or GitLab"}
	var (
		kind, base, repo, token, context, dashboard string
		stdin                                       bool
	)
	set := &cobra.Command{
		Use:   "set APP",
		Short: "Set where APP's builds report their commit status (the token is kept secret)",
		Long: `Each build of APP then reports pending (GitLab: running) when it starts and success or failure when it ends,
as a commit status linking to the build in the dashboard. --repo is owner/name on GitHub and Gitea, and the
project id or path (group/project) on GitLab. The token needs the right to set commit statuses (GitHub:
"Commit statuses: write"; Gitea: write:repository; GitLab: api). Setting a forge again replaces its settings and
keeps the stored token unless a new one is given.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := readSecret(token, stdin, "token")
			if err != nil {
				return err
			}
			body := map[string]any{"kind": kind, "url": base, "repo": repo, "token": tok, "context": context, "dashboard_url": dashboard}
			var v notify.ForgeView
			if _, err := c.api().Do(ctx(), "PUT", "/v1/apps/"+url.PathEscape(args[0])+"/forge", body, &v); err != nil {
				return explain(err)
			}
			return c.print(v, func(w *tabwriter.Writer) { forgeTable(w, v) })
		},
	}
	fl := set.Flags()
	fl.StringVar(&kind, "kind", "github", "github, gitea or gitlab")
	fl.StringVar(&base, "url", "", "the forge's base URL (default https://api.github.com, https://gitlab.com; Gitea needs it)")
	fl.StringVar(&repo, "repo", "", "owner/name (GitHub, Gitea) or project id or path (GitLab)")
	// Not --token: that is the Shoal API token every verb takes.
	fl.StringVar(&token, "forge-token", "", "the forge's API token (or --forge-token-stdin); kept when not given")
	fl.BoolVar(&stdin, "forge-token-stdin", false, "read the forge's token from the first line of standard input")
	fl.StringVar(&context, "context", "", "the status's name on the commit (default shoal)")
	fl.StringVar(&dashboard, "dashboard-url", "", "the dashboard's URL the status links to (default http://<leader>/ui/)")
	show := &cobra.Command{
		Use: "show APP", Short: "Show APP's forge (the token is never shown)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var v notify.ForgeView
			if _, err := c.api().Get(ctx(), "/v1/apps/"+url.PathEscape(args[0])+"/forge", &v); err != nil {
				return explain(err)
			}
			return c.print(v, func(w *tabwriter.Writer) { forgeTable(w, v) })
		},
	}
	rm := &cobra.Command{
		Use: "rm APP", Short: "Stop reporting APP's builds to its forge", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := c.api().Do(ctx(), "DELETE", "/v1/apps/"+url.PathEscape(args[0])+"/forge", nil, nil); err != nil {
				return explain(err)
			}
			fmt.Fprintf(c.out, "app %s no longer reports to a forge\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(set, show, rm)
	return cmd
}

func forgeTable(w *tabwriter.Writer, f notify.ForgeView) {
	fmt.Fprintf(w, "app:\t%s\nforge:\t%s\nurl:\t%s\nrepo:\t%s\ncontext:\t%s\ndashboard:\t%s\ntoken set:\t%v\n",
		f.App, f.Kind, f.URL, f.Repo, f.Context, dash(f.DashboardURL), f.TokenSet)
}
