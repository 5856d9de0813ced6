package main

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/spf13/cobra"
)

// pageFlags are the --limit and --cursor of a list command: the API's ?limit and ?cursor (docs/api.md, "Paging").
type pageFlags struct {
	limit  int
	cursor string
}

func (p *pageFlags) register(cmd *cobra.Command, def int, what string) {
	help := fmt.Sprintf("at most this many %s (0: all)", what)
	if def > 0 {
		help = fmt.Sprintf("at most this many %s, newest first (0: all)", what)
	}
	cmd.Flags().IntVar(&p.limit, "limit", def, help)
	cmd.Flags().StringVar(&p.cursor, "cursor", "", "start after this cursor (the one a previous page printed)")
}

// getPage reads one page of path into out and, when more follow, says on stderr how to get the next one (stdout
// stays the list, so --json output is still one JSON array).
func (c *cli) getPage(path string, p pageFlags, out any) error {
	q := url.Values{"limit": {fmt.Sprint(p.limit)}}
	if p.cursor != "" {
		q.Set("cursor", p.cursor)
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	path += sep + q.Encode()
	next, err := c.api().GetPage(ctx(), path, out)
	if err != nil {
		return explain(err)
	}
	if next != "" {
		fmt.Fprintf(c.errOut, "more: rerun with --cursor %s for the next %d\n", next, p.limit)
	}
	return nil
}
