package main

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-ci/shoal/deployer"
	"github.com/shoal-ci/shoal/raftfsm"
)

// deployFlags are the flags shared by the verbs that start or follow a deployment.
type deployFlags struct {
	wait    bool
	timeout time.Duration
}

func (f *deployFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.wait, "wait", false, "follow the deployment, server by server, to its final state (a rollback included), and exit non-zero unless it succeeds")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 0, "with --wait: stop following after this long and exit non-zero (the deployment goes on); 0 waits for the end")
	cmd.PreRunE = func(*cobra.Command, []string) error { return f.check() }
}

// check refuses --timeout without --wait, before anything is started.
func (f *deployFlags) check() error {
	if f.timeout < 0 {
		return fmt.Errorf("--timeout %s is negative: give a duration like 10m, or 0 to wait for the end", f.timeout)
	}
	if f.timeout > 0 && !f.wait {
		return errors.New("--timeout goes with --wait: add --wait to follow the deployment for that long")
	}
	return nil
}

// started prints what a create request answered and follows it with --wait.
func (c *cli) started(res deployer.CreateResult, f deployFlags) error {
	if res.Noop {
		if c.json {
			return c.print(res, nil)
		}
		fmt.Fprintln(c.out, res.Message)
		return nil
	}
	d := res.Deployment
	if d == nil {
		return errors.New("the API answered without a deployment")
	}
	if !f.wait {
		return c.print(d, func(w *tabwriter.Writer) { deploymentTable(w, *d) })
	}
	if !c.json {
		fmt.Fprintf(c.out, "deployment %s: %s %s to %s, %s\n", d.ID, d.Kind, dash(d.Release), d.Env, batchesText(*d))
	}
	return c.waitDeployment(d.ID, f.timeout)
}

func batchesText(d raftfsm.Deployment) string {
	n := 0
	for _, b := range d.Batches {
		n += len(b)
	}
	if len(d.Batches) == 1 {
		return plural(n, "server", "servers") + " at once"
	}
	return plural(n, "server", "servers") + " in " + plural(len(d.Batches), "batch", "batches")
}

func (c *cli) deployCmd() *cobra.Command {
	var (
		f            deployFlags
		env          string
		force        bool
		strategy     string
		batch        string
		batchSize    int
		batchPercent int
	)
	cmd := &cobra.Command{
		Use:   "deploy APP VERSION --env ENV",
		Short: "Deploy a release of an app to an environment",
		Long: `Deploy release VERSION of APP to environment ENV, with the environment's strategy (all at once, or
rolling by batch) unless --strategy says otherwise. The leader moves the deployment batch by batch: a batch starts
once every server of the one before reports healthy. Deploying the environment's current release does nothing
unless --force (which installs it again and restarts it). --wait follows every server's progress to the final
state (through the rollback, when the deployment rolls back); --timeout bounds how long it follows.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if env == "" {
				return errors.New("deploy needs --env ENV: the environment to deploy to (`node env list --app " + args[0] + "`)")
			}
			var e raftfsm.Env
			if _, err := c.api().Get(ctx(), "/v1/envs/"+url.PathEscape(env), &e); err != nil {
				return explain(err)
			}
			if e.App != args[0] {
				return fmt.Errorf("environment %s belongs to app %s, not %s", env, e.App, args[0])
			}
			req := deployer.CreateRequest{Release: args[1], Force: force}
			if batch != "" {
				var err error
				if batchSize, batchPercent, err = parseBatch(batch); err != nil {
					return err
				}
			}
			if strategy != "" || batchSize > 0 || batchPercent > 0 {
				st := e.Strategy
				if strategy != "" {
					st.Kind = strategy
				}
				if batchSize > 0 || batchPercent > 0 {
					st.Kind, st.BatchSize, st.BatchPercent = "rolling", batchSize, batchPercent
				}
				req.Strategy = &st
			}
			var res deployer.CreateResult
			if _, err := c.api().Post(ctx(), "/v1/envs/"+url.PathEscape(env)+"/deployments", req, &res); err != nil {
				return explain(err)
			}
			return c.started(res, f)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&env, "env", "", "the environment to deploy to (required)")
	cmd.Flags().BoolVar(&force, "force", false, "deploy even if VERSION is already the environment's release")
	cmd.Flags().StringVar(&strategy, "strategy", "", "all or rolling, for this deployment only")
	cmd.Flags().StringVar(&batch, "batch", "", "rolling batch for this deployment only: a number of servers, or a percent like 25% (as env create's --batch)")
	// The spellings of earlier versions, kept working so scripts do not break.
	cmd.Flags().IntVar(&batchSize, "batch-size", 0, "servers per rolling batch")
	cmd.Flags().IntVar(&batchPercent, "batch-percent", 0, "percent of the servers per rolling batch")
	_ = cmd.Flags().MarkDeprecated("batch-size", "use --batch N")
	_ = cmd.Flags().MarkDeprecated("batch-percent", "use --batch P%")
	return cmd
}

// opCmd is `node restart ENV` and `node terminate ENV`.
func (c *cli) opCmd(kind, short, long string) *cobra.Command {
	var (
		f   deployFlags
		yes bool
	)
	cmd := &cobra.Command{
		Use: kind + " ENV", Short: short, Long: long, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if kind == raftfsm.DeployKindTerminate {
				if err := c.confirm(yes, fmt.Sprintf("stop the app of environment %s on all its servers?", args[0])); err != nil {
					return err
				}
			}
			var res deployer.CreateResult
			if _, err := c.api().Post(ctx(), "/v1/envs/"+url.PathEscape(args[0])+"/deployments", deployer.CreateRequest{Kind: kind}, &res); err != nil {
				return explain(err)
			}
			return c.started(res, f)
		},
	}
	f.register(cmd)
	if kind == raftfsm.DeployKindTerminate {
		cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	}
	return cmd
}

func (c *cli) restartCmd() *cobra.Command {
	return c.opCmd(raftfsm.DeployKindRestart, "Restart an environment's app on its servers (PreRestart, stop, start, PostRestart)",
		`Restart the running release on every server of ENV, batch by batch as the environment's strategy says:
PreRestart, stop the Exec process, PreStart, Exec or Start, PostStart, PostRestart, then the health check.`)
}

func (c *cli) terminateCmd() *cobra.Command {
	return c.opCmd(raftfsm.DeployKindTerminate, "Stop an environment's app on its servers (PreTerminate, Terminate, PostTerminate)",
		`Stop the app on every server of ENV: PreTerminate, Terminate, stop the Exec process, PostTerminate. The
release stays installed and the environment stays stopped (also on servers that restart or join) until the next
deploy or restart.`)
}

func (c *cli) rollbackCmd() *cobra.Command {
	var (
		f  deployFlags
		to string
	)
	cmd := &cobra.Command{
		Use:   "rollback ENV [--to VERSION]",
		Short: "Take an environment back to an earlier release and pin it",
		Long: `Deploy an earlier release to ENV and pin the environment, so auto deploy does not undo the rollback
(unpin it with 'node unpin ENV'). Without --to: a deployment still running is cancelled and the environment goes
back to its release; after one that failed part way, the servers it reached go back; otherwise the environment
goes back to the release it ran before its current one.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res deployer.CreateResult
			if _, err := c.api().Post(ctx(), "/v1/envs/"+url.PathEscape(args[0])+"/rollback", deployer.RollbackRequest{To: to}, &res); err != nil {
				return explain(err)
			}
			return c.started(res, f)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&to, "to", "", "the release to go back to (default: the one before)")
	return cmd
}

func (c *cli) promoteCmd() *cobra.Command {
	var (
		f        deployFlags
		from, to string
	)
	cmd := &cobra.Command{
		Use:   "promote APP VERSION --from ENV [--to ENV]",
		Short: "Deploy a release that runs in one environment to the next one of the app's pipeline",
		Long: `Promote release VERSION, which environment --from runs, to the next stage of APP's pipeline (or to
--to). A promotion by hand needs no approval. Pipelines promote by themselves once every server of a stage is
healthy on a release; a stage marked for approval waits for 'node approve DEPLOYMENT'.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if from == "" {
				return errors.New("promote needs --from ENV: the environment the release runs in")
			}
			var res deployer.CreateResult
			req := deployer.PromoteRequest{Release: args[1], From: from, To: to}
			if _, err := c.api().Post(ctx(), "/v1/apps/"+url.PathEscape(args[0])+"/promote", req, &res); err != nil {
				return explain(err)
			}
			return c.started(res, f)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&from, "from", "", "the environment the release runs in (required)")
	cmd.Flags().StringVar(&to, "to", "", "the environment to promote to (default: the next pipeline stage)")
	return cmd
}

func (c *cli) approveCmd() *cobra.Command {
	var f deployFlags
	cmd := &cobra.Command{
		Use:   "approve DEPLOYMENT",
		Short: "Approve a deployment that waits for approval (a pipeline stage that asks for one)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var d raftfsm.Deployment
			if _, err := c.api().Post(ctx(), "/v1/deployments/"+url.PathEscape(args[0])+"/approve", struct{}{}, &d); err != nil {
				return explain(err)
			}
			return c.started(deployer.CreateResult{Deployment: &d}, f)
		},
	}
	f.register(cmd)
	return cmd
}

func (c *cli) deploymentsCmd() *cobra.Command {
	var page pageFlags
	cmd := &cobra.Command{
		Use:   "deployments ENV",
		Short: "List an environment's deployments, newest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ds []raftfsm.Deployment
			if err := c.getPage("/v1/envs/"+url.PathEscape(args[0])+"/deployments", page, &ds); err != nil {
				return err
			}
			return c.print(ds, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "ID\tKIND\tRELEASE\tSTATE\tBATCH\tSERVERS\tBY\tCREATED\tTOOK")
				for _, d := range ds {
					healthy, total := counts(d)
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d/%d healthy\t%s\t%s\t%s\n", d.ID, d.Kind, dash(d.Release), d.State,
						batchText(d), healthy, total, dash(d.By), d.CreatedAt.Local().Format("2006-01-02 15:04:05"), deployTook(d))
				}
			})
		},
	}
	page.register(cmd, 20, "deployments")
	return cmd
}

func (c *cli) deploymentCmd() *cobra.Command {
	var f deployFlags
	cmd := &cobra.Command{
		Use:   "deployment ID",
		Short: "Show a deployment: its batches and every server's state; cancel it; read a server's log of it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.wait {
				return c.waitDeployment(args[0], f.timeout)
			}
			var d raftfsm.Deployment
			if _, err := c.api().Get(ctx(), "/v1/deployments/"+url.PathEscape(args[0]), &d); err != nil {
				return explain(err)
			}
			return c.print(d, func(w *tabwriter.Writer) { deploymentTable(w, d) })
		},
	}
	f.register(cmd)
	cancel := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a deployment: every server's work in it stops at once, and the servers return to the environment's stable release",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var d raftfsm.Deployment
			if _, err := c.api().Post(ctx(), "/v1/deployments/"+url.PathEscape(args[0])+"/cancel", struct{}{}, &d); err != nil {
				return explain(err)
			}
			return c.print(d, func(w *tabwriter.Writer) { deploymentTable(w, d) })
		},
	}
	log := &cobra.Command{
		Use:   "log ID NODE",
		Short: "Print a server's log of a deployment: the agent's notes and every hook's output",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var lr deployer.LogResponse
			path := "/v1/deployments/" + url.PathEscape(args[0]) + "/nodes/" + url.PathEscape(args[1]) + "/log"
			if _, err := c.api().Get(ctx(), path, &lr); err != nil {
				return explain(err)
			}
			if c.json {
				return c.print(lr, nil)
			}
			if lr.Truncated {
				fmt.Fprintln(c.errOut, "(the log is long: its end follows)")
			}
			if lr.Log == "" {
				fmt.Fprintf(c.errOut, "%s has no log of deployment %s: it did no work in it\n", lr.Node, lr.Deployment)
			}
			_, err := fmt.Fprint(c.out, lr.Log)
			return err
		},
	}
	cmd.AddCommand(cancel, log)
	return cmd
}

// pinCmd is `node pin ENV` or `node unpin ENV`; envPinCmds gives them for `node env pin|unpin`.
func (c *cli) pinCmd(pin bool) *cobra.Command {
	var reason string
	use, short := "unpin ENV", "Unpin an environment: auto deploy and promotions reach it again"
	if pin {
		use, short = "pin ENV", "Pin an environment: auto deploy and promotions leave it alone (deploys by hand still work)"
	}
	cmd := &cobra.Command{
		Use: use, Short: short, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/v1/envs/" + url.PathEscape(args[0]) + "/unpin"
			var body any = struct{}{}
			if pin {
				path = "/v1/envs/" + url.PathEscape(args[0]) + "/pin"
				body = deployer.PinRequest{Reason: reason}
			}
			var e raftfsm.Env
			if _, err := c.api().Post(ctx(), path, body, &e); err != nil {
				return explain(err)
			}
			return c.print(e, func(w *tabwriter.Writer) {
				if e.Pinned {
					fmt.Fprintf(w, "%s is pinned (%s): auto deploy and promotions leave it alone until `node unpin %s`\n", e.Name, e.PinReason, e.Name)
				} else {
					fmt.Fprintf(w, "%s is unpinned: auto deploy and promotions reach it again\n", e.Name)
				}
			})
		},
	}
	if pin {
		cmd.Flags().StringVar(&reason, "reason", "", "why, shown with the environment")
	}
	return cmd
}

// envPinCmds are `pin` and `unpin` for the `node env` command.
func (c *cli) envPinCmds() []*cobra.Command { return []*cobra.Command{c.pinCmd(true), c.pinCmd(false)} }

func (c *cli) pipelineCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pipeline APP",
		Short: "Show an app's pipeline (its environments in promotion order); 'set' changes it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var p raftfsm.Pipeline
			if _, err := c.api().Get(ctx(), "/v1/apps/"+url.PathEscape(args[0])+"/pipeline", &p); err != nil {
				return explain(err)
			}
			return c.print(p, func(w *tabwriter.Writer) { pipelineTable(w, p) })
		},
	}
	set := &cobra.Command{
		Use:   "set APP ENV[:approval]...",
		Short: "Set an app's pipeline: environments in promotion order; ENV:approval waits for 'node approve'",
		Long: `Chain APP's environments: a release that every server of one stage runs healthy is promoted to the next,
at once, or, for a stage written ENV:approval, as a deployment that waits for 'node approve'. The first stage is
fed by deploys and auto deploy. With no environment the pipeline is removed.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var stages []raftfsm.PipelineStage
			for _, a := range args[1:] {
				env, mode, _ := strings.Cut(a, ":")
				if mode != "" && mode != "approval" {
					return fmt.Errorf("stage %q: write ENV or ENV:approval", a)
				}
				stages = append(stages, raftfsm.PipelineStage{Env: env, Approval: mode == "approval"})
			}
			var p raftfsm.Pipeline
			if _, err := c.api().Do(ctx(), "PUT", "/v1/apps/"+url.PathEscape(args[0])+"/pipeline", deployer.PipelineRequest{Stages: stages}, &p); err != nil {
				return explain(err)
			}
			return c.print(p, func(w *tabwriter.Writer) { pipelineTable(w, p) })
		},
	}
	cmd.AddCommand(set)
	return cmd
}

func pipelineTable(w *tabwriter.Writer, p raftfsm.Pipeline) {
	if len(p.Stages) == 0 {
		fmt.Fprintf(w, "%s has no pipeline: set one with `node pipeline set %s dev staging prod:approval`\n", p.App, p.App)
		return
	}
	var parts []string
	for _, s := range p.Stages {
		if s.Approval {
			parts = append(parts, s.Env+" (approval)")
		} else {
			parts = append(parts, s.Env)
		}
	}
	fmt.Fprintf(w, "%s:\t%s\n", p.App, strings.Join(parts, " → "))
}

// counts returns the servers healthy in a deployment and the servers in it.
func counts(d raftfsm.Deployment) (healthy, total int) {
	for _, b := range d.Batches {
		for _, name := range b {
			total++
			if st := d.Nodes[name]; st != nil && st.State == raftfsm.NodeHealthy {
				healthy++
			}
		}
	}
	return healthy, total
}

func batchText(d raftfsm.Deployment) string {
	if len(d.Batches) == 0 {
		return "-"
	}
	if d.Batch < 0 {
		return fmt.Sprintf("-/%d", len(d.Batches))
	}
	return fmt.Sprintf("%d/%d", d.Batch+1, len(d.Batches))
}

func deployTook(d raftfsm.Deployment) string {
	end := d.EndedAt
	if end.IsZero() {
		if d.Finished() {
			return "-"
		}
		end = time.Now()
	}
	return end.Sub(d.CreatedAt).Round(100 * time.Millisecond).String()
}

func deploymentTable(w *tabwriter.Writer, d raftfsm.Deployment) {
	fmt.Fprintf(w, "deployment:\t%s\n%s:\t%s to %s (app %s)\nstate:\t%s\n", d.ID, d.Kind, dash(d.Release), d.Env, d.App, d.State)
	if d.Previous != "" {
		fmt.Fprintf(w, "previous:\t%s\n", d.Previous)
	}
	st := d.Strategy
	strategy := st.Kind
	if st.AbortAfter > 0 {
		strategy += fmt.Sprintf(", abort after %d failed", st.AbortAfter)
	}
	if st.MinHealthy > 0 {
		strategy += fmt.Sprintf(", min %d healthy", st.MinHealthy)
	}
	if st.AutoRollback {
		strategy += ", auto rollback"
	}
	fmt.Fprintf(w, "strategy:\t%s\nbatch:\t%s\nby:\t%s\n", strategy, batchText(d), dash(d.By))
	if d.ApprovedBy != "" {
		fmt.Fprintf(w, "approved by:\t%s\n", d.ApprovedBy)
	}
	fmt.Fprintf(w, "created:\t%s\ntook:\t%s\n", d.CreatedAt.Local().Format(time.RFC3339), deployTook(d))
	if d.Error != "" {
		fmt.Fprintf(w, "error:\t%s\n", d.Error)
	}
	fmt.Fprintln(w, "\nBATCH\tSERVER\tSTATE\tPHASE\tPROGRESS\tERROR")
	seen := map[string]bool{}
	row := func(batch, name string) {
		seen[name] = true
		st := d.Nodes[name]
		if st == nil {
			fmt.Fprintf(w, "%s\t%s\t-\t-\t-\t-\n", batch, name)
			return
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%.0f%%\t%s\n", batch, name, st.State, dash(st.Phase), st.Progress*100, dash(oneLine(st.Error)))
	}
	for i, b := range d.Batches {
		for _, name := range b {
			row(fmt.Sprint(i+1), name)
		}
	}
	for _, name := range sortedKeys(d.Nodes) {
		if !seen[name] {
			row("later", name) // a server that joined after the deployment and converged to its release
		}
	}
}

func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}

// progressBar draws a fraction as a 20-cell bar with its percentage, e.g. "[#########-----------]  45%".
func progressBar(f float64) string {
	f = min(max(f, 0), 1)
	n := int(f*20 + 0.5)
	return fmt.Sprintf("[%s%s] %3.0f%%", strings.Repeat("#", n), strings.Repeat("-", 20-n), f*100)
}
