package main

import (
	"fmt"
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
