package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-ci/shoal/node"
)

// gossipKeyCmd rotates the mesh's gossip encryption key (docs/operations.md, "Rotating secrets").
func (c *cli) gossipKeyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "gossip-key", Short: "Manage the gossip encryption key (admin)"}
	var overlap time.Duration
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Make a new random gossip key current on every member; the previous key stays accepted for --overlap",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out map[string]any
			if _, err := c.api().Post(ctx(), "/v1/mesh/gossip-key/rotate", map[string]string{"overlap": overlap.String()}, &out); err != nil {
				return explain(err)
			}
			return c.print(out, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "gossip key rotated; the previous key is accepted until %v\n", out["previous_key_accepted_until"])
			})
		},
	}
	rotate.Flags().DurationVar(&overlap, "overlap", node.DefaultKeyOverlap, "how long members still accept the previous key")
	cmd.AddCommand(rotate)
	return cmd
}

// caCmd rotates the mesh CA in two steps (docs/operations.md, "Rotating secrets").
func (c *cli) caCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "Show or rotate the mesh CA (admin)"}
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Show the mesh CA and any rotation under way: which members hold a certificate from the next CA",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st node.CAStatus
			if _, err := c.api().Get(ctx(), "/v1/mesh/ca", &st); err != nil {
				return explain(err)
			}
			return c.print(st, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "ca:\t%s\n", st.CAHash)
				if st.NextCAHash != "" {
					fmt.Fprintf(w, "rotating to:\t%s\n", st.NextCAHash)
					fmt.Fprintf(w, "members with a new certificate:\t%s\n", dash(strings.Join(st.Issued, ", ")))
					fmt.Fprintf(w, "members still without:\t%s\n", dash(strings.Join(st.Missing, ", ")))
				}
				if st.OldCAHash != "" {
					fmt.Fprintf(w, "replaced CA trusted until:\t%s (%s)\n", st.OldCAUntil.Format(time.RFC3339), st.OldCAHash)
				}
			})
		},
	})
	var (
		finish, force bool
		grace         time.Duration
	)
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Start a CA rotation (every member trusts the new CA and gets a certificate from it); --finish switches to it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := map[string]any{"finish": finish, "force": force, "grace": grace.String()}
			var out map[string]any
			if _, err := c.api().Post(ctx(), "/v1/mesh/ca/rotate", body, &out); err != nil {
				return explain(err)
			}
			return c.print(out, func(w *tabwriter.Writer) {
				if !finish {
					fmt.Fprintf(w, "CA rotation started (next CA %v): when `node ca status` lists no member without a new certificate, run `node ca rotate --finish`\n", out["next_ca_hash"])
					return
				}
				fmt.Fprintf(w, "CA rotation finished: the mesh CA is %v; the old one is trusted until %v. Print join tokens again (`node token join list`): older ones pin the old CA\n",
					out["ca_hash"], out["old_ca_trusted_until"])
			})
		},
	}
	rotate.Flags().BoolVar(&finish, "finish", false, "switch every member to the new CA (refused while a member has no certificate from it)")
	rotate.Flags().BoolVar(&force, "force", false, "with --finish: finish although some members have no certificate from the new CA (they must join again)")
	rotate.Flags().DurationVar(&grace, "grace", node.DefaultCAGrace, "with --finish: how long the old CA stays trusted")
	cmd.AddCommand(rotate)
	return cmd
}
