package main

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestUnknownCommandsFailWithSuggestion(t *testing.T) {
	isolate(t)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"app", "creat", "x"}, []string{`unknown command "creat" for "node app"`, `did you mean "create"?`, "usage: node app COMMAND"}},
		{[]string{"bogus"}, []string{`unknown command "bogus" for "node"`, "usage: node COMMAND"}},
		{[]string{"deploy", "hello"}, []string{"accepts 2 arg(s), received 1", "usage: node deploy APP VERSION"}},
		{[]string{"deploy", "--bogus"}, []string{"unknown flag: --bogus", "usage: node deploy"}},
		{[]string{"env", "delete"}, []string{"usage: node env delete NAME"}},
	} {
		_, err := runCLI(t, tc.args...)
		if err == nil {
			t.Errorf("node %v: no error, want one (and a non-zero exit)", tc.args)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("node %v: error %q lacks %q", tc.args, err, w)
			}
		}
	}
	// A command group with nothing after it prints its help and succeeds, as kubectl's do.
	if out, err := runCLI(t, "app"); err != nil || !strings.Contains(out, "Available Commands") {
		t.Errorf("node app: %v, %q; want its help", err, out)
	}
}

// Destructive commands refuse without --yes when there is no terminal to ask on, before they call the API.
func TestDestructiveCommandsAsk(t *testing.T) {
	isolate(t)
	for _, args := range [][]string{{"app", "delete", "web"}, {"env", "delete", "prod"}, {"terminate", "prod"}} {
		_, err := runCLI(t, append(args, "--addr", "127.0.0.1:1")...)
		if err == nil || !strings.Contains(err.Error(), "refusing without --yes") {
			t.Errorf("node %v: %v, want a refusal without --yes", args, err)
		}
	}
}

// No flag's help text keeps a backquote: pflag would take the quoted word as the value's name and drop it.
func TestFlagHelpKeepsItsWords(t *testing.T) {
	isolate(t)
	c := &cli{}
	root := c.root()
	var walk func(cmdPath string, fs *pflag.FlagSet)
	walk = func(cmdPath string, fs *pflag.FlagSet) {
		fs.VisitAll(func(f *pflag.Flag) {
			if strings.Contains(f.Usage, "`") {
				t.Errorf("%s --%s: help %q has a backquote", cmdPath, f.Name, f.Usage)
			}
		})
	}
	for _, cmd := range append(root.Commands(), root) {
		walk(cmd.CommandPath(), cmd.Flags())
		for _, sub := range cmd.Commands() {
			walk(sub.CommandPath(), sub.Flags())
		}
	}
}

func TestClosestName(t *testing.T) {
	names := []string{"web", "worker", "production", "staging"}
	for typed, want := range map[string]string{"wbe": "web", "prodution": "production", "stagin": "staging", "zzz": "", "x": ""} {
		if got := closest(typed, names); got != want {
			t.Errorf("closest(%q) = %q, want %q", typed, got, want)
		}
	}
}

func TestParseBatch(t *testing.T) {
	for in, want := range map[string][2]int{"3": {3, 0}, "25%": {0, 25}, "100%": {0, 100}, " 2 ": {2, 0}} {
		size, pct, err := parseBatch(in)
		if err != nil || size != want[0] || pct != want[1] {
			t.Errorf("parseBatch(%q) = %d, %d, %v; want %v", in, size, pct, err, want)
		}
	}
	for _, in := range []string{"0", "-1", "0%", "101%", "25 %", "x", "3.5", "25%%"} {
		if _, _, err := parseBatch(in); err == nil || !strings.Contains(err.Error(), "25%") {
			t.Errorf("parseBatch(%q): %v, want an error with an example", in, err)
		}
	}
}
