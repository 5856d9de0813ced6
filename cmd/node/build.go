package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-ci/shoal/builder"
	"github.com/shoal-ci/shoal/raftfsm"
)

// builderOptions are the builder's settings from the environment.
func builderOptions() (builder.Options, error) {
	var opts builder.Options
	// SHOAL_BUILD_LEASE tunes how long a silent build server keeps its builds (docs/builds.md).
	if v := os.Getenv("SHOAL_BUILD_LEASE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 300*time.Millisecond {
			return opts, fmt.Errorf("SHOAL_BUILD_LEASE=%q is not a duration of at least 300ms (for example 10s)", v)
		}
		opts.LeaseTTL = d
	}
	return opts, nil
}

func (c *cli) buildCmd() *cobra.Command {
	var (
		ref  string
		wait bool
	)
	cmd := &cobra.Command{
		Use:   "build APP",
		Short: "Build an app now (its branch, or --ref); --wait follows the log and fails if the build fails",
		Long: `Queue a build of APP. --ref names a branch, a tag or a full commit sha (default: the app's branch); a
branch or tag is resolved to its commit at once. The leader runs the build; 'node log BUILD --follow' shows it.
With --wait the log is followed here and the command exits non-zero unless the build succeeds.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var b raftfsm.Build
			if _, err := c.api().Post(ctx(), "/v1/apps/"+url.PathEscape(args[0])+"/builds", builder.BuildRequest{Ref: ref}, &b); err != nil {
				return explain(err)
			}
			if !wait {
				return c.print(b, func(w *tabwriter.Writer) { buildTable(w, b) })
			}
			fmt.Fprintf(c.errOut, "build %s queued: %s at %s\n", b.ID, dash(b.Ref), short(b.Commit))
			return c.waitBuild(b.ID)
		},
	}
	cmd.Flags().StringVar(&ref, "ref", "", "branch, tag or commit to build (default: the app's branch)")
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the build's log and exit non-zero unless it succeeds")
	cancel := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a queued build, or stop a running one (its processes are killed)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var b raftfsm.Build
			if _, err := c.api().Post(ctx(), "/v1/builds/"+url.PathEscape(args[0])+"/cancel", struct{}{}, &b); err != nil {
				return explain(err)
			}
			return c.print(b, func(w *tabwriter.Writer) {
				if b.State == raftfsm.BuildRunning {
					fmt.Fprintf(w, "build %s: stop requested; %s is stopping it\n", b.ID, b.Node)
				} else {
					fmt.Fprintf(w, "build %s: %s\n", b.ID, b.State)
				}
			})
		},
	}
	cmd.AddCommand(cancel)
	return cmd
}

// waitBuild follows a build's log to the terminal until the build ends, and fails unless it succeeded.
func (c *cli) waitBuild(id string) error {
	logOut := c.out
	if c.json {
		logOut = c.errOut
	}
	// While the build is queued its log is empty: say why it waits, if it does (no build server, all busy).
	go c.sayWaiting(id)
	if err := c.streamLog(id, 0, true, logOut); err != nil {
		fmt.Fprintf(c.errOut, "log stream broke (%v); waiting for the build to end\n", err)
	}
	// The stream ends when the build does; read the record that says how (blocking until it has ended).
	var b raftfsm.Build
	var index uint64
	for {
		path := "/v1/builds/" + url.PathEscape(id)
		if index > 0 {
			path += fmt.Sprintf("?index=%d&wait=30s", index)
		}
		idx, err := c.api().Get(ctx(), path, &b)
		if err != nil {
			return explain(err)
		}
		if b.Finished() {
			break
		}
		index = idx
	}
	if c.json {
		if err := c.print(b, nil); err != nil {
			return err
		}
	}
	if b.State != raftfsm.BuildSucceeded {
		return fmt.Errorf("build %s %s: %s", b.ID, b.State, dash(b.Error))
	}
	if !c.json {
		fmt.Fprintf(c.errOut, "build %s succeeded: release %s\n", b.ID, b.Release)
	}
	return nil
}

// sayWaiting prints each reason the queued build id gives for waiting, until it leaves the queue. It runs beside
// the log stream and ends with the command.
func (c *cli) sayWaiting(id string) {
	var (
		index uint64
		last  string
	)
	for {
		// The first read catches up with the leader: the build was queued through it a moment ago.
		path := "/v1/builds/" + url.PathEscape(id) + "?consistent"
		if index > 0 {
			path = "/v1/builds/" + url.PathEscape(id) + fmt.Sprintf("?index=%d&wait=30s", index)
		}
		var b builder.BuildView
		idx, err := c.api().Get(ctx(), path, &b)
		if err != nil || b.State != raftfsm.BuildQueued {
			return
		}
		if b.Waiting != "" && b.Waiting != last {
			fmt.Fprintf(c.errOut, "build %s waits: %s\n", id, b.Waiting)
		}
		last, index = b.Waiting, idx
	}
}

// streamLog copies GET /v1/builds/{id}/log to w; with follow it lasts until the build ends.
func (c *cli) streamLog(id string, offset int64, follow bool, w io.Writer) error {
	q := url.Values{}
	if offset > 0 {
		q.Set("offset", fmt.Sprint(offset))
	}
	if follow {
		q.Set("follow", "1")
	}
	return c.streamText(context.Background(), "/v1/builds/"+url.PathEscape(id)+"/log", q, w)
}

func (c *cli) buildsCmd() *cobra.Command {
	var (
		state string
		page  pageFlags
	)
	cmd := &cobra.Command{
		Use:   "builds APP",
		Short: "List an app's builds, newest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/v1/apps/" + url.PathEscape(args[0]) + "/builds"
			if state != "" {
				path += "?state=" + url.QueryEscape(state)
			}
			var bs []builder.BuildView
			if err := c.getPage(path, page, &bs); err != nil {
				return err
			}
			return c.print(bs, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "ID\tSTATE\tTRIGGER\tBRANCH\tCOMMIT\tRELEASE\tNODE\tQUEUED\tTOOK")
				for _, b := range bs {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.ID, buildState(b.Build), b.Trigger, dash(b.Branch),
						short(b.Commit), dash(b.Release), dash(b.Node), ago(b.QueuedAt), took(b.Build))
				}
				w.Flush()
				for _, b := range bs {
					if b.Waiting != "" {
						fmt.Fprintf(w, "%s waits: %s\n", b.ID, b.Waiting)
					}
				}
			})
		},
	}
	cmd.Flags().StringVar(&state, "state", "", "only builds in this state: queued, running, succeeded, failed, cancelled")
	page.register(cmd, 20, "builds")
	return cmd
}

func (c *cli) logCmd() *cobra.Command {
	var (
		follow bool
		offset int64
	)
	cmd := &cobra.Command{
		Use:   "log BUILD",
		Short: "Print a build's log (from any node); --follow streams it until the build ends",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.streamLog(args[0], offset, follow, c.out)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "stream the log until the build ends")
	cmd.Flags().Int64Var(&offset, "offset", 0, "start at this byte of the log")
	return cmd
}

func (c *cli) releasesCmd() *cobra.Command {
	var page pageFlags
	cmd := &cobra.Command{
		Use:   "releases APP [VERSION]",
		Short: "List an app's releases, newest first, or show one",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/v1/apps/" + url.PathEscape(args[0]) + "/releases"
			if len(args) == 2 {
				var r raftfsm.Release
				if _, err := c.api().Get(ctx(), path+"/"+url.PathEscape(args[1]), &r); err != nil {
					return explain(err)
				}
				return c.print(r, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "release:\t%s %s\nbuild:\t%s\ncommit:\t%s\nbranch:\t%s\ncreated:\t%s\n", r.App, r.Version,
						dash(r.Build), dash(r.Commit), dash(r.Branch), r.CreatedAt.Format(time.RFC3339))
					fmt.Fprintf(w, "archive:\tsha256 %s, %s in %d pieces of %s\nheld by:\t%s\n", r.Digest, bytesText(r.Size),
						len(r.Pieces), bytesText(r.PieceSize), dash(strings.Join(r.Holders, ", ")))
					if r.PullRequest > 0 {
						fmt.Fprintf(w, "pull request:\t#%d (never auto deployed; by hand only where allowed)\n", r.PullRequest)
					}
					if r.Notes != "" {
						fmt.Fprintf(w, "notes:\t%s\n", strings.ReplaceAll(r.Notes, "\n", "\n\t"))
					}
				})
			}
			var rs []raftfsm.Release
			if err := c.getPage(path, page, &rs); err != nil {
				return err
			}
			return c.print(rs, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "VERSION\tBUILD\tBRANCH\tCOMMIT\tSIZE\tHOLDERS\tCREATED")
				for _, r := range rs {
					branch := dash(r.Branch)
					if r.PullRequest > 0 {
						branch = fmt.Sprintf("%s (PR #%d)", branch, r.PullRequest)
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Version, dash(r.Build), branch, short(r.Commit),
						bytesText(r.Size), dash(strings.Join(r.Holders, ",")), ago(r.CreatedAt))
				}
			})
		},
	}
	page.register(cmd, 0, "releases")
	return cmd
}

func buildTable(w *tabwriter.Writer, b raftfsm.Build) {
	fmt.Fprintf(w, "build:\t%s\nstate:\t%s\napp:\t%s\ntrigger:\t%s\nref:\t%s\nbranch:\t%s\ncommit:\t%s\n", b.ID,
		buildState(b), b.App, b.Trigger, dash(b.Ref), dash(b.Branch), dash(b.Commit))
	if b.Release != "" {
		fmt.Fprintf(w, "release:\t%s\n", b.Release)
	}
	if b.Error != "" {
		fmt.Fprintf(w, "error:\t%s\n", b.Error)
	}
}

func buildState(b raftfsm.Build) string {
	if b.State == raftfsm.BuildRunning && b.CancelRequested {
		return "cancelling"
	}
	return b.State
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return dash(sha)
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func took(b raftfsm.Build) string {
	if b.StartedAt.IsZero() {
		return "-"
	}
	end := b.EndedAt
	if end.IsZero() {
		end = time.Now()
	}
	return end.Sub(b.StartedAt).Round(100 * time.Millisecond).String()
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
