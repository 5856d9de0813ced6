package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// streamText copies a text answer of the API (a log, perhaps followed) to w as it arrives.
func (c *cli) streamText(ctx context.Context, path string, q url.Values, w io.Writer) error {
	cl := c.api()
	base := cl.Addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u := strings.TrimRight(base, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if cl.Token != "" {
		req.Header.Set("Authorization", "Bearer "+cl.Token)
	}
	resp, err := cl.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the Shoal API at %s: %w", cl.Addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e struct {
			Message string `json:"error"`
		}
		if jsonErr := json.Unmarshal(data, &e); jsonErr == nil && e.Message != "" {
			return errors.New(e.Message)
		}
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	_, err = io.Copy(w, resp.Body)
	if ctx.Err() != nil {
		return nil // interrupted while following: that is how a follow ends
	}
	return err
}

// logsCmd shows an environment's app output: what its Exec processes write to stdout and stderr.
func (c *cli) logsCmd() *cobra.Command {
	var (
		server string
		follow bool
		tail   int
	)
	cmd := &cobra.Command{
		Use:   "logs ENV",
		Short: "Show the app's own output (Exec stdout and stderr) on an environment's servers",
		Long: `Show what the app's supervised processes (the manifest's Exec) write to stdout and stderr, read from
each server's exec.log through any node. Without --server every server of the environment that is up is shown,
each line prefixed with [server]. --follow keeps printing what the app writes next, until interrupted.`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			q := url.Values{}
			if server != "" {
				q.Set("server", server)
			}
			q.Set("tail", fmt.Sprint(tail))
			if follow {
				q.Set("follow", "1")
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return c.streamText(ctx, "/v1/envs/"+url.PathEscape(args[0])+"/logs", q, c.out)
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "only this server")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output until interrupted")
	cmd.Flags().IntVar(&tail, "tail", 100, "lines to show from the end of each server's log (0: up to 1 MiB)")
	return cmd
}
