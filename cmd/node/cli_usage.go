package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/raftfsm"
)

// polish gives every command of the tree the behaviour kubectl, gh and nomad users expect: an unknown command or a
// wrong number of arguments exits non-zero with the usage line and, where a name is close, "did you mean"; a
// command group given no command prints its help; flag help texts are printed as written. It runs once the tree is
// built, so no command has to remember it.
func polish(cmd *cobra.Command) {
	cmd.SuggestionsMinimumDistance = 2
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError(c, err) })
	if cmd.HasSubCommands() && !cmd.Runnable() {
		cmd.Args = func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			return unknownCommand(c, args[0])
		}
		cmd.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	} else if check := cmd.Args; check != nil {
		cmd.Args = func(c *cobra.Command, args []string) error {
			if err := check(c, args); err != nil {
				return usageError(c, err)
			}
			return nil
		}
	}
	// pflag takes the first `quoted` word of a usage text as the flag's value name and drops the quotes, which
	// turned "anything `git` fetches" into "--repo git … anything git fetches": quote with ' instead.
	fix := func(f *pflag.Flag) { f.Usage = strings.ReplaceAll(f.Usage, "`", "'") }
	cmd.Flags().VisitAll(fix)
	cmd.PersistentFlags().VisitAll(fix)
	for _, sub := range cmd.Commands() {
		polish(sub)
	}
}

// usageError adds the command's usage line and where to read more to err.
func usageError(c *cobra.Command, err error) error {
	return fmt.Errorf("%w\nusage: %s\nrun '%s --help' for more", err, c.UseLine(), c.CommandPath())
}

// unknownCommand says that name is no command of c, with the closest ones.
func unknownCommand(c *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q for %q", name, c.CommandPath())
	if s := c.SuggestionsFor(name); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %q?)", s[0])
	}
	var names []string
	for _, sub := range c.Commands() {
		if sub.IsAvailableCommand() {
			names = append(names, sub.Name())
		}
	}
	return fmt.Errorf("%s\nusage: %s COMMAND, where COMMAND is one of: %s\nrun '%s --help' for more",
		msg, c.CommandPath(), strings.Join(names, ", "), c.CommandPath())
}

// notFoundName matches the API's "app \"x\" does not exist" and "environment \"x\" does not exist".
var notFoundName = regexp.MustCompile(`^(app|environment) "([^"]+)" does not exist`)

// didYouMean adds the closest existing name to an API error that says an app or environment does not exist.
// It asks the API for the names; when that fails the error is returned as it was.
func didYouMean(ctx context.Context, cl *client.Client, err error) error {
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 404 {
		return err
	}
	m := notFoundName.FindStringSubmatch(e.Message)
	if m == nil {
		return err
	}
	var names []string
	switch m[1] {
	case "app":
		var apps []raftfsm.App
		if _, lerr := cl.Get(ctx, "/v1/apps", &apps); lerr != nil {
			return err
		}
		for _, a := range apps {
			names = append(names, a.Name)
		}
	case "environment":
		var envs []raftfsm.Env
		if _, lerr := cl.Get(ctx, "/v1/envs", &envs); lerr != nil {
			return err
		}
		for _, e := range envs {
			names = append(names, e.Name)
		}
	}
	if best := closest(m[2], names); best != "" {
		return fmt.Errorf("%w (did you mean %q?)", err, best)
	}
	return err
}

// closest returns the name nearest to typed, if it is near enough to be a typo (at most a third of its letters
// off, and at least one), or "".
func closest(typed string, names []string) string {
	best, bestD := "", max(1, len(typed)/3)+1
	for _, n := range names {
		if d := editDistance(strings.ToLower(typed), strings.ToLower(n)); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the optimal-string-alignment distance between a and b: insertions, deletions, substitutions
// and swaps of two neighbouring letters (the commonest typo) each count one.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// confirm asks the user to confirm a destructive action on target, unless yes. Without a terminal to ask on it
// refuses, so a script never destroys something by accident: scripts pass --yes.
func (c *cli) confirm(yes bool, question string) error {
	if yes {
		return nil
	}
	if !isTerminal(c.in) {
		return fmt.Errorf("%s: refusing without --yes (standard input is not a terminal to ask on)", question)
	}
	fmt.Fprintf(c.errOut, "%s [y/N] ", question)
	line, _ := bufio.NewReader(c.in).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return fmt.Errorf("not confirmed: nothing was changed")
}

// isTerminal reports whether r is a character device (a terminal a person can answer on).
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// plural says n things: "1 server", "2 servers".
func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}
