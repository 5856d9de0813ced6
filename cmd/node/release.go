package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/spread"
)

func (c *cli) releaseCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "release", Short: "Upload a release built elsewhere, or pre-fetch one onto a server"}
	var version, notes string
	push := &cobra.Command{
		Use:   "push APP FILE.tar.gz",
		Short: "Upload an archive as the app's next release (like `distelli push`)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[1])
			if err != nil {
				return err
			}
			defer f.Close()
			q := url.Values{}
			if version != "" {
				q.Set("version", version)
			}
			if notes != "" {
				q.Set("notes", notes)
			}
			path := "/v1/apps/" + url.PathEscape(args[0]) + "/releases"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			var rel raftfsm.Release
			if err := c.api().Upload(ctx(), path, f, &rel); err != nil {
				return explain(err)
			}
			return c.print(rel, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "release:\t%s %s\ndigest:\t%s\nsize:\t%d bytes in %d pieces\n", rel.App, rel.Version, rel.Digest, rel.Size, len(rel.Pieces))
			})
		},
	}
	push.Flags().StringVar(&version, "version", "", "custom version (default v<N>)")
	push.Flags().StringVar(&notes, "notes", "", "release notes")
	fetch := &cobra.Command{
		Use:   "fetch APP VERSION",
		Short: "Make the node at --addr download a release now, from every peer that has pieces of it",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl := c.api()
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			var res spread.FetchResult
			path := "/v1/apps/" + url.PathEscape(args[0]) + "/releases/" + url.PathEscape(args[1]) + "/fetch"
			if _, err := cl.Do(ctx, http.MethodPost, path, struct{}{}, &res); err != nil {
				return explain(err)
			}
			return c.print(res, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "%s holds %s %s (%d bytes) after %.2fs\n", res.Node, args[0], args[1], res.Bytes, res.Seconds)
			})
		},
	}
	cmd.AddCommand(push, fetch)
	return cmd
}
